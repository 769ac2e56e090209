"""PODNet on Split-MNIST, class-IL B0 Inc2 (5 tasks, seed-1993 class order), the
side-by-side setting with PyCIL (docs/memo.md, "PODNet"): the small CNN (32/64
channels, FC 128; its two conv stages are POD-spatial's maps), 1 epoch per
task, batch 128, SGD lr 0.1, momentum 0.9, wd 5e-4, cosine per epoch,
PyCIL's batching (new data and exemplars shuffled together), 200 herding
exemplars, class-balanced finetuning 2 epochs at lr 0.005, NME evaluation.
"""
from clj.configs.podnet_digits import get_config as _digits


def get_config():
    c = _digits()
    c.dataset = "mnist"
    c.train.epochs = 1
    c.train.batch_size = 128
    c.cil.batching = "pycil"
    c.podnet.ft_epochs = 2
    return c
