"""NISPA on Split CIFAR-10, task-IL, 5 tasks of 2 classes (the paper's setting,
docs/nispa.md, "Settings of the paper's runs"): the sparse ConvNet (first conv
dense, 10 % density elsewhere), Adam lr 0.002, batch 128, a_f = 0.75 points,
phases of 5 epochs, k = 30, CIFAR-10 normalisation, no augmentation.  Seeds of
the paper: 0, 19, 42, 2022, 31415 (``experiments/nispa.py`` runs them).  Needs
the TFDS cifar10 files; a GPU run.
"""
import ml_collections

from clj.config import base_config
from clj.configs.nispa_digits import nispa_section

SEEDS = (0, 19, 42, 2022, 31415)


def get_config():
    c = base_config()
    c.method = "nispa"
    del c["replay"]
    c.dataset = "cifar10"
    c.scenario.kind = "task_il"
    c.scenario.increment = 2
    c.model = ml_collections.ConfigDict(dict(name="nispa_conv", dtype="float32", channels=(64, 64, 128, 128), fc_width=1024))
    c.optim.name = "adam"
    c.optim.lr = 0.002
    c.augment.normalize = True
    c.train.batch_size = 128
    c.nispa = nispa_section(density=0.1, a_f=0.75, dense_first_conv=True)
    c.train.epochs = c.nispa.max_phases * c.nispa.phase_epochs
    return c
