"""AKR on CIFAR-100 TFH N=25 (init_cls=50, increment=2), the paper's protocol;
see configs/akr_common.py.  :mixup gives the Mixup row, :none the Base row.

    python launch.py --config=configs/akr_cifar100_b50inc2.py[:mixup|:none] --workdir=runs/akr_b50inc2
"""
from clj.configs.akr_common import cifar_config


def get_config(replay: str = "attentive"):
    return cifar_config(replay or "attentive", 50, 2)
