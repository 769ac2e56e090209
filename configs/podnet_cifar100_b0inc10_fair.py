"""PODNet on CIFAR-100 B0 Inc10 with the memory-aligned budget (MEMO's aligned
table, ``cil.budget="fair"``: DER's T ResNet-32s + 2000 images); see
configs/podnet_cifar100_b0inc10.py."""
from clj.configs.podnet_cifar100_b0inc10 import podnet_config


def get_config():
    return podnet_config("cifar100", 10, 10, budget="fair")
