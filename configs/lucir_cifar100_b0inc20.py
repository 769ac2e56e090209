"""lucir on CIFAR-100 B0INC20 (init_cls=20, increment=20): the original LUCIR CIFAR
settings (MEMO's AANets (LUCIR) rows, AKR's LUCIR rows); see configs/lucir_bic_common.py."""
from clj.configs.lucir_bic_common import cifar_config


def get_config():
    return cifar_config("lucir", 20, 20)
