"""DER++ on Seq-CIFAR-10 (5 tasks of 2 classes, 50 epochs, ResNet-18), the DER
paper's headline setting: ``--config=configs/derpp_seq_cifar10.py:<buffer>``
with buffer 200, 500 (default) or 5120 and the paper's hyperparameters for it
(:data:`clj.configs.replay_common.DERPP_SEQ_CIFAR10`).  CIFAR-10 from TFDS or
clj's prepared records (``python -m clj.data.prepare cifar10``).

    python launch.py --config=configs/derpp_seq_cifar10.py:200 --config.num_seeds=10
"""
from clj.configs.replay_common import DERPP_SEQ_CIFAR10, seq_image_config


def get_config(buffer: str = "500"):
    return seq_image_config("derpp", "cifar10", int(buffer or 500), DERPP_SEQ_CIFAR10, epochs=50, increment=2)
