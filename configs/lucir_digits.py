"""lucir on Split-digits (class-IL B0 Inc2, 5 tasks), MLP 100-100, 200 exemplars;
see configs/lucir_bic_common.py."""
from clj.configs.lucir_bic_common import digits_config


def get_config():
    return digits_config("lucir")
