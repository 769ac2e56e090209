"""STL-iso on EF-MNIST: NISPA's 20 % budget split over the 5 tasks (4 % per
task network, the authors' prune 96); otherwise as ``configs/stl_ef_mnist.py``."""
from clj.configs.stl_ef_mnist import SEEDS, get_config as _get  # noqa: F401


def get_config():
    return _get("stl_iso")
