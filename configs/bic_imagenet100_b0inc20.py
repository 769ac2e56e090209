"""bic on ImageNet-100 B0INC20 (init_cls=20, increment=20), PyCIL's BiC protocol with
ResNet-18 (MEMO's ImageNet-100 rows); ':fixed' for 2000 exemplars; see configs/lucir_bic_common.py."""
from clj.configs.lucir_bic_common import imagenet_config


def get_config(budget: str = "fair"):
    return imagenet_config("bic", 20, 20, budget or "fair")
