"""Config builders shared by ``configs/serena_*.py`` (a helper of the
shipped configs, not a config itself): SERENA under either
protocol and the baselines of the paper's figure (docs/serena.md, "Results") on the same
stream.

Variants (the part after ``:`` in ``--config=configs/serena_<ds>.py:<variant>``):

``task_free`` (default)  SERENA, no task boundary or id anywhere.
``official``             SERENA as the official code runs it (boundary reset of
                         the statistic, task-indexed vote; docs/serena.md,
                         "The algorithm as the official code runs it").
``er``                   reservoir ER, online: one pass, batch 10, replay 10
                         (core ``er``), the same data-incremental stream.
``iid_online``           upper bound: one pass, batch 10, over one shuffled
                         task holding every class (core ``finetune``).
``iid_offline``          upper bound: the same single task, ``offline_epochs``
                         passes.

Class order (docs/serena.md, "Class order"): the official code permutes the classes with the run's
seed (``DataManager(shuffle=True, seed=args.seed)``: ``np.random.seed(seed)``
then ``np.random.permutation(num_classes)``), i.e. clj's
``scenario.class_order="seeded"`` with ``class_order_seed`` equal to the run
seed.  ``make_config`` therefore ties ``scenario.class_order_seed`` to
``seed`` (a lazy ml_collections reference): ``--config.seed=2`` also draws
seed 2's order.  Setting ``--config.scenario.class_order_seed=S`` cuts the tie
and fixes the order (e.g. ``0`` for the seed-0 order in every run) without
changing ``seed``.  One program cannot vmap seeds over different class orders
(each seed's tasks hold other examples, in other numbers), so while the order
follows the seed, ``clj.config.validate`` refuses ``num_seeds > 1``
(:func:`clj.config.class_order_follows_seed`): run one process per seed.
"""
from __future__ import annotations

from clj.config import ConfigError, base_config, follow_seed

VARIANTS = ("task_free", "official", "er", "iid_online", "iid_offline")


def make_config(variant: str, *, dataset: str, num_classes: int, increment: int, serena_model: dict, baseline_model: dict,
                class_order: str = "seeded", class_order_seed: int | None = None,
                lr: float = 0.0005,
                baseline_lr: float = 0.05, weight_decay: float = 5e-4, er_buffer: int = 500, offline_epochs: int = 10,
                augment: dict | None = None, loop: dict | None = None):
    """A full config of ``variant`` (module doc).

    ``class_order_seed=None`` (default) ties the class order to the run seed
    (the official rule, module doc); an int fixes it.

    Raises:
      ConfigError: an unknown variant, listing the valid ones.
    """
    variant = variant or "task_free"
    if variant not in VARIANTS:
        raise ConfigError(f"config variant {variant!r} is unknown; valid: {', '.join(VARIANTS)} "
                          "(e.g. --config=configs/serena_digits.py:official).")
    from clj.methods.sections import section_config

    c = base_config()
    c.dataset = dataset
    c.scenario.kind = "data_incremental"
    c.scenario.increment = increment
    c.scenario.class_order = class_order          # the official DataManager: np.random.seed(seed) permutation
    if class_order_seed is None:
        follow_seed(c)
    else:
        c.scenario.class_order_seed = int(class_order_seed)
    c.train.epochs = 1
    c.train.batch_size = 10
    c.optim.name = "sgd"
    c.optim.lr = lr
    c.optim.momentum = 0.9
    c.optim.weight_decay = weight_decay
    c.serena = section_config("serena")   # the official code's defaults (docs/serena.md, "Official defaults")
    c.variant = variant
    for k, v in (augment or {}).items():
        c.augment[k] = v
    for k, v in (loop or {}).items():
        c.loop[k] = v
    if variant in ("task_free", "official"):
        c.method = "serena"
        c.model = _model(serena_model)
        c.serena.protocol = variant
        c.scenario.reveal_boundaries = variant == "official"
        return c
    c.model = _model(baseline_model)
    c.optim.lr = baseline_lr
    c.optim.momentum = 0.0
    c.optim.weight_decay = 0.0
    if variant == "er":
        c.method = "er"
        c.replay.buffer_size = er_buffer
        c.replay.minibatch_size = 10
    else:
        c.method = "finetune"
        c.scenario.kind = "class_il"
        c.scenario.increment = num_classes  # one task with every class
        c.scenario.init_cls = 0
        if variant == "iid_offline":
            c.train.epochs = offline_epochs
    return c


def _model(d: dict):
    import ml_collections
    return ml_collections.ConfigDict({"dtype": "float32", **dict(d)})  # every model block has model.dtype

