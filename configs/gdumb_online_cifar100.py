"""GDumb on SERENA's online Split CIFAR-100 (20 concepts of 5 classes, ResNet-18, crop + flip): the
data-incremental stream of the paper's figure (batch 10, one pass, no task
id), the same stream, network and memory size as the figure's reservoir
baseline (``configs/serena_cifar100.py:er``; docs/serena.md, "Results").  The
stream fills a greedy class-balanced memory; after the stream the network is
retrained from scratch on it with Mammoth's recipe (256 epochs in batches of
10, warm-up then cosine warm restarts from lr 0.05, CutMix), the usual floor
of online continual learning.

The class order follows the seed (the official rule), so each seed runs in
its own process: ``--config.seed=s``.

    python launch.py --config=configs/gdumb_online_cifar100.py
"""
from clj.configs.online_common import serena_stream_config


def get_config():
    return serena_stream_config("gdumb", "cifar100")
