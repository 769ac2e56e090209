"""PODNet on ImageNet-100 B50 Inc10 (init_cls=50, increment=10) in PyCIL's protocol; see
configs/podnet_cifar100_b0inc10.py.  Needs ImageNet-100 prepared (python -m clj.data.prepare imagenet100); a GPU run."""
from clj.configs.podnet_cifar100_b0inc10 import podnet_config


def get_config():
    return podnet_config("imagenet100", 50, 10)
