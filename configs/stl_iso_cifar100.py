"""STL-iso on Split CIFAR-100: NISPA's 10 % budget split over the 20 tasks
(0.5 % per task network, the authors' prune 99.5; first conv dense); otherwise
as ``configs/stl_cifar100.py``."""
from clj.configs.stl_cifar10 import SEEDS, cifar_stl  # noqa: F401


def get_config():
    return cifar_stl("cifar100", "stl_iso", 5, 64)
