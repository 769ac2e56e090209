"""GEM on CIFAR-100 B0 Inc20 (init_cls=20, increment=20) in PyCIL's protocol; see
configs/gem_cifar100_b0inc10.py."""
from clj.configs.gem_cifar100_b0inc10 import cifar_gem_config


def get_config():
    return cifar_gem_config(20, 20)
