"""foster on Split-MNIST (class-IL B0 Inc2, 5 tasks, seed-1993 class order),
CPU-sized: the side-by-side setting with PyCIL (docs/memo.md, "FOSTER").

The settings of configs/coil_mnist.py (MLP 784-100-100, batch 128, 200 herded
exemplars, PyCIL's batching, no augmentation) with FOSTER's phases: task 0
2 epochs, later tasks 2 boosting + 2 compression epochs, SGD momentum 0.9
lr 0.05, cosine per epoch, weight decay 5e-4 (none in compression), betas
0.96 / 0.97, KD temperature 2.
"""
from clj.configs.coil_mnist import get_config as _base
from clj.methods.sections import section_config


def get_config():
    c = _base("foster")
    c.optim.update(dict(schedule="cosine"))
    c.cil.update(dict(update_schedule="cosine", scheduler="cosine"))
    c.foster = section_config("foster", compression_epochs=2)
    return c
