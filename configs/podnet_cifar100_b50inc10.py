"""PODNet on CIFAR-100 B50 Inc10 (init_cls=50, increment=10) in PyCIL's protocol; see
configs/podnet_cifar100_b0inc10.py.  Needs CIFAR-100 prepared; a GPU run."""
from clj.configs.podnet_cifar100_b0inc10 import podnet_config


def get_config():
    return podnet_config("cifar100", 50, 10)
