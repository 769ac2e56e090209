"""CLNP on Split CIFAR-10, task-IL, 5 tasks of 2 classes (NISPA's table
setting): NISPA's ConvNet, dense, Adam lr 0.001, batch 128 training
examples, L1 1e-4, 50 epochs, m_perc 0.75 points, theta step 0.02 (the
authors' CIFAR10_experiment.sh, seed 0).  Needs the TFDS cifar10 files; a GPU
run."""
import ml_collections

from clj.configs.clnp_digits import clnp_config

SEEDS = (0,)


def cifar_clnp(dataset: str, increment: int, batch: int, **clnp):
    """CLNP on a CIFAR dataset with NISPA's dense ConvNet, Adam lr 0.001, 50
    epochs; ``batch`` training examples per step."""
    c = clnp_config(dataset, theta_step=0.02, **clnp)
    c.model = ml_collections.ConfigDict(dict(name="nispa_conv", dtype="float32", channels=(64, 64, 128, 128),
                                             fc_width=1024))
    c.scenario.increment = increment
    c.optim.lr = 0.001
    c.augment.normalize = True
    c.train.epochs = 50
    c.train.batch_size = -(-batch * 10 // 9)   # ~batch training examples per step (10 % hold-out)
    return c


def get_config():
    return cifar_clnp("cifar10", 2, 128, l1_alpha=1e-4, m_perc=0.75)
