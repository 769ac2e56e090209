"""DER++ + SER on Split-digits (bundled real 8x8 data), class-IL, 5 tasks of 2
classes, online (1 epoch, batch 8, minibatch 8), offline saliency branch
(spectral-residual targets, saliency net pretrained on procedural images).

A reduced ResNet-18 (width 8) keeps it to well under a minute on 2 CPU cores.
The baseline is the same config with ``--config.method=derpp``.
"""
from clj.config import base_config
from clj.methods.sections import section_config


def get_config():
    c = base_config()
    c.method = "ser_derpp"
    c.dataset = "digits"
    c.scenario.kind = "class_il"
    c.scenario.increment = 2
    c.model = dict(name="resnet18", width=8, dtype="float32")
    c.optim.lr = 0.03
    c.augment.normalize = True
    c.train.epochs = 1
    c.train.batch_size = 8
    c.replay.buffer_size = 200
    c.replay.minibatch_size = 8
    c.replay.alpha = 0.1
    c.replay.beta = 0.5
    c.ser = section_config("ser")
    c.ser.sal_init = "pretrain:200"
    return c
