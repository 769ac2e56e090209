"""coil on CIFAR-100 B0 Inc10 at the memory-aligned budget (the MEMO paper's
/ CIL survey's aligned table: 7431 exemplars for a single ResNet-32), PyCIL's
``models/coil.py`` training: every task 160 epochs, SGD lr 0.1 momentum 0.9
weight decay 5e-4, steps at 80 / 120, batch 128, KD temperature 2; Sinkhorn
regularisation 0.464, cost p = 3, retrospective weight 1e-3.  See
configs/cil_cifar100_common.py for the shared protocol (data, order,
augmentation, PyCIL's batching)."""
from clj.configs.cil_cifar100_common import cifar_config
from clj.methods.sections import section_config


def coil_cifar(init_cls: int, increment: int):
    c = cifar_config("icarl", init_cls, increment, True)
    c.method = "coil"
    c.optim.update(dict(weight_decay=5e-4, milestones=(80, 120)))
    c.train.init_epochs = 160
    c.train.epochs = 160
    c.cil.update(dict(update_weight_decay=5e-4, update_milestones=(80, 120)))
    c.coil = section_config("coil")
    return c


def get_config():
    return coil_cifar(10, 10)
