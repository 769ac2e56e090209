"""STL on Split CIFAR-100, task-IL, 20 tasks of 5 classes (NISPA's table
setting): NISPA's ConvNet per task at 10 % density (first conv dense), Adam lr
0.001, batch 64 training examples, 40 epochs.  Seeds 0, 19, 42, 2022, 31415.
Needs the TFDS cifar100 files; a GPU run."""
from clj.configs.stl_cifar10 import SEEDS, cifar_stl  # noqa: F401


def get_config():
    return cifar_stl("cifar100", "stl", 5, 64)
