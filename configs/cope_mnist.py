"""CoPE on Split-MNIST as SERENA's figure runs its baselines (CoPE's own
online data-incremental protocol: 5 concepts of 2 classes in the seed's class
order, batch 10, one pass over all 60k images; the stream of
``configs/serena_mnist.py``) with the official Split-MNIST settings
(``main_MNIST.sh``): MLP 784-400-400-100 embedding, PPP temperature 0.1,
prototype momentum 0.99, class-balanced buffer 2000 (200 per class), 10
replayed per step, plain SGD lr 0.01, one update per batch.

    python launch.py --config=configs/cope_mnist.py
"""
from clj.configs.online_common import online_config


def get_config():
    return online_config("cope", "mnist", lr=0.01, buffer_size=2000, cope_dim=100, cope_temperature=0.1,
                         cope_momentum=0.99, cope_iters=1)
