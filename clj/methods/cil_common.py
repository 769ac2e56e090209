"""Pieces shared by the exemplar-based class-incremental methods (iCaRL, WA,
Replay, DER, MEMO): their config block, the two-phase optimizer (PyCIL's
"init" task-0 and "update" later-task settings), the knowledge-distillation
loss, weight aligning, and the per-task static quantities.

Config block ``config.cil`` (every field has the PyCIL default; see
``shared/specs/memo.md`` Secs. 2.3, 3):

* ``memory_size`` (2000), ``fixed_memory`` (False), ``memory_per_class`` (20):
  the exemplar budget (:mod:`clj.replay.exemplars`);
* ``budget``: ``"fixed"`` uses ``memory_size``; ``"fair"`` computes it from
  the parameter counts so every method has DER's byte budget (T backbones +
  ``base_exemplars``), :func:`clj.replay.exemplars.fair_exemplars`;
* ``base_exemplars`` (2000): DER's exemplar count in the fair budget;
* ``replay_batch_size``: exemplars drawn per step and concatenated to the
  loop's batch of new data; -1 = in proportion to the memory / new-data ratio
  of the task (PyCIL trains on the shuffled union), 0 = none;
* ``predict``: ``"cnn"`` (the linear head) or ``"nme"`` (nearest mean of
  exemplars);
* ``kd_T`` (2.0): distillation temperature; ``kd_weight``: weight of the KD
  term (-1 = the method's PyCIL value: iCaRL 1, WA 2);
* ``update_lr``, ``update_weight_decay``, ``update_milestones``,
  ``update_schedule``: the optimizer of tasks >= 1 (``config.optim`` is task
  0's; ``config.train.init_epochs`` / ``epochs`` the epochs);
* ``train_base`` (True), ``alpha_aux`` (1.0): MEMO / DER only.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections

from clj.methods import sections
from clj.methods.common import OptimSpec, optim_spec_from_config

NEG = -1e9

# Defaults and checks of config.cil live in the JAX-free clj.methods.sections.
CIL_DEFAULTS = dict(sections.CIL.defaults)
PREDICT_RULES = sections.CIL_PREDICT_RULES
BUDGETS = sections.CIL_BUDGETS


def cil_config(**overrides) -> ml_collections.ConfigDict:
    """A ``config.cil`` block with the defaults above, updated by ``overrides``."""
    d = dict(CIL_DEFAULTS)
    d.update(overrides)
    return ml_collections.ConfigDict(d)


def get_cil(config) -> ml_collections.ConfigDict:
    """``config.cil`` filled with defaults for missing fields, validated
    (:data:`clj.methods.sections.CIL`).

    Raises:
      clj.config.ConfigError: a bad value, naming it and what is valid.
    """
    return ml_collections.ConfigDict(sections.get_section("cil", config))


def optim_specs(config, cil) -> tuple[OptimSpec, OptimSpec]:
    """(task-0 spec from ``config.optim``, tasks>=1 spec from ``cil.update_*``)."""
    init = optim_spec_from_config(config.optim)
    update = dataclasses.replace(init, lr=float(cil.update_lr), weight_decay=float(cil.update_weight_decay),
                                 milestones=tuple(int(m) for m in cil.update_milestones),
                                 schedule=str(cil.update_schedule))
    return init, update


def replay_batch(replay_batch_size: int, max_replay_batch: int, batch_size: int, n_new_approx: int,
                 n_mem_max: int) -> int:
    """Static exemplars per step for a task: ``replay_batch_size`` or, when
    -1, ``round(B * n_mem / n_new)`` (the share of exemplars in a batch of
    PyCIL's shuffled union), capped by ``max_replay_batch``; 0 while the
    memory is empty."""
    r = int(replay_batch_size)
    if n_mem_max <= 0:
        return 0
    if r >= 0:
        return r
    return int(min(int(max_replay_batch), max(1, round(batch_size * n_mem_max / max(n_new_approx, 1)))))


def mask_logits(logits: jax.Array, num: int | jax.Array) -> jax.Array:
    """Logits of classes >= ``num`` set to -1e9 (heads are allocated for all
    classes of the scenario; unseen ones take no part in softmaxes)."""
    col = jnp.arange(logits.shape[-1])
    return jnp.where(col < num, logits, NEG)


def kd_loss(logits: jax.Array, old_logits: jax.Array, num_old: int | jax.Array, T: float,
            weights: jax.Array | None = None) -> jax.Array:
    """Softened-softmax distillation over the first ``num_old`` classes
    (Hinton et al. 2015; PyCIL's iCaRL / WA ``_KD_loss``, no T^2 factor):
    ``-sum_c softmax(old / T)_c * log_softmax(new / T)_c``, averaged over the
    rows selected by ``weights`` [B] (all when None).  float32 []."""
    new = mask_logits(logits.astype(jnp.float32), num_old) / T
    old = mask_logits(old_logits.astype(jnp.float32), num_old) / T
    col = jnp.arange(logits.shape[-1]) < num_old
    p = jax.nn.softmax(old, -1) * col
    lp = jnp.where(col, jax.nn.log_softmax(new, -1), 0.0)
    per = -jnp.sum(p * lp, -1)
    if weights is None:
        return per.mean()
    w = weights.astype(jnp.float32)
    return jnp.sum(per * w) / jnp.maximum(jnp.sum(w), 1.0)


def weight_align(kernel: jax.Array, known: int | jax.Array, total: int | jax.Array) -> jax.Array:
    """Weight Aligning (Zhao et al., CVPR 2020, Eq. 6).

    Args:
      kernel: float32 [D, C] a Flax Dense kernel (column c = class c's weight
        vector).
      known, total: old classes are ``[0, known)``, new ``[known, total)``.

    Returns:
      The kernel with the new columns multiplied by
      ``gamma = mean ||w_old|| / mean ||w_new||``; everything else (old
      columns, unseen columns, the bias) is unchanged.
    """
    norms = jnp.linalg.norm(kernel.astype(jnp.float32), axis=0)
    col = jnp.arange(kernel.shape[1])
    old = col < known
    new = (col >= known) & (col < total)
    r_old = jnp.sum(norms * old) / jnp.maximum(jnp.sum(old), 1)
    r_new = jnp.sum(norms * new) / jnp.maximum(jnp.sum(new), 1)
    gamma = r_old / jnp.maximum(r_new, 1e-12)
    return jnp.where(new[None, :], kernel * gamma, kernel).astype(kernel.dtype)


@dataclasses.dataclass(frozen=True)
class TaskStatics:
    """Per-task static quantities (hashable; a new value recompiles once).

    Attributes:
      task: index of the current task (-1 before the first).
      known: classes of earlier tasks.
      total: classes seen including the current task.
      replay: exemplars drawn per train step.
      quota: exemplars per class after this task (for ``end_task``).
    """

    task: int = -1
    known: int = 0
    total: int = 0
    replay: int = 0
    quota: int = 0
