"""dynamic_er on Fashion-MNIST B0 Inc2: the settings of configs/memo_fmnist_b0inc2.py
(same byte budget: cil.budget="fair") with method=dynamic_er."""
from clj.configs.memo_fmnist_b0inc2 import get_config as _base


def get_config():
    return _base("dynamic_er")
