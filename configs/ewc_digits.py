"""EWC on Split-digits, task-IL (multi-head training), the NISPA comparison.

Dense MLP 64-400-400-400-10 (the NISPA authors' dense baseline MLP), Adam.
``--config.method=si`` / ``mas`` with ``--config.reg.lam=...`` give the other
penalties (or use configs/si_digits.py, configs/mas_digits.py).
"""
import ml_collections

from clj.config import base_config

LAMBDAS = {"ewc": 10000.0, "si": 100.0, "mas": 1000.0}   # the authors' EF-MNIST settings (specs/nispa.md §7.3)


def reg_config(method: str, dataset: str = "digits"):
    c = base_config()
    c.method = method
    del c["replay"]
    c.dataset = dataset
    c.scenario.kind = "task_il"
    c.scenario.increment = 2
    c.model = ml_collections.ConfigDict(dict(name="mlp", hidden=(400, 400, 400)))
    c.optim.name = "adam"
    c.optim.lr = 0.01 if dataset != "digits" else 0.001
    c.augment.normalize = False
    c.train.epochs = 20
    c.train.batch_size = 256 if dataset != "digits" else 32
    c.reg = ml_collections.ConfigDict(dict(lam=LAMBDAS.get(method, 0.0), n_fisher=1000, xi=0.1,
                                           multi_head=True, chunk=64))
    return c


def get_config():
    return reg_config("ewc")
