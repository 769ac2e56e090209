"""foster on CIFAR-100 B0 Inc10 at the memory-aligned budget (the MEMO
paper's / CIL survey's aligned comparison: 7431 exemplars for a single
ResNet-32; FOSTER keeps one backbone between tasks), PyCIL's
``exps/foster.json`` training: task 0 200 epochs, later tasks 170 boosting +
130 compression epochs, SGD momentum 0.9 lr 0.1, cosine per epoch, weight
decay 5e-4 (none in compression), batch 128, betas 0.96 / 0.97, KD
temperature 2, ``oofc="ft"``, no weight aligning.  See
configs/cil_cifar100_common.py for the shared protocol."""
from clj.configs.cil_cifar100_common import cifar_config
from clj.methods.sections import section_config


def foster_cifar(init_cls: int, increment: int):
    c = cifar_config("icarl", init_cls, increment, True)
    c.method = "foster"
    c.optim.update(dict(weight_decay=5e-4, schedule="cosine", milestones=()))
    c.train.init_epochs = 200
    c.train.epochs = 170
    c.cil.update(dict(update_weight_decay=5e-4, update_milestones=(), update_schedule="cosine",
                      scheduler="cosine"))
    c.foster = section_config("foster", compression_epochs=130)
    return c


def get_config():
    return foster_cifar(10, 10)
