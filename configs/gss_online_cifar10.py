"""GSS-greedy on SERENA's online Split CIFAR-10 (5 concepts of 2 classes, ResNet-18, crop + flip): the
data-incremental stream of the paper's figure (batch 10, one pass, no task
id), the same stream, network, lr and memory size as the figure's reservoir
baseline (``configs/serena_cifar10.py:er``; docs/serena.md, "Results").  Memory
draws of 10 per update and 10 memory gradients per score (Mammoth's settings
for GSS on its online runs), Mammoth's batch-level gate.

The class order follows the seed (the official rule), so each seed runs in
its own process: ``--config.seed=s``.

    python launch.py --config=configs/gss_online_cifar10.py
"""
from clj.configs.online_common import serena_stream_config


def get_config():
    return serena_stream_config("gss", "cifar10", gss_minibatch_size=10)
