"""NISPA's unit-level bookkeeping as array code (Gurbuz & Dovrolis, ICML 2022).

Every weight layer is described by a :class:`clj.models.nispa_nets.LayerSpec`
and carries a *unit-level connection matrix* ``U`` bool [rows, cols]: for a
Dense layer the kernel mask itself, for a conv layer the (in, out) channel
matrix (a connection = a whole kernel), for the flatten->Dense layer the
kernel mask whose row ``r`` belongs to source channel ``r % n_src``.
:func:`expand` turns ``U`` into the full kernel mask used with
:func:`clj.sparse.apply_masks`.

Unit states are bool vectors per unit layer: ``stable`` (promoted at earlier
task boundaries), ``cand`` (selected in the current phase), ``S = stable |
cand`` and ``plastic = ~S``.  All functions are pure jax with static shapes
(counts may be traced), so they run inside the jitted, vmapped train step.
The rules: ``docs/nispa.md``, "Candidate selection" to "The task boundary:
promote, freeze, re-initialise" (paper §3.3-3.8).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from clj.models.nispa_nets import LayerSpec
from clj.sparse import random_regrow_count


# ---------------------------------------------------------------- layouts
def src_index(spec: LayerSpec) -> jax.Array:
    """int32 [rows]: the source unit of every row of ``U``."""
    r = jnp.arange(spec.rows, dtype=jnp.int32)
    return r % spec.n_src if spec.kind == "flat" else r


def expand(spec: LayerSpec, u: jax.Array, kernel_shape: tuple[int, ...]) -> jax.Array:
    """The full kernel mask (bool ``kernel_shape``) of a unit matrix ``u``:
    identity for Dense/flat layers, a broadcast over (kh, kw) for conv."""
    if spec.kind == "conv":
        return jnp.broadcast_to(u[None, None], kernel_shape)
    return u


def source_vector(spec: LayerSpec, units: jax.Array) -> jax.Array:
    """bool [rows]: ``units`` (bool [n_src]) seen through the row map."""
    return units[src_index(spec)]


def count(spec: LayerSpec, u: jax.Array) -> jax.Array:
    """Connections of a layer in kernel elements (int32 [])."""
    return jnp.sum(u, dtype=jnp.int32) * spec.ksize


# ---------------------------------------------------------------- selection
def tau(t: jax.Array, k: float) -> jax.Array:
    """Eq. (3): the activation fraction tau_t = (1 + cos(pi t / k)) / 2
    (float32 []), as a percentage p_t = 100 tau_t.  With k=30: p_1 = 99.73,
    p_10 = 75, p_15 = 50, p_26 = 4.32."""
    return 50.0 * (1.0 + jnp.cos(jnp.pi * jnp.asarray(t, jnp.float32) / k))


def select_units(act: jax.Array, p: jax.Array) -> jax.Array:
    """Candidate stable units of one layer (``docs/nispa.md``, "Candidate
    selection").

    Args:
      act: float32 [n] average activation per unit (>= 0 after ReLU).
      p: percentage in [0, 100] (traced).

    Returns:
      bool [n]: the shortest prefix of units sorted by activation
      (descending) whose sum reaches p % of the total; the first unit is
      always in it, units of zero activation only if needed to reach p.
    """
    n = act.shape[0]
    order = jnp.argsort(-act, stable=True)
    srt = act[order]
    excl = jnp.cumsum(srt) - srt
    total = jnp.sum(act)
    sel_sorted = (jnp.arange(n) == 0) | (excl < p / 100.0 * total)
    return jnp.zeros((n,), bool).at[order].set(sel_sorted)


# ---------------------------------------------------------------- rewiring
def drop(spec: LayerSpec, u: jax.Array, s_in: jax.Array, s_out: jax.Array):
    """Removes every connection from a unit outside ``s_in`` into a unit of
    ``s_out`` (``docs/nispa.md``, "Rewiring: drop, fix-up, grow": drop).
    Returns ``(new_u, budget)``; the budget is the number of removed kernel
    elements (int32 [])."""
    bad = s_out[None, :] & ~source_vector(spec, s_in)[:, None]
    new = u & ~bad
    return new, count(spec, u) - count(spec, new)


def fix_no_outgoing(spec: LayerSpec, rng: jax.Array, u: jax.Array, plastic_in: jax.Array,
                    plastic_out: jax.Array, budget: jax.Array):
    """Gives every plastic source unit without an outgoing connection one
    connection to a uniformly drawn plastic target, in ascending unit order,
    while the budget lasts (``docs/nispa.md``, "Rewiring: drop, fix-up, grow":
    fix-up).

    For a flatten layer the "no outgoing" test looks at all rows of the
    channel and the new connection leaves the channel's first row (the
    official code tests a single column; this is the corrected check).

    Returns ``(new_u, added bool [rows, cols], budget_left)``; weights of the
    added connections are to be set to exactly 0 by the caller.
    """
    src = src_index(spec)
    out_count = jax.ops.segment_sum(jnp.sum(u, axis=1, dtype=jnp.int32), src, spec.n_src)
    dead = plastic_in & (out_count == 0) & jnp.any(plastic_out)
    quota = budget // spec.ksize
    chosen = dead & (jnp.cumsum(dead.astype(jnp.int32)) <= quota)
    logits = jnp.where(plastic_out, 0.0, -jnp.inf)
    tgt = jax.random.categorical(rng, logits, shape=(spec.n_src,))
    tgt = jnp.where(jnp.any(plastic_out), tgt, 0)
    # The first row of unit c is row c for every layout (flat: r % n_src == c).
    rows = jnp.where(chosen, jnp.arange(spec.n_src, dtype=jnp.int32), spec.rows)
    added = jnp.zeros(u.shape, bool).at[rows, tgt].set(True, mode="drop")
    added = added & ~u
    new = u | added
    return new, added, budget - count(spec, added)


def grow(spec: LayerSpec, rng: jax.Array, u: jax.Array, plastic_out: jax.Array, budget: jax.Array):
    """Grows ``budget // ksize`` new connections drawn uniformly among absent
    positions whose target is plastic (any source; ``docs/nispa.md``,
    "Rewiring: drop, fix-up, grow": grow, the official ``full_random``).
    Returns ``(new_u, grown bool, leftover budget)``; the leftover is > 0 only
    when fewer free positions exist (it is discarded, as in the official
    code)."""
    allowed = jnp.broadcast_to(plastic_out[None, :], u.shape)
    new = random_regrow_count(rng, u, budget // spec.ksize, allowed)
    grown = new & ~u
    return new, grown, budget - count(spec, grown)


def frozen_matrix(spec: LayerSpec, stable_in: jax.Array, stable_out: jax.Array) -> jax.Array:
    """bool [rows, cols]: positions frozen after a task (target stable and
    source stable, whether or not the connection exists; ``docs/nispa.md``,
    "The task boundary: promote, freeze, re-initialise", step 2)."""
    return stable_out[None, :] & source_vector(spec, stable_in)[:, None]
