"""GEM on CIFAR-100 B50 Inc10 (init_cls=50, increment=10) in PyCIL's protocol; see
configs/gem_cifar100_b0inc10.py."""
from clj.configs.gem_cifar100_b0inc10 import cifar_gem_config


def get_config():
    return cifar_gem_config(50, 10)
