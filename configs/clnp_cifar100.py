"""CLNP on Split CIFAR-100, task-IL, 20 tasks of 5 classes (NISPA's table
setting): NISPA's dense ConvNet, Adam lr 0.001, batch 32 training examples,
L1 1e-5, 50 epochs, m_perc 1 point, theta step 0.02 (the authors'
CIFAR100_experiment.sh, seed 0).  Needs the TFDS cifar100 files; a GPU run."""
from clj.configs.clnp_cifar10 import SEEDS, cifar_clnp  # noqa: F401


def get_config():
    return cifar_clnp("cifar100", 5, 32, l1_alpha=1e-5, m_perc=1.0)
