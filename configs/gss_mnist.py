"""GSS-greedy on Seq-MNIST with Mammoth's best arguments for ``gss`` at
buffer 200 (the side-by-side of docs/baselines.md): 5 tasks of 2 classes in
label order, MLP 784-100-100-10, raw pixels, one epoch, batch 128, SGD lr 0.1,
128 replayed examples per update, 10 memory gradients per score, one update
per batch (``batch_num``), the batch-level gate.

Mammoth replays ``--batch_size`` examples per update whenever a batch size is
given (its ``main.py`` sets ``minibatch_size = batch_size``, whatever
``--minibatch_size`` says), so its runs with ``--batch_size 128
--minibatch_size 10`` replay 128.

    python launch.py --config=configs/gss_mnist.py --config.num_seeds=3
"""
from clj.configs.replay_common import seq_mnist_config
from clj.methods.sections import section_config


def get_config():
    c = seq_mnist_config("gss", lr=0.1, buffer_size=200, minibatch_size=128)
    c.train.batch_size = 128
    c.gss = section_config("gss", gss_minibatch_size=10, batch_num=1)
    return c
