"""MAS on Split-digits, task-IL (see configs/ewc_digits.py)."""
from clj.configs.ewc_digits import reg_config


def get_config():
    return reg_config("mas")
