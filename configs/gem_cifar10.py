"""GEM on Split CIFAR-10, task-IL, 5 tasks of 2 classes (NISPA's baseline
table, docs/nispa.md): NISPA's ConvNet (4 conv layers, FC 1024) dense, replay
buffer 1000 (the NISPA authors' replay baselines), SGD lr 0.03, batch 32, 50
epochs, CIFAR-10 normalisation, Mammoth's margin 0.5.  The learning rate,
batch and epochs are the authors' DER script values (their GEM script was not
read).  Needs the TFDS cifar10 files; a GPU run.
"""
import ml_collections

from clj.configs.nispa_cifar10 import SEEDS, get_config as _nispa  # noqa: F401
from clj.methods.sections import section_config


def get_config():
    c = _nispa()
    c.method = "gem"
    del c["nispa"]
    c.model = ml_collections.ConfigDict(dict(name="nispa_conv", dtype="float32", channels=(64, 64, 128, 128),
                                             fc_width=1024))
    c.optim.name = "sgd"
    c.optim.lr = 0.03
    c.train.batch_size = 32
    c.train.epochs = 50
    c.replay = section_config("replay", buffer_size=1000)
    c.gem = section_config("gem")
    return c
