"""CLNP on Split-digits, task-IL, 5 tasks of 2 classes (bundled real data,
CPU, seconds): NISPA's MLP (64-400-400-400-10 here, dense), the authors'
EF-MNIST CLNP settings (Adam lr 0.01, L1 1e-5, 20 epochs, m_perc 0.5 points,
theta step 0.02; docs/nispa.md "CLNP"), batch 32 because a digits task has
only ~360 examples."""
import ml_collections

from clj.config import base_config
from clj.methods.sections import section_config


def clnp_config(dataset: str, **clnp) -> ml_collections.ConfigDict:
    """A CLNP config on an MNIST-family ``dataset`` (NISPA's dense MLP, Adam
    lr 0.01, batch 512 training examples, 20 epochs, task-IL in steps of 2
    classes); ``clnp`` overrides the ``config.clnp`` block."""
    c = base_config()
    c.method = "clnp"
    del c["replay"]
    c.dataset = dataset
    c.scenario.kind = "task_il"
    c.scenario.increment = 2
    c.model = ml_collections.ConfigDict(dict(name="nispa_mlp", dtype="float32", hidden=(400, 400, 400)))
    c.optim.name = "adam"
    c.optim.lr = 0.01
    c.augment.normalize = False          # ToTensor only: pixels in [0, 1]
    c.train.epochs = 20
    c.train.batch_size = 569             # ceil(512 / 0.9): ~512 training examples per step (10 % hold-out)
    c.clnp = section_config("clnp", **clnp)
    return c


def get_config():
    c = clnp_config("digits", l1_alpha=1e-5, m_perc=0.5, theta_step=0.02)
    c.train.batch_size = 32
    return c
