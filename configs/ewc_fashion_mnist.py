"""EWC on Split Fashion-MNIST, task-IL (multi-head training for the
penalties), dense MLP 784-400-400-400-10, Adam lr 0.01, batch 256, 20 epochs
(the NISPA authors' EF-MNIST baseline settings, specs/nispa.md §7.3)."""
from configs.ewc_digits import reg_config


def get_config():
    c = reg_config("ewc", "fashion_mnist")

    return c
