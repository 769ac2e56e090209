"""STL on EF-MNIST (NISPA's table setting, docs/nispa.md): EMNIST balanced +
Fashion-MNIST, 5 tasks of [10, 13, 13, 11, 10] classes, task-IL; NISPA's MLP
784-400-400-400-57 at 20 % density per task (the authors' prune 80), Adam lr
0.01, batch 128 training examples, 20 epochs.  Seeds 0, 19, 42, 2022, 31415.
As for ``configs/nispa_ef_mnist.py``, ``experiments/nispa.py --bench
ef_mnist`` builds the combined stream; this file alone runs EMNIST-balanced."""
from clj.configs.stl_digits import stl_config

SEEDS = (0, 19, 42, 2022, 31415)


def get_config(variant: str = "stl"):
    c = stl_config("emnist", variant, density=0.2)
    c.emnist_split = "balanced"
    c.scenario.init_cls = 10
    c.scenario.increment = 13
    return c
