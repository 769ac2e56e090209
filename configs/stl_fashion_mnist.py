"""STL on Split Fashion-MNIST, task-IL, 5 tasks of 2 classes: NISPA's MLP
784-400-400-400-10 at 20 % density per task, the authors' EF-MNIST STL
settings (Adam lr 0.01, batch 128 training examples, 20 epochs, best hold-out
epoch kept).  Offline from Debian's dataset-fashion-mnist."""
from clj.configs.stl_digits import stl_config


def get_config():
    return stl_config("fashion_mnist", "stl", density=0.2)
