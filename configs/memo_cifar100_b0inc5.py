"""memo on CIFAR-100 B0INC5 (init_cls=5, increment=5), memory-aligned budget,
train_base=True; see configs/cil_cifar100_common.py."""
from clj.configs.cil_cifar100_common import cifar_config


def get_config():
    return cifar_config("memo", 5, 5, True)
