"""foster on Split-digits (class-IL B0 Inc2, 5 tasks): the settings of
configs/icarl_digits.py (ResNet-8, fair byte budget) with FOSTER's phases
(PyCIL's ``exps/foster.json`` scaled down): task 0 15 epochs, later tasks 10
boosting + 8 compression epochs, SGD momentum 0.9 lr 0.1, cosine per epoch
(weight decay 5e-4; none in compression), effective-number betas 0.96 /
0.97, KD temperature 2."""
from clj.configs.icarl_digits import get_config as _base
from clj.methods.sections import section_config


def get_config():
    c = _base("foster")
    c.optim.update(dict(lr=0.1, weight_decay=5e-4, schedule="cosine", milestones=()))
    c.train.init_epochs = 15
    c.train.epochs = 10
    c.cil.update(dict(update_lr=0.1, update_weight_decay=5e-4, update_milestones=(), update_schedule="cosine",
                      scheduler="cosine"))
    c.foster = section_config("foster", compression_epochs=8)
    return c
