"""iCaRL (the ``icarl`` method) with the settings of configs/akr_digits.py:
the third column of the AKR digits comparison."""
from clj.configs.akr_common import digits_config


def get_config():
    return digits_config("icarl")
