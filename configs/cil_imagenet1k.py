"""Any class-IL method of the MEMO / PyCIL tables on ImageNet-1k, one config:
``--config=configs/cil_imagenet1k.py:<method>,<init_cls>,<increment>[,<budget>]``
(``budget`` ``fixed``, the survey's benchmark, or ``fair``, MEMO's
memory-aligned budget).  The protocol: :func:`clj.configs.cil_cifar100_common.imagenet_config`.

    python launch.py --config=configs/cil_imagenet1k.py:memo,100,100,fixed --config.data_dir=<prepared>
"""
from clj.configs.cil_cifar100_common import UPDATE_EPOCHS, imagenet_config


def get_config(spec: str = "icarl,100,100,fixed"):
    parts = [p.strip() for p in str(spec).split(",")]
    if len(parts) not in (3, 4) or parts[0] not in UPDATE_EPOCHS:
        raise ValueError(f"cil_imagenet1k variant {spec!r} is invalid: give <method>,<init_cls>,<increment>[,fixed|fair] "
                         f"with a method of {', '.join(sorted(UPDATE_EPOCHS))}.")
    return imagenet_config(parts[0], "imagenet1k", int(parts[1]), int(parts[2]), parts[3] if len(parts) == 4 else "fixed")
