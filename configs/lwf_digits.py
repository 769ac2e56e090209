"""LwF (lambda 1, T 2, head warm-up) on Split-digits, class-IL, 5 tasks of 2 classes (bundled real data).

Settings: :func:`configs.replay_common.digits_config` (no buffer is used);
the ``lwf`` block is the paper's and Mammoth's (clj/methods/baselines/lwf.py).
"""
import ml_collections

from clj.configs.replay_common import digits_config


def get_config():
    c = digits_config("lwf")
    c.lwf = ml_collections.ConfigDict(dict(alpha=1.0, softmax_temp=2.0, warmup=True))
    return c
