"""A-GEM on Seq-MNIST, the DER paper's protocol: buffer 500 (or 200 with
``--config.replay.buffer_size=200``), memory batch 128, SGD lr 0.1 (Mammoth's
best arguments for both buffer sizes).

Settings: :func:`configs.replay_common.seq_mnist_config`.
"""
from clj.configs.replay_common import seq_mnist_config


def get_config():
    return seq_mnist_config("agem", lr=0.1, buffer_size=500, minibatch_size=128)
