"""GEM on Split CIFAR-100, task-IL, 20 tasks of 5 classes (NISPA's baseline
table): configs/gem_cifar10.py on CIFAR-100 (buffer 1000, as for CIFAR-10:
the authors' CIFAR-100 buffer is not known).  Needs the TFDS cifar100 files; a
GPU run.
"""
from clj.configs.gem_cifar10 import SEEDS, get_config as _c10  # noqa: F401


def get_config():
    c = _c10()
    c.dataset = "cifar100"
    c.scenario.increment = 5
    return c
