"""CoPE (continual prototype evolution) on Split-digits as an online
data-incremental stream: SERENA's digits stream (``configs/serena_digits.py``:
5 concepts of 2 classes in the seed's class order, batch 10, one pass, MLP
64-400-400) with a 100-dim L2-normalised embedding, PPP temperature 0.1,
prototype momentum 0.99, a class-balanced buffer of 200, 10 replayed per step,
plain SGD lr 0.01 (the official Split-MNIST settings, ``main_MNIST.sh``).
Runs on 2 CPU cores in seconds.

    python launch.py --config=configs/cope_digits.py
"""
from clj.configs.online_common import online_config


def get_config():
    return online_config("cope", "digits", lr=0.01, buffer_size=200, cope_dim=100, cope_temperature=0.1,
                         cope_momentum=0.99, cope_iters=1)
