"""AKR on ImageNet-subset, every row of the paper's second table:
``--config=configs/akr_imagenet100.py:<replay>,<init_cls>,<increment>`` with
replay ``attentive`` (AKR), ``mixup`` or ``none`` (Base); TFS N=5/10/20 are
``0,20`` / ``0,10`` / ``0,5`` and TFH N=5/10/25 are ``50,10`` / ``50,5`` /
``50,2``.  Settings: :func:`clj.configs.akr_common.imagenet_config`.

    python launch.py --config=configs/akr_imagenet100.py:attentive,0,10 --config.data_dir=<prepared>
"""
from clj.configs.akr_common import imagenet_config


def get_config(spec: str = "attentive,0,10"):
    parts = [p.strip() for p in str(spec).split(",")]
    if len(parts) != 3:
        raise ValueError(f"akr_imagenet100 variant {spec!r} is invalid: give <replay>,<init_cls>,<increment>.")
    init, inc = int(parts[1]), int(parts[2])
    return imagenet_config(parts[0], init or inc, inc)
