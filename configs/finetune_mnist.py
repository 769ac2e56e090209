"""Finetune on Seq-MNIST, the DER paper's protocol.

Settings: :func:`configs.replay_common.seq_mnist_config`;
``experiments/replay.py`` runs every row of the paper's table.
"""
from clj.configs.replay_common import seq_mnist_config


def get_config():
    return seq_mnist_config("finetune", lr=0.03)
