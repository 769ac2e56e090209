"""MIR on Split-MNIST as SERENA's figure runs its baselines (CoPE's online
data-incremental protocol: 5 concepts of 2 classes in the seed's class order,
batch 10, one pass over all 60k images, MLP 784-400-400-10; the stream of
``configs/serena_mnist.py``) with the official ER-MIR Split-MNIST settings
(``Scripts/ER_experiments.sh``): plain SGD lr 0.1, 50 candidates, 10
replayed, ``--compare_to_old_logits``; buffer 2000 (CoPE's Split-MNIST
memory, 200 per class).

    python launch.py --config=configs/mir_mnist.py
"""
from clj.configs.online_common import online_config


def get_config():
    return online_config("mir", "mnist", lr=0.1, buffer_size=2000, mir_subsample=50,
                         mir_compare_to_old_logits=True)
