"""GEM on Seq-MNIST in Mammoth's protocol (``--dataset seq-mnist --model gem``):
5 tasks of 2 classes in label order, MLP 784-100-100-10, one epoch, batch 10,
SGD lr 0.1, buffer 200 (40 slots per task), margin 0.5, raw [0, 1] pixels.

Settings: :func:`configs.replay_common.seq_mnist_config`.  The side-by-side
run with Mammoth (docs/baselines.md) uses ``--config.train.batch_size=32``.
"""
from clj.configs.replay_common import seq_mnist_config
from clj.methods.sections import section_config


def get_config():
    c = seq_mnist_config("gem", lr=0.1, buffer_size=200)
    c.gem = section_config("gem")
    return c
