"""SERENA on Split-digits: scikit-learn's bundled 8x8 digits (real data, no
download) as an online data-incremental stream of 5 concepts of 2 classes,
batch 10, one pass; a bias-free MLP 64-400-400-10 (the paper's MLP_400_400
on 8x8 inputs).  Runs on 2 CPU cores in well under a minute.

    python launch.py --config=configs/serena_digits.py             # task-free protocol
    python launch.py --config=configs/serena_digits.py:official    # the official code's protocol
    python launch.py --config=configs/serena_digits.py:er          # reservoir ER online (baseline)
    python launch.py --config=configs/serena_digits.py:iid_online  # upper bounds
    python launch.py --config=configs/serena_digits.py:iid_offline

The official lr (0.0005) is far too small for ~27 steps per concept on this
tiny set; the digits job uses lr 0.5 for SERENA (its 5 %-dense cells start
with tiny activations) and 0.05 for the dense baselines (``--config.optim.lr``
to change it).  Weight decay 5e-7 keeps the official lr x wd product
(2.5e-7), which sets how fast the official protocol's frozen-but-shared
weights decay (docs/serena.md, "Freezing and the optimizer").

The class order follows the seed, as in the official code
(``np.random.seed(seed); permutation(10)``; ``--config.seed=s``), so each
seed runs in its own process.  ``--config.scenario.class_order_seed=0``
fixes the seed-0 order, and then seeds can be vmapped in one program
(``--config.num_seeds=3``).
"""
from clj.configs.serena_common import make_config


def get_config(variant: str = "task_free"):
    c = make_config(variant, dataset="digits", num_classes=10, increment=2,
                    serena_model=dict(name="serena_mlp", hidden=(400, 400)),
                    baseline_model=dict(name="mlp", hidden=(400, 400)),
                    lr=0.5, baseline_lr=0.05, weight_decay=5e-7, er_buffer=200, offline_epochs=20)
    return c
