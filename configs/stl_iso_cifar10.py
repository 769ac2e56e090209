"""STL-iso on Split CIFAR-10: NISPA's 10 % budget split over the 5 tasks (2 %
per task network, the authors' prune 98; first conv dense); otherwise as
``configs/stl_cifar10.py``."""
from clj.configs.stl_cifar10 import SEEDS, cifar_stl  # noqa: F401


def get_config():
    return cifar_stl("cifar10", "stl_iso", 2, 256)
