"""AKR on CIFAR-100 TFH N=10 (init_cls=50, increment=5), the paper's protocol;
see configs/akr_common.py.  :mixup gives the Mixup row, :none the Base row.

    python launch.py --config=configs/akr_cifar100_b50inc5.py[:mixup|:none] --workdir=runs/akr_b50inc5
"""
from clj.configs.akr_common import cifar_config


def get_config(replay: str = "attentive"):
    return cifar_config(replay or "attentive", 50, 5)
