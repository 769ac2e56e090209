"""EWC on Split-digits, task-IL (multi-head training), the NISPA comparison.

Dense MLP 64-400-400-400-10 (the NISPA authors' dense baseline MLP), Adam.
``--config.method=si`` / ``mas`` with ``--config.reg.lam=...`` give the other
penalties (or use configs/si_digits.py, configs/mas_digits.py).
"""
import ml_collections

from clj.config import base_config

LAMBDAS = {"ewc": 10000.0, "si": 100.0, "mas": 1000.0}   # the authors' EF-MNIST settings (docs/nispa.md)


def reg_config(method: str, dataset: str = "digits"):
    c = base_config()
    c.method = method
    del c["replay"]
    c.dataset = dataset
    c.scenario.kind = "task_il"
    c.scenario.increment = 2
    c.model = ml_collections.ConfigDict(dict(name="mlp", hidden=(400, 400, 400), dtype="float32"))
    c.optim.name = "adam"
    c.optim.lr = 0.01 if dataset != "digits" else 0.001
    c.augment.normalize = False
    c.train.epochs = 20
    c.train.batch_size = 256 if dataset != "digits" else 32
    c.reg = ml_collections.ConfigDict(dict(lam=LAMBDAS.get(method, 0.0), n_fisher=1000, xi=0.1,
                                           multi_head=True, chunk=64, ewc_mode="per_task", mas_scale="mean",
                                           si_clip=False, importance_samples=0, importance_batch=0,
                                           val_fraction=0.0, patience=0))
    return c


# The authors' EF-MNIST baseline scripts (Baselines/EWC_SI_MAS/*_experiments.sh of the official NISPA
# code, GT-RIPL's Continual-Learning-Benchmark): Adam lr 0.01, at most 20 epochs, early stopping with
# wait 3 on a 10 % hold-out, batch 256 (EWC, 1000 Fisher samples) or 512 (SI, MAS; MAS's importance over
# the whole training split in batches of 512).
AUTHORS_BATCH = {"ewc": 256, "si": 512, "mas": 512}


def authors_config(method: str, dataset: str):
    """``reg_config`` with the authors' baseline settings (above).  The loop's
    batches include the hold-out examples (masked out of the loss), so the
    batch is ``ceil(B / 0.9)``: about B training examples per step and about
    ``ceil(0.9 n / B)`` steps per epoch, as the authors' loader over the
    90 % split gives."""
    c = reg_config(method, dataset)
    b = AUTHORS_BATCH[method]
    c.optim.lr = 0.01
    c.train.epochs = 20
    c.reg.val_fraction = 0.1
    c.reg.patience = 3
    c.train.batch_size = -(-b * 10 // 9)
    c.reg.importance_batch = b
    c.reg.n_fisher = 1000
    return c


def get_config():
    return reg_config("ewc")
