"""lucir on CIFAR-100 B50INC2 (init_cls=50, increment=2): the original LUCIR CIFAR
settings (MEMO's AANets (LUCIR) rows, AKR's LUCIR rows); see configs/lucir_bic_common.py."""
from clj.configs.lucir_bic_common import cifar_config


def get_config():
    return cifar_config("lucir", 50, 2)
