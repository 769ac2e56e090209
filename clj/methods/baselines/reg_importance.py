"""The importance Omega of the quadratic-penalty baselines (EWC's Fisher,
MAS's output sensitivity, SI's path integral) and how a task's Omega joins
the stored ones; :mod:`clj.methods.baselines.regularization` holds the method (module
doc there: the sources and GT-RIPL's rules each estimator follows).

Every function takes the regularisation ``State`` (duck-typed: ``static``,
``net``, ``w``, ``start``, ``class_mask``, ``omega``, ``anchor``,
``filled``) and is traced inside ``end_task``.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from clj.methods import common

NEG = -1e9
"""The logit given to another task's classes in multi-head training."""


def zeros(t):
    """A tree of zeros shaped like ``t``."""
    return jax.tree_util.tree_map(jnp.zeros_like, t)


def task_head(state, logits):
    """``logits`` float32 [B, C] with the other tasks' classes at -1e9 when
    the method trains multi-head (``state.static.multi_head``)."""
    return jnp.where(state.class_mask[None, :], logits, NEG) if state.static.multi_head else logits


def _order(key, x_raw, static):
    """A uniform random order of the task's examples with the hold-out ones
    last, and the number of training (non-hold-out) examples."""
    n = x_raw.shape[0]
    if static.val_permille > 0:
        from clj.data.holdout import is_val
        val = is_val(x_raw, static.val_permille)
    else:
        val = jnp.zeros((n,), bool)
    order = jnp.argsort(jax.random.uniform(key, (n,)) + 2.0 * val.astype(jnp.float32))
    return order, n - jnp.sum(val, dtype=jnp.int32)


def _pad(order, size: int):
    return jnp.concatenate([order, jnp.zeros((size - order.shape[0],), order.dtype)]) if size > order.shape[0] \
        else order[:size]


def importance(state, params, x_raw: jax.Array, key: jax.Array):
    """This task's importance Omega_t (params-shaped, float32) on the task's
    training examples ``x_raw`` uint8 [n, ...] (hold-out excluded; module
    doc).  EWC: mean over min(n_fisher, n_train) examples of the squared
    per-example gradient of log p(y_hat|x); MAS: the mean over training
    batches of |grad of the batch mean of the (mean or summed over the
    head's outputs) squared logits|; SI: w / ((theta - start)^2 + xi)."""
    static, net = state.static, state.net
    if static.kind == "si":
        w = jax.tree_util.tree_map(lambda a: jnp.maximum(a, 0.0), state.w) if static.si_clip else state.w
        return jax.tree_util.tree_map(lambda wi, a, b: wi / ((a - b) ** 2 + static.xi), w, params, state.start)
    n = x_raw.shape[0]
    order, n_tr = _order(key, x_raw, static)

    def logits_of(p, x):
        out, _ = common.forward(net, p, net.batch_stats, static.augment(x, None, train=False), train=False)
        return out

    if static.kind == "ewc":
        m = min(static.n_fisher, n)
        E = min(static.chunk, m)
        size = math.ceil(m / E) * E
        idx = _pad(order[:m], size)
        wt = (jnp.arange(size) < jnp.minimum(m, n_tr)).astype(jnp.float32)

        def per_example(x1):
            def lp(p):
                lo = task_head(state, logits_of(p, x1[None]))
                yhat = jax.lax.stop_gradient(jnp.argmax(lo, -1))
                return -common.cross_entropy(lo, yhat)
            return jax.tree_util.tree_map(lambda a: a ** 2, jax.grad(lp)(params))

        def body(acc, inp):
            ix, wc = inp
            g2 = jax.vmap(per_example)(x_raw[ix])
            return jax.tree_util.tree_map(lambda a, b: a + jnp.einsum("b...,b->...", b, wc), acc, g2), None

        tot, _ = jax.lax.scan(body, zeros(params), (idx.reshape(-1, E), wt.reshape(-1, E)))
        cnt = jnp.maximum(jnp.sum(wt), 1.0)
        return jax.tree_util.tree_map(lambda a: a / cnt, tot)

    # MAS
    m = n if static.imp_samples == 0 else min(static.imp_samples, n)
    E = min(static.imp_batch, m)
    size = math.ceil(m / E) * E
    idx = _pad(order[:m], size)
    m_tr = jnp.minimum(m, n_tr)
    wt = (jnp.arange(size) < m_tr).astype(jnp.float32)
    K = jnp.sum(state.class_mask, dtype=jnp.float32) if static.multi_head else jnp.float32(state.class_mask.shape[0])

    def body(acc, inp):
        ix, wc = inp
        cnt = jnp.sum(wc)

        def sq(p):
            lo = logits_of(p, x_raw[ix])
            lo = jnp.where(state.class_mask[None, :], lo, 0.0) if static.multi_head else lo
            per = jnp.sum(lo ** 2, -1)
            if static.mas_scale == "mean":
                per = per / K
            return jnp.sum(per * wc) / jnp.maximum(cnt, 1.0)

        g = jax.grad(sq)(params)
        return jax.tree_util.tree_map(lambda a, b: a + jnp.where(cnt > 0, jnp.abs(b), 0.0), acc, g), None

    tot, _ = jax.lax.scan(body, zeros(params), (idx.reshape(-1, E), wt.reshape(-1, E)))
    nb = jnp.maximum(jnp.ceil(m_tr.astype(jnp.float32) / E), 1.0)
    return jax.tree_util.tree_map(lambda a: a / nb, tot)


def absorb(state, omega_t, params):
    """Stores this task's importance and anchor: per-task EWC writes slot
    ``filled`` (its own Omega and anchor); the online variants add Omega_t to
    slot 0 and move its anchor to ``params``."""
    if state.static.slots > 1:
        k = jnp.minimum(state.filled, state.static.slots - 1)
        omega = jax.tree_util.tree_map(lambda o, t: o.at[k].set(t), state.omega, omega_t)
        anchor = jax.tree_util.tree_map(lambda a, p: a.at[k].set(p), state.anchor, params)
    else:
        omega = jax.tree_util.tree_map(lambda o, t: o.at[0].add(t), state.omega, omega_t)
        anchor = jax.tree_util.tree_map(lambda a, p: a.at[0].set(p), state.anchor, params)
    return state.replace(omega=omega, anchor=anchor, filled=state.filled + 1)
