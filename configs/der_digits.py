"""DER (buffer 200) on Split-digits, class-IL, 5 tasks of 2 classes.

Settings: :func:`configs.replay_common.digits_config`.
"""
from clj.configs.replay_common import digits_config


def get_config():
    return digits_config("der")
