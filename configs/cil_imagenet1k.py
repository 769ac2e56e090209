"""Any class-IL method of the MEMO / PyCIL tables on ImageNet-1k, one config:
``--config=configs/cil_imagenet1k.py:<method>,<init_cls>,<increment>[,<budget>]``
(``budget`` ``fixed``, the survey's benchmark, or ``fair``, MEMO's
memory-aligned budget).  The protocol: :func:`clj.configs.cil_cifar100_common.imagenet_config`.

    python launch.py --config=configs/cil_imagenet1k.py:memo,100,100,fixed --config.data_dir=<prepared>
"""
from clj.configs.cil_cifar100_common import imagenet_variant


def get_config(spec: str = "icarl,100,100,fixed"):
    return imagenet_variant("imagenet1k", spec)
