"""coil on CIFAR-100 B0 Inc5 at the memory-aligned budget (the CIL survey's
aligned table); the settings of configs/coil_cifar100_b0inc10.py."""
from clj.configs.coil_cifar100_b0inc10 import coil_cifar


def get_config():
    return coil_cifar(5, 5)
