"""wa on Split-digits (class-IL B0 Inc2, 5 tasks): the settings of
configs/icarl_digits.py (ResNet-8, fair byte budget) with method=wa."""
from clj.configs.icarl_digits import get_config as _base


def get_config():
    return _base("wa")
