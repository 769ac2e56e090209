"""STL-iso on Split Fashion-MNIST: NISPA's 20 % budget split over the 5 tasks
(4 % per task network, the authors' prune 96); otherwise as
``configs/stl_fashion_mnist.py``."""
from clj.configs.stl_digits import stl_config


def get_config():
    return stl_config("fashion_mnist", "stl_iso", density=0.2)
