"""PODNet on CIFAR-100 B0 Inc5 (init_cls=5, increment=5) in PyCIL's protocol; see
configs/podnet_cifar100_b0inc10.py.  Needs CIFAR-100 prepared; a GPU run."""
from clj.configs.podnet_cifar100_b0inc10 import podnet_config


def get_config():
    return podnet_config("cifar100", 5, 5)
