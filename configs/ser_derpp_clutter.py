"""DER++ + SER on the cluttered-MNIST benchmark (settings:
:mod:`configs.ser_clutter_common`).  Needs the saliency checkpoint of
the pretraining command of docs/ser.md (``python -m clj.methods.ser.pretrain
--canvas=32 ... --out=runs/ser_clutter/sal_clutter_fashion_mnist_w8_c32.npz``).
The baseline is ``--config.method=derpp``; ``experiments/ser_clutter.py`` runs
every row of docs/ser.md's clutter table.
"""
from clj.configs.ser_clutter_common import clutter_config


def get_config():
    return clutter_config("ser_derpp")
