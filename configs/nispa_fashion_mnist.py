"""NISPA on Split Fashion-MNIST, task-IL, 5 tasks of 2 classes.

The paper's MLP (784-400-400-400-10, 20 % density in every layer) and its
EF-MNIST hyperparameters (docs/nispa.md, "Settings of the paper's runs"): Adam
lr 0.01, batch 512, a_f = 0.75 points, phases of 5 epochs, cosine tau with k =
30 (at most 26 phases), 10 % validation split.  Offline from Debian's
dataset-fashion-mnist.
"""
import ml_collections

from clj.config import base_config
from clj.configs.nispa_digits import nispa_section


def get_config():
    c = base_config()
    c.method = "nispa"
    del c["replay"]
    c.dataset = "fashion_mnist"
    c.scenario.kind = "task_il"
    c.scenario.increment = 2
    c.model = ml_collections.ConfigDict(dict(name="nispa_mlp", dtype="float32", hidden=(400, 400, 400)))
    c.optim.name = "adam"
    c.optim.lr = 0.01
    c.augment.normalize = False
    c.train.batch_size = 512
    c.nispa = nispa_section()
    c.train.epochs = c.nispa.max_phases * c.nispa.phase_epochs
    return c
