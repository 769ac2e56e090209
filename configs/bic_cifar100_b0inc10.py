"""bic on CIFAR-100 B0INC10 (init_cls=10, increment=10), PyCIL's BiC protocol;
memory-aligned budget (MEMO's Table 7), or ':fixed' for 2000 exemplars (the
benchmark tables, AKR's rows); see configs/lucir_bic_common.py."""
from clj.configs.lucir_bic_common import cifar_config


def get_config(budget: str = "fair"):
    return cifar_config("bic", 10, 10, budget or "fair")
