"""NISPA's rewiring after a phase (``docs/nispa.md``, "Candidate selection" and
"Rewiring: drop, fix-up, grow"; paper §3.3-3.6): the average activation of
every hidden unit on the task's training data (the selection statistic), then
drop, fix-up and random regrowth of the connections in every layer.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from clj.methods.nispa import units as nu
from clj.methods.nispa.state import Static, PyTree, State, forward, stable_full


def average_activations(state: State, params: PyTree, conn: dict) -> list:
    """Per hidden unit layer, float32 [n_units]: post-ReLU activation summed
    over spatial positions, averaged over the selection buffer
    (``docs/nispa.md``, "Candidate selection")."""
    static = state.static
    E = static.chunk
    xs = state.sel_x.reshape(-1, E, *state.sel_x.shape[1:])
    idx = jnp.arange(xs.shape[0] * E, dtype=jnp.int32).reshape(-1, E)

    def body(carry, inp):
        xb, ib = inp
        _, acts = forward(static, params, conn, static.augment(xb, None, train=False))
        w = (ib < state.sel_n).astype(jnp.float32)
        sums = [jnp.einsum("b...c,b->c", a, w) for a in acts]
        return [c + s for c, s in zip(carry, sums)], None

    init = [jnp.zeros((s.cols,), jnp.float32) for s in static.specs[:-1]]
    sums, _ = jax.lax.scan(body, init, (xs, idx))
    n = jnp.maximum(state.sel_n, 1).astype(jnp.float32)
    return [s / n for s in sums]


def rewire(static: Static, rng: jax.Array, params: PyTree, conn: dict, S: tuple):
    """Drop, fix-up and grow in every layer for the unit sets ``S`` (hidden
    layers then outputs; ``docs/nispa.md``, "Rewiring: drop, fix-up, grow").
    Returns ``(params, conn, leftover int32 [n_layers])``; a layer's
    connection count is unchanged unless ``leftover > 0`` (too few free
    positions into plastic targets)."""
    Sf = stable_full(static, S)
    new_p, new_c, left = {}, {}, []
    keys = jax.random.split(rng, 3 * static.n_layers).reshape(static.n_layers, 3, -1)
    for l, s in enumerate(static.specs):
        w, b = params[s.name]["kernel"], params[s.name]["bias"]
        u, budget = nu.drop(s, conn[s.name], Sf[l], Sf[l + 1])
        w = w * nu.expand(s, u, w.shape).astype(w.dtype)
        if l >= 1:
            u, _, budget = nu.fix_no_outgoing(s, keys[l, 0], u, ~Sf[l], ~Sf[l + 1], budget)
        nz = (w != 0).astype(jnp.float32)
        cnt = jnp.maximum(jnp.sum(nz), 1.0)
        mean = jnp.sum(w * nz) / cnt
        std = jnp.sqrt(jnp.sum(((w - mean) * nz) ** 2) / cnt)
        u2, grown, lo = nu.grow(s, keys[l, 1], u, ~Sf[l + 1], budget)
        gm = nu.expand(s, grown, w.shape)
        w = jnp.where(gm, mean + std * jax.random.normal(keys[l, 2], w.shape), w)
        w = w * nu.expand(s, u2, w.shape).astype(w.dtype)
        new_p[s.name] = {"kernel": w, "bias": b}
        new_c[s.name] = u2
        left.append(lo)
    return new_p, new_c, jnp.stack(left).astype(jnp.int32)
