"""GEM (buffer 200, margin 0.5) on Split-digits, class-IL, 5 tasks of 2 classes (bundled real data).

Settings: :func:`configs.replay_common.digits_config`; the episodic memory has
200 // 5 = 40 slots per task, filled at each task's end; Mammoth's margin
0.5 and ridge 1e-3 (clj/methods/baselines/gem.py).
"""
from clj.configs.replay_common import digits_config
from clj.methods.sections import section_config


def get_config():
    c = digits_config("gem")
    c.gem = section_config("gem")
    return c
