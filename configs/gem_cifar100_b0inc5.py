"""GEM on CIFAR-100 B0 Inc5 (init_cls=5, increment=5) in PyCIL's protocol; see
configs/gem_cifar100_b0inc10.py."""
from clj.configs.gem_cifar100_b0inc10 import cifar_gem_config


def get_config():
    return cifar_gem_config(5, 5)
