"""AKR's blending: pairs of a batch, their weights, the virtual images and
their mixed labels.

Source: Lee et al., "Data Efficient Incremental Learning Via Attentive
Knowledge Replay", IEEE SMC 2023 (method figure: "Normalization", the
virtual sample ``a_i x_i + a_j x_j`` and the "Mixed Label"); the choices the
paper leaves open are named in ``docs/akr.md``, "Design decisions", and in
:mod:`clj.methods.akr.akr`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


from clj.methods.akr import section as akr_section

ATTN_NORMS = akr_section.AKR_ATTN_NORMS


def pair_weights(s_i: jax.Array, s_j: jax.Array, norm: str = "softmax", tau=1.0) -> jax.Array:
    """Blending weight a_i of the first image of each pair (a_j = 1 - a_i).

    Args:
      s_i, s_j: float32 [N] attention scores of the two images.
      norm: ``"softmax"`` (``sigmoid((s_i - s_j) / tau)``, the pair's softmax)
        or ``"ratio"`` (``softplus(s_i) / (softplus(s_i) + softplus(s_j))``).
      tau: temperature > 0 (a float or float32 [], e.g. a swept value).

    Returns:
      float32 [N] in (0, 1); equal scores give 0.5; swapping the inputs gives
      ``1 - a_i``.  (AKR figure, "Normalization" block;
      ``docs/akr.md``, "Design decisions".)
    """
    if norm == "softmax":
        return jax.nn.sigmoid((s_i - s_j) / tau)
    if norm == "ratio":
        p, q = jax.nn.softplus(s_i / tau), jax.nn.softplus(s_j / tau)
        tot = p + q
        return jnp.where(tot > 0, p / jnp.where(tot > 0, tot, 1.0), 0.5)
    raise ValueError(f"attn_norm={norm!r} is unknown; valid: {', '.join(ATTN_NORMS)}.")


def blend(x_i: jax.Array, x_j: jax.Array, a: jax.Array) -> jax.Array:
    """Virtual images ``a x_i + (1 - a) x_j`` (one scalar per image).

    Args:
      x_i, x_j: float [N, ...]; a: float32 [N].

    A weight of exactly 1 returns x_i and 0 returns x_j bit for bit.
    """
    ab = a.reshape(a.shape + (1,) * (x_i.ndim - 1)).astype(x_i.dtype)
    return ab * x_i + (1 - ab) * x_j


def mixed_targets(y_i: jax.Array, y_j: jax.Array, a: jax.Array, num_classes: int) -> jax.Array:
    """Mixed label ``a e(y_i) + (1 - a) e(y_j)``: float32 [N, num_classes].

    Every row sums to one; with y_i == y_j it is that one-hot vector; a = 1
    (0) gives exactly the one-hot vector of y_i (y_j).  (AKR figure, "Mixed
    Label (Ground Truth)".)
    """
    a = a.astype(jnp.float32)[:, None]
    return a * jax.nn.one_hot(y_i, num_classes) + (1 - a) * jax.nn.one_hot(y_j, num_classes)


def partners(pair_mode: str, key: jax.Array, B: int, N: int) -> jax.Array:
    """int32 [N] partner of every row of a batch of N = B new-task rows
    followed by N - B exemplars: ``union_perm``, a random permutation of the
    batch; ``exemplar_new``, every new row an exemplar and every exemplar a
    new row (uniform; ``union_perm`` when either part is empty)."""
    R = N - B
    if pair_mode == "exemplar_new" and R > 0 and B > 0:
        k1, k2 = jax.random.split(key)
        new_p = B + jax.random.randint(k1, (B,), 0, R)
        mem_p = jax.random.randint(k2, (R,), 0, B)
        return jnp.concatenate([new_p, mem_p]).astype(jnp.int32)
    return jax.random.permutation(key, N).astype(jnp.int32)


def blend_weights(static, task_step: jax.Array, steps_per_epoch: jax.Array, a_att: jax.Array | None, N: int,
                  mixing: bool, has_old: bool, k_beta: jax.Array, k_frac: jax.Array):
    """The step's blending weights (AKR module doc, item 4).

    Args:
      static: AKR's static hyperparameters (``beta_alpha``, ``warmup_epochs``,
        ``mix_fraction``).
      task_step, steps_per_epoch: int32 [], the classifier's step in the task
        and its steps per epoch (the warm-up is counted in epochs).
      a_att: float32 [N] S's weights (the attentive step), or None (Beta
        mixup weights throughout).
      N: rows; mixing: blend at all (else every weight is 1); has_old: a
        previous model exists (phase >= 1).
      k_beta, k_frac: keys of the Beta draw and of the ``mix_fraction`` draw.

    Returns:
      (a float32 [N], stop-gradient; in_use bool []: the weights count in
      the diagnostics: after the warm-up with S, always with mixup in phases
      >= 1).
    """
    in_use = jnp.asarray(mixing and has_old)
    if not mixing:
        return jnp.ones((N,), jnp.float32), in_use
    a_beta = jax.random.beta(k_beta, static.beta_alpha[0], static.beta_alpha[1], (N,)).astype(jnp.float32)
    a = a_beta
    if a_att is not None:
        epoch = task_step // jnp.maximum(steps_per_epoch, 1)
        in_use = epoch >= static.warmup_epochs
        a = jnp.where(in_use, jax.lax.stop_gradient(a_att), a_beta)
    if static.mix_fraction < 1.0:
        a = jnp.where(jax.random.bernoulli(k_frac, static.mix_fraction, (N,)), a, 1.0)
    return jax.lax.stop_gradient(a), in_use


def exemplar_share(a: jax.Array, partner: jax.Array, B: int, counted: jax.Array):
    """(sum, count) of the exemplar's weight over the ``counted`` (bool [N])
    rows that blend a new-task image (rows < B) with an exemplar (rows >= B).
    Row b's image has weight a_b, its partner 1 - a_b."""
    N = a.shape[0]
    row_mem = jnp.arange(N) >= B
    part_mem = partner >= B
    mixed = counted & (row_mem != part_mem)
    w_ex = jnp.where(row_mem, a, 1.0 - a)
    return jnp.sum(jnp.where(mixed, w_ex, 0.0)), jnp.sum(mixed.astype(jnp.float32))
