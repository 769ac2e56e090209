"""STL (one sparse network per task at NISPA's density) on Split-digits,
task-IL, 5 tasks of 2 classes (bundled real data, CPU, seconds).

NISPA's MLP (64-400-400-400-10 here) at 20 % density in every layer, Adam lr
0.01, 20 epochs with the best hold-out epoch kept (the authors' EF-MNIST STL
settings, docs/nispa.md "STL"); batch 32 because a digits task has only ~360
examples.  ``configs/stl_iso_digits.py`` is the iso-parameter variant.
"""
import ml_collections

from clj.config import base_config
from clj.methods.sections import section_config


def stl_config(dataset: str, variant: str = "stl", **stl) -> ml_collections.ConfigDict:
    """An STL config on an MNIST-family ``dataset`` (NISPA's MLP, Adam lr
    0.01, 20 epochs, task-IL in steps of 2 classes); ``stl`` overrides the
    ``config.stl`` block."""
    c = base_config()
    c.method = variant
    del c["replay"]
    c.dataset = dataset
    c.scenario.kind = "task_il"
    c.scenario.increment = 2
    c.model = ml_collections.ConfigDict(dict(name="nispa_mlp", dtype="float32", hidden=(400, 400, 400)))
    c.optim.name = "adam"
    c.optim.lr = 0.01
    c.augment.normalize = False          # ToTensor only: pixels in [0, 1]
    c.train.epochs = 20
    c.train.batch_size = 143             # ceil(128 / 0.9): ~128 training examples per step (10 % hold-out)
    c.stl = section_config("stl", **stl)
    return c


def get_config():
    c = stl_config("digits", "stl", density=0.2)
    c.train.batch_size = 32
    return c
