"""DER++ + SER on Split Fashion-MNIST (real data, offline), class-IL, 5 tasks of
2 classes, online (batch 8, minibatch 8), on CPU in minutes.

Offline saliency branch (docs/ser.md, "Without the saliency data or the
checkpoint"): spectral-residual targets, saliency net pretrained for 300 steps
on procedural images disjoint from the stream.  28x28 inputs are zero-padded to
32x32 (the decoder needs multiples of 8).  A reduced ResNet-18 (width 8) and
one tenth of each task's stream (``train.epochs=0.1``: 1,200 of 12,000 images
per task, seen once) keep it to a few CPU minutes; ``--config.train.epochs=1``
runs the full online stream.
The baseline is the same config with ``--config.method=derpp``;
``experiments/ser.py`` runs both on the same seeds.
"""
import ml_collections

from clj.config import base_config
from clj.methods.sections import section_config


def get_config():
    c = base_config()
    c.method = "ser_derpp"
    c.dataset = "fashion_mnist"
    c.scenario.kind = "class_il"
    c.scenario.increment = 2
    c.model = dict(name="resnet18", width=8, dtype="float32")
    c.optim.lr = 0.03
    c.train = ml_collections.ConfigDict(dict(epochs=0.1, batch_size=8))  # float epochs: a fraction of each task
    c.replay.buffer_size = 500
    c.replay.minibatch_size = 8
    c.replay.alpha = 0.1
    c.replay.beta = 0.5
    c.loop.eval_batch_size = 1000
    c.ser = section_config("ser")
    c.ser.sal_init = "pretrain:300"
    return c
