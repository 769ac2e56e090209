"""CoPE on Split CIFAR-100 as SERENA's figure runs its baselines (20 concepts of
5 classes in the seed's class order, batch 10, one pass; the stream of
``configs/serena_cifar100.py``) with the official CIFAR-100 settings
(``main_CIFAR100.sh``): reduced ResNet-18 (width 20) with a 256-dim embedding,
PPP temperature 0.05, prototype momentum 0.9, class-balanced buffer 5000 (50
per class), 10 replayed per step, plain SGD lr 0.005, 5 updates per incoming
batch. No augmentation (neither official code has any). Meant for an
accelerator.

    python launch.py --config=configs/cope_cifar100.py
"""
from clj.configs.online_common import online_config


def get_config():
    return online_config("cope", "cifar100", lr=0.005, buffer_size=5000, cope_dim=256, cope_temperature=0.05,
                         cope_momentum=0.9, cope_iters=5, model=dict(name="resnet18_reduced", width=20),
                         augment=dict(crop_pad=0, flip=False))
