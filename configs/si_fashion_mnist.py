"""SI on Split Fashion-MNIST, task-IL, with the NISPA authors' baseline
settings (their EF-MNIST scripts, GT-RIPL's Continual-Learning-Benchmark;
docs/nispa.md): dense MLP 784-400-400-400-10, multi-head training,
Adam lr 0.01, at most 20 epochs, 10 % hold-out with early-stopping wait 3,
negative path integrals kept (GT-RIPL), damping 0.1, batch 512.  See configs/ewc_digits.py ``authors_config``."""
from clj.configs.ewc_digits import authors_config


def get_config():
    return authors_config("si", "fashion_mnist")
