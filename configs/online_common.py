"""Config builder shared by the MIR and CoPE configs (a helper of the
shipped configs, not a config itself): the two online baselines of SERENA's
figure (docs/serena.md, "What the paper reports") on SERENA's own stream
(CoPE's online data-incremental protocol: batch 10, one pass, no task id, the
class order of the run's seed), with each method's settings from its official
scripts (docs/baselines.md, "MIR" and "CoPE").

The stream is ``configs/serena_<dataset>.py:er`` (reservoir ER on the same
stream), so the three baselines see the same examples in the same order; the
class order follows ``seed`` as there (one process per seed, or
``--config.scenario.class_order_seed=0`` to fix the order and vmap seeds).
"""
from __future__ import annotations

import importlib


def online_config(method: str, dataset: str, *, lr: float, buffer_size: int, minibatch_size: int = 10,
                  model: dict | None = None, augment: dict | None = None, **online):
    """The config of ``method`` (``"mir"`` or ``"cope"``) on SERENA's stream
    of ``dataset`` (``digits``, ``mnist``, ``cifar10``, ``cifar100``).

    Args:
      lr: plain-SGD learning rate (no momentum, no weight decay, as both
        official codes).
      buffer_size: replay slots, all classes together.
      minibatch_size: replayed examples per step (both codes: the batch size, 10).
      model: replaces fields of the ``model`` block.
      augment: replaces fields of the ``augment`` block.
      online: fields of the ``online`` block (``mir_subsample=50``, ...).
    """
    from clj.methods.sections import section_config

    c = importlib.import_module(f"clj.configs.serena_{dataset}").get_config("er")
    c.method = method
    c.variant = method
    c.optim.lr = lr
    c.replay.buffer_size = buffer_size
    c.replay.minibatch_size = minibatch_size
    c.online = section_config("online", **online)
    for block, values in (("model", model), ("augment", augment)):
        for k, v in (values or {}).items():
            c[block][k] = v
    return c


def serena_stream_config(method: str, dataset: str, **block):
    """``method`` on SERENA's online stream of ``dataset`` (``mnist``,
    ``cifar10``, ``cifar100``): the figure's reservoir-ER config
    (``configs/serena_<dataset>.py:er``: the same stream, network and memory
    size) with the method and its own config block (``block`` overriding its
    defaults).  The class order follows the seed (the official rule)."""
    from clj.methods.sections import section_config

    c = importlib.import_module(f"clj.configs.serena_{dataset}").get_config("er")
    c.method = method
    c.variant = method
    c[method] = section_config(method, **block)
    return c
