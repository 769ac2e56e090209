"""CLNP on EF-MNIST (NISPA's table setting, docs/nispa.md): EMNIST balanced +
Fashion-MNIST, 5 tasks of [10, 13, 13, 11, 10] classes, task-IL; NISPA's
dense MLP, Adam lr 0.01, batch 512 training examples, L1 1e-5, 20 epochs,
m_perc 0.5 points, theta step 0.02 (the authors' EFMNIST_experiment.sh; seed
0 only there).  As for ``configs/nispa_ef_mnist.py``, ``experiments/nispa.py
--bench ef_mnist`` builds the combined stream; this file alone runs
EMNIST-balanced."""
from clj.configs.clnp_digits import clnp_config

SEEDS = (0,)


def get_config():
    c = clnp_config("emnist", l1_alpha=1e-5, m_perc=0.5, theta_step=0.02)
    c.emnist_split = "balanced"
    c.scenario.init_cls = 10
    c.scenario.increment = 13
    return c
