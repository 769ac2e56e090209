"""DER++ on Seq-Tiny-ImageNet (10 tasks of 20 classes, 100 epochs, ResNet-18
with the CIFAR stem at 64x64), the DER paper's setting:
``--config=configs/derpp_seq_tinyimg.py:<buffer>`` with buffer 200, 500
(default) or 5120 (:data:`clj.configs.replay_common.DERPP_SEQ_TINYIMG`).
Tiny-ImageNet prepared with ``python -m clj.data.prepare tiny_imagenet``.

    python launch.py --config=configs/derpp_seq_tinyimg.py:500 --config.data_dir=<prepared folder>
"""
from clj.configs.replay_common import DERPP_SEQ_TINYIMG, seq_image_config


def get_config(buffer: str = "500"):
    return seq_image_config("derpp", "tiny_imagenet", int(buffer or 500), DERPP_SEQ_TINYIMG, epochs=100,
                            increment=20)
