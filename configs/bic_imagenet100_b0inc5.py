"""bic on ImageNet-100 B0INC5 (init_cls=5, increment=5), PyCIL's BiC protocol with
ResNet-18 (MEMO's ImageNet-100 rows); ':fixed' for 2000 exemplars; see configs/lucir_bic_common.py."""
from clj.configs.lucir_bic_common import imagenet_config


def get_config(budget: str = "fair"):
    return imagenet_config("bic", 5, 5, budget or "fair")
