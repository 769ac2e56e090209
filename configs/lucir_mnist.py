"""lucir on Split-MNIST (class-IL, 5 tasks of 2 in label order), MLP 784-100-100,
one epoch, batch 10, 200 exemplars: the side-by-side run of docs/memo.md;
see configs/lucir_bic_common.py."""
from clj.configs.lucir_bic_common import seq_mnist_config


def get_config():
    return seq_mnist_config("lucir")
