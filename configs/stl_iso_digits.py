"""STL-iso (NISPA's connection budget split evenly over the 5 tasks: 4 % per
task network) on Split-digits, task-IL, 5 tasks of 2 classes (CPU, seconds).
Otherwise as ``configs/stl_digits.py``."""
from clj.configs.stl_digits import stl_config


def get_config():
    c = stl_config("digits", "stl_iso", density=0.2)
    c.train.batch_size = 32
    return c
