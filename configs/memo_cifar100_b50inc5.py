"""memo on CIFAR-100 B50INC5 (init_cls=50, increment=5), memory-aligned budget,
train_base=False; see configs/cil_cifar100_common.py."""
from clj.configs.cil_cifar100_common import cifar_config


def get_config():
    return cifar_config("memo", 50, 5, False)
