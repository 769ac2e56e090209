"""AKR, its Mixup row and its Base row on the cluttered-MNIST benchmark, class-IL
B0 Inc2 (5 phases), issue 15 item 3; 5 seeds vmapped in one program.

    python launch.py --config=configs/akr_clutter.py --workdir=/tmp/akr_cl            # AKR, memory 200
    python launch.py --config=configs/akr_clutter.py:mixup --workdir=/tmp/akr_cl_mix  # Mixup row
    python launch.py --config=configs/akr_clutter.py:none --workdir=/tmp/akr_cl_base  # Base row
    python launch.py --config=configs/akr_clutter.py:attentive,200,8                  # 8 epochs per phase

The variant is the one of ``configs/akr_fmnist_b0inc2.py``,
``replay[,memory[,epochs]]`` (``attentive`` | ``mixup`` | ``none``; 200 or
2000 exemplars; epochs per phase, default 30); every setting of that config
(ResNet-8, SGD lr 0.1 with steps at 70 % and 90 % of the epochs, batch 32,
crop augmentation, clj's iCaRL loss, CNN prediction, AKR's score layer on the
frozen old features with z-scored drift importance) is kept, and only the data
change: ``clutter_mnist`` (:mod:`clj.data.clutter`: MNIST digits at random
positions and scales on a 48x48 canvas with Fashion-MNIST crops and Gaussian
noise; the same 10,000 / 2,000 composites, seed 0, as the SER clutter configs).
Memory 200 trains on 30 % of each task's composites (300 per class, as the
Fashion-MNIST config); memory 2000 on all of them (1,000 per class).  Every
test composite is evaluated.  A 48x48 canvas makes a step about 3x the cost of
a 28x28 one.
"""
import ml_collections

from clj.configs.akr_fmnist_b0inc2 import get_config as fmnist_config
from clj.configs.akr_fmnist_b0inc2 import parse_variant

TRAIN_FRACTION = {200: 0.3, 2000: 1.0}  # memory -> fraction of the 10,000 training composites


def get_config(variant: str | None = None):
    _, memory, _ = parse_variant(variant)
    c = fmnist_config(variant)
    c.dataset = "clutter_mnist"
    c.clutter = ml_collections.ConfigDict(dict(canvas=48, num_train=10000, num_test=2000, spurious_patch=0))
    c.scenario.train_fraction = TRAIN_FRACTION[memory]
    return c
