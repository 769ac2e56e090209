"""MIR on Split CIFAR-100 as SERENA's figure runs its baselines (20 concepts of 5
classes in the seed's class order, batch 10, one pass; the stream of
``configs/serena_cifar100.py``) with the official ER-MIR CIFAR settings:
reduced ResNet-18 (width 20), plain SGD lr 0.1, 50 candidates, 10 replayed;
buffer 5000 (CoPE's CIFAR-100 memory, 50 per class). Meant for an accelerator.

    python launch.py --config=configs/mir_cifar100.py
"""
from clj.configs.online_common import online_config


def get_config():
    return online_config("mir", "cifar100", lr=0.1, buffer_size=5000, mir_subsample=50,
                         model=dict(name="resnet18_reduced", width=20),
                         augment=dict(crop_pad=0, flip=False))
