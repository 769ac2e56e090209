"""CoPE on Split CIFAR-10 as SERENA's figure runs its baselines (5 concepts of 2
classes in the seed's class order, batch 10, one pass; the stream of
``configs/serena_cifar10.py``, TFDS ``cifar10`` prepared on disk) with the
official CIFAR-10 settings (``main_CIFAR10.sh``): reduced ResNet-18 (width 20)
with a 256-dim embedding, PPP temperature 0.1, prototype momentum 0.99, class-
balanced buffer 1000 (100 per class), 10 replayed per step, plain SGD lr
0.005, one update per batch. No augmentation (neither official code has any).
Meant for an accelerator.

    python launch.py --config=configs/cope_cifar10.py
"""
from clj.configs.online_common import online_config


def get_config():
    return online_config("cope", "cifar10", lr=0.005, buffer_size=1000, cope_dim=256, cope_temperature=0.1,
                         cope_momentum=0.99, cope_iters=1, model=dict(name="resnet18_reduced", width=20),
                         augment=dict(crop_pad=0, flip=False))
