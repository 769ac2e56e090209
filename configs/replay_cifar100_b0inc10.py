"""replay on CIFAR-100 B0INC10 (init_cls=10, increment=10), memory-aligned budget,
train_base=True; see configs/cil_cifar100_common.py."""
from clj.configs.cil_cifar100_common import cifar_config


def get_config():
    return cifar_config("replay", 10, 10, True)
