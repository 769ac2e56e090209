"""GDumb (memory 200, greedy class-balanced) on Split-digits, class-IL, 5
tasks of 2 classes (bundled real data).

Settings: :func:`configs.replay_common.digits_config` (MLP 64-100-100-10,
batch 16), one pass over each task (the stream only fills the memory), then
Mammoth's retraining from scratch on the memory after the last task: 256
epochs, lr 0.005 warm-up then cosine warm restarts from 0.05 down to 0.0005,
CutMix (alpha 1, half of the batches).  Mammoth's ``gdumb`` fills its memory
by reservoir sampling: ``--config.gdumb.sampler=reservoir``.

    python launch.py --config=configs/gdumb_digits.py
"""
from clj.configs.replay_common import digits_config
from clj.methods.sections import section_config


def get_config():
    c = digits_config("gdumb")
    c.train.epochs = 1
    c.gdumb = section_config("gdumb")
    return c
