"""NISPA on Split CIFAR-100, task-IL, 20 tasks of 5 classes (the paper's
setting, docs/nispa.md, "Settings of the paper's runs"): sparse ConvNet at 10 %
density (first conv dense), Adam lr 0.002, batch 64, a_f = 2.5 points, phases
of 5 epochs, k = 30.  Seeds 0, 19, 42, 2022, 31415.  Needs the TFDS cifar100
files; a GPU run.
"""
from clj.configs.nispa_cifar10 import get_config as _c10


def get_config():
    c = _c10()
    c.dataset = "cifar100"
    c.scenario.increment = 5
    c.train.batch_size = 64
    c.nispa.a_f = 2.5
    return c
