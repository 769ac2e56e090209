"""SERENA on Split Fashion-MNIST (5 concepts of 2 classes) as an online
data-incremental stream: batch 10, one pass, the bias-free MLP
784-400-400-10 of the paper's Split-MNIST panel (docs/serena.md, "Backbones"), 5 %-dense ERK
cells, W = 10, theta = 0.5 -- the Split-MNIST settings of
``configs/serena_mnist.py`` unchanged (lr 0.05, wd 5e-6; nothing tuned for
this dataset).  Fashion-MNIST is read offline from its IDX files (see
``clj.data``).  The paper has no Fashion-MNIST run; this is clj's benchmark
for the task-free routing rules (docs/serena.md).

Class order: the official per-seed permutation (one process per seed);
``--config.scenario.class_order_seed=0`` fixes seed 0's order so that
``--config.num_seeds=3`` vmaps seeds in one program.

    python launch.py --config=configs/serena_fashion_mnist.py:official
    python launch.py --config=configs/serena_fashion_mnist.py            # task-free (pixel class means)
    python launch.py --config=configs/serena_fashion_mnist.py \\
        --config.serena.vote=nearest_class_mean_cell0                    # task-free, cell-0 feature means
    python launch.py --config=configs/serena_fashion_mnist.py:er         # reservoir ER online
"""
from clj.configs.serena_common import make_config


def get_config(variant: str = "task_free"):
    return make_config(variant, dataset="fashion_mnist", num_classes=10, increment=2,
                       serena_model=dict(name="serena_mlp", hidden=(400, 400)),
                       baseline_model=dict(name="mlp", hidden=(400, 400)),
                       lr=0.05, baseline_lr=0.05, weight_decay=5e-6, er_buffer=500, offline_epochs=5)
