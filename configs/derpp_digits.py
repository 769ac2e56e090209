"""DER++ (buffer 200) on Split-digits, class-IL, 5 tasks of 2 classes (bundled real data).

The quick-start job: runs on 2 CPU cores in well under a minute.

Settings: :func:`configs.replay_common.digits_config`.
"""
from clj.configs.replay_common import digits_config


def get_config():
    return digits_config("derpp")
