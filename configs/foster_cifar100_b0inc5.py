"""foster on CIFAR-100 B0 Inc5 at the memory-aligned budget; the settings
of configs/foster_cifar100_b0inc10.py."""
from clj.configs.foster_cifar100_b0inc10 import foster_cifar


def get_config():
    return foster_cifar(5, 5)
