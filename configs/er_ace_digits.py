"""ER-ACE on Split-digits, class-IL, 5 tasks of 2 classes (bundled real data).

Settings: :func:`configs.replay_common.digits_config` (the replay baselines').
"""
from clj.configs.replay_common import digits_config


def get_config():
    return digits_config("er_ace")
