"""A-GEM (buffer 200, memory batch 128) on Split-digits, class-IL, 5 tasks of 2 classes (bundled real data).

Settings: :func:`configs.replay_common.digits_config`; the memory batch is
Mammoth's A-GEM value (128) instead of the family's 16.  The memory is filled
at task ends, 200 // 5 = 40 examples per task (clj/methods/baselines/agem.py).
"""
from clj.configs.replay_common import digits_config


def get_config():
    c = digits_config("agem")
    c.replay.minibatch_size = 128
    return c
