"""NISPA on Split-digits, task-IL, 5 tasks of 2 classes (bundled real data).

The paper's algorithm and EF-MNIST hyperparameters (Adam, a_f = 0.75 points,
phases of 5 epochs, cosine tau with k = 30, 20 % density) on the sparse MLP
64-400-400-400-10; batch 32 because a digits task has only ~360 examples.
Runs on 2 CPU cores in well under 5 minutes.
"""
import ml_collections

from clj.config import base_config


def nispa_section(**kw) -> ml_collections.ConfigDict:
    """The ``config.nispa`` block with the paper's defaults (docs/nispa.md)."""
    d = dict(density=0.2, a_f=0.75, k=30.0, phase_epochs=5, max_phases=26, min_phases=3, tau_stop=5.0,
             val_fraction=0.1, select_samples=0, mask_init="exact", dense_first_conv=True, eval_chunk=512,
             task_il_rule="multiply")
    d.update(kw)
    return ml_collections.ConfigDict(d)


def get_config():
    c = base_config()
    c.method = "nispa"
    del c["replay"]                      # no replay buffer
    c.dataset = "digits"
    c.scenario.kind = "task_il"
    c.scenario.increment = 2
    c.model = ml_collections.ConfigDict(dict(name="nispa_mlp", dtype="float32", hidden=(400, 400, 400)))
    c.optim.name = "adam"
    c.optim.lr = 0.01
    c.augment.normalize = False          # ToTensor only: pixels in [0, 1]
    c.train.batch_size = 32
    c.nispa = nispa_section()
    c.train.epochs = c.nispa.max_phases * c.nispa.phase_epochs
    return c
