"""FINETUNE on Split Fashion-MNIST, task-IL (multi-head training for the
penalties), dense MLP 784-400-400-400-10, Adam lr 0.01, batch 256, 20 epochs
(the NISPA authors' EF-MNIST baseline settings, docs/nispa.md)."""
from clj.config import base_config
from clj.configs.ewc_digits import reg_config


def get_config():
    c = reg_config("finetune", "fashion_mnist")
    del c["reg"]
    c.replay = base_config().replay  # the core finetune reads the (unused) replay block
    return c
