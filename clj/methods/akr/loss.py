"""AKR's classifier loss on blended images: soft-label CE plus distillation
(clj's iCaRL) or official iCaRL's sigmoid BCE.

Source: Lee et al., "Data Efficient Incremental Learning Via Attentive
Knowledge Replay", IEEE SMC 2023 (the virtual samples and their mixed
labels replace the real ones in iCaRL's objective); Rebuffi et al., "iCaRL",
CVPR 2017, Sec. 2.4 (the BCE with the old model's outputs as targets);
``docs/akr.md``, "Official iCaRL's loss" and "Design decisions".
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from clj.methods.cil import common as cc
from clj.methods import common


def soft_cross_entropy(logits: jax.Array, targets: jax.Array, num: int, weights: jax.Array) -> jax.Array:
    """``-sum_c T_c log softmax(z)_c`` over the first ``num`` classes, weighted mean over rows."""
    lp = jax.nn.log_softmax(cc.mask_logits(logits.astype(jnp.float32), num), -1)
    col = jnp.arange(logits.shape[-1]) < num
    per = -jnp.sum(jnp.where(col, targets * lp, 0.0), -1)
    w = weights.astype(jnp.float32)
    return jnp.sum(per * w) / jnp.maximum(jnp.sum(w), 1.0)


def icarl_bce(logits, old_logits, mixed, known: int, total: int, over: str, weights) -> jax.Array:
    """Official iCaRL's loss on (blended) samples (Rebuffi et al. 2017,
    Sec. 2.4; ``docs/akr.md``, "Official iCaRL's loss"): sigmoid BCE against
    T with T = sigmoid(old logits) on the ``known`` old classes, the mixed
    label on ``[known, total)``, 0 above; averaged over the seen outputs
    (``over="seen"``) or all outputs, then over the weighted rows.
    float32 []."""
    C = logits.shape[-1]
    col = jnp.arange(C)
    T = jnp.where(col < total, mixed, 0.0)
    if old_logits is not None:  # the old classes [0, known)
        T = jnp.where(col < known, jax.nn.sigmoid(old_logits.astype(jnp.float32)), T)
    bce = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), T)
    if over == "seen":
        per = jnp.sum(jnp.where(col < total, bce, 0.0), -1) / total
    else:
        per = jnp.mean(bce, -1)
    w = weights.astype(jnp.float32)
    return jnp.sum(per * w) / jnp.maximum(jnp.sum(w), 1.0)


def classifier_loss(static, logits: jax.Array, y: jax.Array, mixed: jax.Array, weights: jax.Array,
                    old_logits: jax.Array | None, mixing: bool, swept: dict, counts=None):
    """The classifier's loss on the (blended) batch, ``static.target_mode``
    (:mod:`clj.methods.akr.akr` module doc).

    Args:
      static: AKR's static hyperparameters.
      logits: float32 [N, C] of the blended images; y: int32 [N] the first
        images' labels; mixed: float32 [N, C] the mixed labels
        (:func:`~clj.methods.akr.blend.mixed_targets`); weights: bool [N]
        the rows that count.
      old_logits: float32 [N, C] the old model's logits on the blended images
        (phase >= 1), else None.
      mixing: the images are blended; without, ``mixed_ce_kd`` is exactly
        iCaRL's loss (:func:`clj.methods.cil.icarl.train_step`).
      swept: the State's swept values (``cil.kd_T``, ``cil.kd_weight``,
        float32 []).
      counts: the task's known / total classes
        (:class:`~clj.methods.cil.common.TaskCounts`; default ``static.st``).

    Returns:
      (loss, ce, kd) float32 [] (``icarl_bce``: kd = 0, loss = ce).
    """
    st = static.st if counts is None else counts
    zero = jnp.zeros((), jnp.float32)
    if static.target_mode != "mixed_ce_kd":
        ce = icarl_bce(logits, old_logits, mixed, st.known, st.total, static.bce_over, weights)
        return ce, ce, zero
    if mixing:
        ce = soft_cross_entropy(logits, mixed, st.total, weights)
    else:
        ce = common.cross_entropy(cc.mask_logits(logits, st.total), y, weights)
    from clj.methods.cil.icarl import kd_weight

    T, w_kd = swept["cil.kd_T"], kd_weight(static, swept)
    kd = cc.kd_loss(logits, old_logits, st.known, T, weights) if old_logits is not None else zero
    return ce + w_kd * kd, ce, kd
