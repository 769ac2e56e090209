"""GSS-greedy (memory 200) on Split-digits, class-IL, 5 tasks of 2 classes
(bundled real data).

Settings: :func:`configs.replay_common.digits_config` (MLP 64-100-100-10,
SGD lr 0.1, batch 16, replay minibatch 16), 5 epochs per task; GSS scores
each candidate against 16 random memory examples (``gss.gss_minibatch_size``),
one update per stream batch (``gss.batch_num``), Mammoth's batch-level gate
(``gss.scoring='batch'``).

    python launch.py --config=configs/gss_digits.py
"""
from clj.configs.replay_common import digits_config
from clj.methods.sections import section_config


def get_config():
    c = digits_config("gss")
    c.gss = section_config("gss", gss_minibatch_size=16)
    return c
