"""GEM on EF-MNIST, task-IL (NISPA's baseline table, docs/nispa.md): the
stream of configs/nispa_ef_mnist.py (EMNIST balanced then Fashion-MNIST, 5
tasks of [10, 13, 13, 11, 10] classes) with a dense MLP 784-400-400-400,
replay buffer 5700 (the NISPA authors' replay baselines), SGD lr 0.03, batch
32, 20 epochs, Mammoth's margin 0.5.  The learning rate, batch and epochs are
the authors' DER/A-GEM script values (their GEM script was not read).
``experiments/nispa.py --bench ef_mnist`` builds the combined stream;
``launch.py`` with this file alone runs EMNIST-balanced only.
"""
import ml_collections

from clj.configs.nispa_ef_mnist import SEEDS, get_config as _nispa  # noqa: F401
from clj.methods.sections import section_config


def get_config():
    c = _nispa()
    c.method = "gem"
    del c["nispa"]
    c.model = ml_collections.ConfigDict(dict(name="mlp", dtype="float32", hidden=(400, 400, 400)))
    c.optim.name = "sgd"
    c.optim.lr = 0.03
    c.train.batch_size = 32
    c.train.epochs = 20
    c.replay = section_config("replay", buffer_size=5700)
    c.gem = section_config("gem")
    return c
