"""coil on Split-digits (class-IL B0 Inc2, 5 tasks): the settings of
configs/icarl_digits.py (ResNet-8, fair byte budget) with Coil's single
optimizer phase (PyCIL's ``models/coil.py``: every task SGD lr 0.1, momentum
0.9, weight decay 5e-4, step decay at 1/2 and 3/4 of the epochs) and the
``coil`` block's PyCIL defaults (Sinkhorn regularisation 0.464, cost p = 3)."""
from clj.configs.icarl_digits import get_config as _base
from clj.methods.sections import section_config


def get_config():
    c = _base("coil")
    c.optim.update(dict(lr=0.1, weight_decay=5e-4, milestones=(8, 12)))
    c.train.init_epochs = 15
    c.train.epochs = 15
    c.cil.update(dict(update_lr=0.1, update_weight_decay=5e-4, update_milestones=(8, 12)))
    c.coil = section_config("coil")
    return c
