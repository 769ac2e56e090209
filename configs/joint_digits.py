"""Joint training (upper bound) on Split-digits: task t trains on tasks 0..t.

Settings: :func:`configs.replay_common.digits_config`.
"""
from clj.configs.replay_common import digits_config


def get_config():
    return digits_config("joint")
