"""MIR (ER with maximally interfered retrieval) on Split-digits as an online
data-incremental stream: SERENA's digits stream (``configs/serena_digits.py``:
5 concepts of 2 classes in the seed's class order, batch 10, one pass, MLP
64-400-400-10), buffer 200, 50 candidates scored per step, the 10 most
interfered replayed, plain SGD lr 0.1, stored-logit scores (the official
Split-MNIST settings).  Runs on 2 CPU cores in seconds.

    python launch.py --config=configs/mir_digits.py
"""
from clj.configs.online_common import online_config


def get_config():
    return online_config("mir", "digits", lr=0.1, buffer_size=200, mir_subsample=50,
                         mir_compare_to_old_logits=True)
