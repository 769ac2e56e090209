"""NISPA on EF-MNIST (the paper's setting, docs/nispa.md): EMNIST
balanced (47 classes) followed by Fashion-MNIST (labels 47-56), 5 tasks of
[10, 13, 13, 11, 10] classes in label order, task-IL; sparse MLP
784-400-400-400-57 at 20 % density, Adam lr 0.01, batch 512, a_f = 0.75,
phases of 5 epochs, k = 30.  Seeds 0, 19, 42, 2022, 31415.

The combined stream is not a core dataset: ``experiments/nispa.py --bench
ef_mnist --data_dir=<dir with emnist-balanced-*-idx files>`` builds it (with
the core IDX reader) and runs this config.  ``launch.py`` with this file alone
runs EMNIST-balanced only.
"""
import ml_collections

from clj.config import base_config
from clj.configs.nispa_digits import nispa_section

SEEDS = (0, 19, 42, 2022, 31415)
INCREMENTS = (10, 13, 13, 11, 10)


def get_config():
    c = base_config()
    c.method = "nispa"
    del c["replay"]
    c.dataset = "emnist"
    c.emnist_split = "balanced"
    c.scenario.kind = "task_il"
    c.scenario.init_cls = 10
    c.scenario.increment = 13
    c.model = ml_collections.ConfigDict(dict(name="nispa_mlp", dtype="float32", hidden=(400, 400, 400)))
    c.optim.name = "adam"
    c.optim.lr = 0.01
    c.augment.normalize = False
    c.train.batch_size = 512
    c.nispa = nispa_section(density=0.2, a_f=0.75)
    c.train.epochs = c.nispa.max_phases * c.nispa.phase_epochs
    return c
