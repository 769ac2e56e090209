"""MIR on Split CIFAR-10 as SERENA's figure runs its baselines (5 concepts of 2
classes in the seed's class order, batch 10, one pass; the stream of
``configs/serena_cifar10.py``, TFDS ``cifar10`` prepared on disk) with the
official ER-MIR CIFAR-10 settings: reduced ResNet-18 (width 20), plain SGD lr
0.1, 50 candidates, 10 replayed, no stored-logit scores; buffer 1000 (CoPE's
CIFAR-10 memory, 100 per class). No augmentation (neither official code has
any). Meant for an accelerator.

    python launch.py --config=configs/mir_cifar10.py
"""
from clj.configs.online_common import online_config


def get_config():
    return online_config("mir", "cifar10", lr=0.1, buffer_size=1000, mir_subsample=50,
                         model=dict(name="resnet18_reduced", width=20),
                         augment=dict(crop_pad=0, flip=False))
