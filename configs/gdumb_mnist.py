"""GDumb on Seq-MNIST as Mammoth's ``gdumb`` runs it (the side-by-side of
docs/baselines.md): 5 tasks of 2 classes in label order, MLP 784-100-100-10,
raw pixels, one pass of batch 32 offered to a memory of 200 filled by
reservoir sampling (Mammoth's buffer; ``--config.gdumb.sampler=balanced`` for
the paper's sampler), then, after the last task, the MLP retrained from
scratch on the memory: 256 epochs of batch 32, lr 0.005 warm-up then cosine
warm restarts from 0.05 to 0.0005, CutMix (alpha 1, half of the batches),
plain SGD (Mammoth's defaults).

    python launch.py --config=configs/gdumb_mnist.py --config.num_seeds=3
"""
from clj.configs.replay_common import seq_mnist_config
from clj.methods.sections import section_config


def get_config():
    c = seq_mnist_config("gdumb", lr=0.1, buffer_size=200)
    c.train.batch_size = 32
    c.gdumb = section_config("gdumb", sampler="reservoir")
    return c
