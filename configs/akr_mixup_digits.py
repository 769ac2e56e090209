"""The plain-mixup replay baseline (Beta(1, 1) blending weights, no attention)
on Split-digits, same settings as configs/akr_digits.py."""
from clj.configs.akr_common import digits_config


def get_config():
    return digits_config("mixup")
