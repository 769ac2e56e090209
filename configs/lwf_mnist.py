"""LwF on Seq-MNIST, the DER paper's protocol, with Mammoth's best arguments:
SGD lr 0.03, alpha 1, T 2, and its ``wd_reg`` 0.0005 on the summed squared
weights, i.e. SGD weight decay 0.001.

Settings: :func:`configs.replay_common.seq_mnist_config` (no buffer is used).
"""
import ml_collections

from clj.configs.replay_common import seq_mnist_config


def get_config():
    c = seq_mnist_config("lwf", lr=0.03)
    c.optim.weight_decay = 0.001
    c.lwf = ml_collections.ConfigDict(dict(alpha=1.0, softmax_temp=2.0, warmup=True))
    return c
