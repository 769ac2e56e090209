"""CLNP on Split Fashion-MNIST, task-IL, 5 tasks of 2 classes: NISPA's dense
MLP 784-400-400-400-10 with the authors' EF-MNIST CLNP settings (Adam lr
0.01, batch 512 training examples, L1 1e-5, 20 epochs, m_perc 0.5, theta step
0.02).  Offline from Debian's dataset-fashion-mnist."""
from clj.configs.clnp_digits import clnp_config


def get_config():
    return clnp_config("fashion_mnist", l1_alpha=1e-5, m_perc=0.5, theta_step=0.02)
