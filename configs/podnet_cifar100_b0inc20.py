"""PODNet on CIFAR-100 B0 Inc20 (init_cls=20, increment=20) in PyCIL's protocol; see
configs/podnet_cifar100_b0inc10.py.  Needs CIFAR-100 prepared; a GPU run."""
from clj.configs.podnet_cifar100_b0inc10 import podnet_config


def get_config():
    return podnet_config("cifar100", 20, 20)
