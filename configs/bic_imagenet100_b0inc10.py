"""bic on ImageNet-100 B0INC10 (init_cls=10, increment=10), PyCIL's BiC protocol with
ResNet-18 (MEMO's ImageNet-100 rows); ':fixed' for 2000 exemplars; see configs/lucir_bic_common.py."""
from clj.configs.lucir_bic_common import imagenet_config


def get_config(budget: str = "fair"):
    return imagenet_config("bic", 10, 10, budget or "fair")
