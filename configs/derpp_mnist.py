"""DER++, buffer 500 (buffer 200: minibatch 128, alpha 0.2, beta 1.0) on Seq-MNIST, the DER paper's protocol.

Settings: :func:`configs.replay_common.seq_mnist_config`;
``experiments/replay.py`` runs every row of the paper's table.
"""
from clj.configs.replay_common import seq_mnist_config


def get_config():
    return seq_mnist_config("derpp", lr=0.03, buffer_size=500, alpha=1.0, beta=0.5)
