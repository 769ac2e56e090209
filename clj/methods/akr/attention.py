"""AKR's attention module S: the feature drift that defines each sample's
importance, S's scores, its loss L_att and its optimizer step.

Source: Lee et al., "Data Efficient Incremental Learning Via Attentive
Knowledge Replay", IEEE SMC 2023 (abstract: weights from the samples'
relative importance, measured by their feature change across phases;
method figure: the attention module with shared weights); the readings of
what the paper leaves open are in ``docs/akr.md``, "Design decisions", and the
switches of :mod:`clj.methods.akr.akr`.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from clj.methods import common
from clj.methods.akr import section as akr_section
from clj.methods.akr.blend import blend, pair_weights
from clj.methods.common import ModelState
from clj.replay import exemplars as ex

IMPORTANCE_NORMS = akr_section.AKR_IMPORTANCE_NORMS
EPS = 1e-8


def feature_drift(f_cur: jax.Array, f_old: jax.Array, metric: str = "l2", normalize: bool = True) -> jax.Array:
    """Per-sample feature change between the current and the old model, float32 [N].

    ``l2``: ``||n(f_cur) - n(f_old)||`` (n = L2 normalisation when
    ``normalize``); ``cosine``: ``1 - cos(f_cur, f_old)``.  Zero when the two
    features are equal.  (AKR abstract: importance from feature change across
    phases; ``docs/akr.md``, "Design decisions": importance.)
    """
    f_cur, f_old = f_cur.astype(jnp.float32), f_old.astype(jnp.float32)
    if metric == "cosine":
        return 1.0 - jnp.sum(ex.l2_normalize(f_cur) * ex.l2_normalize(f_old), -1)
    if normalize:
        f_cur, f_old = ex.l2_normalize(f_cur), ex.l2_normalize(f_old)
    return jnp.sqrt(jnp.sum((f_cur - f_old) ** 2, -1) + 1e-12) * (jnp.any(f_cur != f_old, -1))


def importance_targets(d_i: jax.Array, d_j: jax.Array, norm: str = "zscore", tau=1.0,
                       sign: int = 1, valid: jax.Array | None = None) -> jax.Array:
    """Importance r_i of the first image of each pair (r_j = 1 - r_i), float32 [N].

    Args:
      d_i: float32 [N] drift of every row of the batch; d_j: float32 [N]
        drift of each row's partner (``d_i[partner]``).
      norm: ``"zscore"``: both drifts standardised with the mean and std of
        ``d_i`` over the ``valid`` rows, then ``sigmoid((z_i - z_j) / tau)``
        (0.5 everywhere when the valid drifts are equal, e.g. all 0 at a
        phase start); a pair one batch-std apart gets
        0.73 at tau = 1, and for normal drifts E|r - 0.5| = 0.23 at tau = 1,
        close to Beta(1, 1) mixup's 0.25.  ``"softmax"``:
        ``sigmoid((d_i - d_j) / tau)`` on the raw drifts.  ``"ratio"``:
        ``d_i / (d_i + d_j + eps)``, 0.5 when both drifts are 0.
      tau: temperature (> 0) of ``zscore`` and ``softmax`` (a float or
        float32 [], e.g. a swept value).
      sign: ``-1`` gives ``1 - r`` (less drift, more weight).
      valid: bool [N] rows that count in the batch statistics (``zscore``).

    The paper says the weights follow each sample's relative importance from
    its feature change across phases (AKR abstract); the mapping from drift
    to a pair weight is not given (``docs/akr.md``, "Design decisions"), hence the
    options.

    Raises:
      ValueError: unknown ``norm``.
    """
    if norm == "zscore":
        d_all = d_i.astype(jnp.float32)
        v = jnp.ones(d_all.shape, jnp.float32) if valid is None else valid.astype(jnp.float32)
        n = jnp.maximum(jnp.sum(v), 1.0)
        mu = jnp.sum(d_all * v) / n
        sd = jnp.sqrt(jnp.sum(v * (d_all - mu) ** 2) / n)
        scale = jnp.where(sd > 1e-6, sd, jnp.inf)  # equal drifts: no preference
        r = jax.nn.sigmoid((d_i - d_j) / scale / tau)
    elif norm == "ratio":
        tot = d_i + d_j
        r = jnp.where(tot > EPS, d_i / (tot + EPS), 0.5)
    elif norm == "softmax":
        r = jax.nn.sigmoid((d_i - d_j) / tau)
    else:
        raise ValueError(f"importance_norm={norm!r} is unknown; valid: {', '.join(IMPORTANCE_NORMS)}.")
    return r if sign > 0 else 1.0 - r


def head_scores(attn_params, feats: jax.Array) -> jax.Array:
    """S's scores on features, float32 [N]: a linear score layer (``{"w": [D],
    "b": []}``, the ``trunk_copy`` head) or a 2-layer MLP (``{"w1", "b1",
    "w2", "b2"}``, ``feature_mlp``) on float [N, D] features."""
    f = feats.astype(jnp.float32)
    if "w1" in attn_params:
        f = jax.nn.relu(f @ attn_params["w1"] + attn_params["b1"])
        return f @ attn_params["w2"] + attn_params["b2"]
    return f @ attn_params["w"] + attn_params["b"]


def importance_loss(a: jax.Array, r: jax.Array, valid: jax.Array, reg: float = 0.0) -> jax.Array:
    """L_att: BCE between the pair weights a and the importance targets r
    (both float32 [N]), mean over the ``valid`` (float [N]) rows, minus
    ``reg`` x the weights' binary entropy; float32 [].  Its minimum over a
    is at a = r (``docs/akr.md``, "Design decisions": reading A)."""
    la = jnp.log(jnp.clip(a, EPS, 1.0))
    lb = jnp.log(jnp.clip(1.0 - a, EPS, 1.0))
    per = -(r * la + (1.0 - r) * lb)
    if reg:
        per = per + reg * (a * la + (1 - a) * lb)
    v = valid.astype(jnp.float32)
    return jnp.sum(per * v) / jnp.maximum(jnp.sum(v), 1.0)


def weighted_corr(a: jax.Array, r: jax.Array, valid: jax.Array) -> jax.Array:
    """Pearson correlation of a and r over the ``valid`` rows, float32 [];
    0 when either is constant there."""
    v = valid.astype(jnp.float32)
    n = jnp.maximum(jnp.sum(v), 1.0)
    da, dr = a - jnp.sum(a * v) / n, r - jnp.sum(r * v) / n
    cov = jnp.sum(v * da * dr)
    den = jnp.sqrt(jnp.sum(v * da * da) * jnp.sum(v * dr * dr))
    return jnp.where(den > 1e-12, cov / jnp.where(den > 1e-12, den, 1.0), 0.0)


def attention_tx(lr: float) -> optax.GradientTransformation:
    """S's optimizer: ``optax.adam`` with an injectable learning rate (for
    ``attn_lr_decay``)."""
    return optax.inject_hyperparams(optax.adam)(learning_rate=lr)


def update_attention(tx: optax.GradientTransformation, attn_params, opt_state, loss_fn, lr=None):
    """One optimizer step of S on ``loss_fn(attn_params) -> (loss, aux)``.

    Args:
      tx: :func:`attention_tx`; opt_state: its state.
      lr: float32 [] learning rate for this step (None: the one in the state).

    Returns:
      (new params, new opt_state, loss before the step, aux).
    """
    (loss, aux), g = jax.value_and_grad(loss_fn, has_aux=True)(attn_params)
    if lr is not None:
        opt_state = opt_state._replace(hyperparams={**opt_state.hyperparams,
                                                    "learning_rate": jnp.asarray(lr, jnp.float32)})
    upd, opt_state = tx.update(g, opt_state, attn_params)
    return optax.apply_updates(attn_params, upd), opt_state, loss, aux


def zero_head(D: int):
    """The ``trunk_copy`` score layer at its phase-start value: ``{"w": 0 [D], "b": 0}``."""
    return {"w": jnp.zeros((D,), jnp.float32), "b": jnp.zeros((), jnp.float32)}


def init_attention(rng: jax.Array, static, net: ModelState):
    """S's initial trainable parameters (see :class:`State`)."""
    D = static.feat_dim
    if static.attn_arch == "trunk_copy":
        return {"trunk": net.params, **zero_head(D)} if static.attn_train == "all" else zero_head(D)
    H = static.attn_hidden
    w1 = jax.random.normal(rng, (D, H), jnp.float32) * jnp.sqrt(2.0 / D)
    return {"w1": w1, "b1": jnp.zeros((H,), jnp.float32), "w2": jnp.zeros((H,), jnp.float32),
            "b2": jnp.zeros((), jnp.float32)}


def attention_scores(state, attn_params, x: jax.Array, old_feats: jax.Array) -> jax.Array:
    """S's scores float32 [N]: on the old model's features (``feature_mlp``,
    and ``trunk_copy`` with ``attn_train="head"``, whose frozen trunk is the
    old model), or the trained trunk copy on the images x (``"all"``; eval
    BN with the old statistics of ``state.old_batch_stats``)."""
    if "trunk" in attn_params:
        (_, f), _ = common.forward(state.net, attn_params["trunk"], state.old_batch_stats, x, train=False,
                                   return_features=True)
        return head_scores({"w": attn_params["w"], "b": attn_params["b"]}, f)
    return head_scores(attn_params, old_feats)


def max_drift_loss(state, a: jax.Array, x: jax.Array, xj: jax.Array, valid: jax.Array) -> jax.Array:
    """Reading B of L_att (``docs/akr.md``, "Design decisions"): minus the
    squared distance of the normalised old and current features of the blended
    image ``blend(x, xj, a)`` (gradient through the blend into a; both models
    frozen here), plus ``attn_reg`` x the weights' negative binary entropy;
    mean over the ``valid`` (bool [N]) rows.  float32 []."""
    static, net = state.static, state.net
    xt = blend(x, xj, a)
    (_, fo), _ = common.forward(net, state.old_params, state.old_batch_stats, xt, train=False,
                                return_features=True)
    (_, fc), _ = common.forward(net, jax.lax.stop_gradient(net.params), net.batch_stats, xt,
                                train=False, return_features=True)
    per = -jnp.sum((ex.l2_normalize(fc) - ex.l2_normalize(jax.lax.stop_gradient(fo))) ** 2, -1)
    if static.attn_reg:
        per = per + static.attn_reg * (a * jnp.log(jnp.clip(a, EPS, 1.0))
                                       + (1 - a) * jnp.log(jnp.clip(1 - a, EPS, 1.0)))
    v = valid.astype(jnp.float32)
    return jnp.sum(per * v) / jnp.maximum(jnp.sum(v), 1.0)


def attention_step(state, x: jax.Array, w: jax.Array, partner: jax.Array, pw: jax.Array):
    """Items 1-3 of the :mod:`clj.methods.akr.akr` module doc: the feature drift
    of every row between the old (frozen) and the current model (both eval
    BN, stop-gradient), the importance targets of the pairs, and one step of
    S on L_att.

    Args:
      state: AKR's State (phase >= 1: it has an old model).
      x: float32 [N, H, W, C] the batch; w: bool [N] its real rows;
      partner: int32 [N] each row's partner; pw: bool [N] rows whose pair is
        real.

    Returns:
      ``(attn_params, attn_opt_state, a float32 [N] S's weights before its
      step, L_att float32 [], mean drift float32 [], corr(a, r) float32 [])``.
    """
    static, net, swept = state.static, state.net, state.swept
    (_, old_feats_x), _ = common.forward(net, state.old_params, state.old_batch_stats, x, train=False,
                                         return_features=True)
    old_feats_x = jax.lax.stop_gradient(old_feats_x)
    (_, cur_feats_x), _ = common.forward(net, net.params, net.batch_stats, x, train=False, return_features=True)
    cur_feats_x = jax.lax.stop_gradient(cur_feats_x)
    d = feature_drift(cur_feats_x, old_feats_x, static.drift_metric, static.feat_norm)
    r = jax.lax.stop_gradient(importance_targets(d, d[partner], static.importance_norm, swept["akr.importance_tau"],
                                                 static.importance_sign, valid=w))
    xj = x[partner]

    def att_loss_fn(ap):
        s = attention_scores(state, ap, x, old_feats_x)
        a = pair_weights(s, s[partner], static.attn_norm, swept["akr.attn_tau"])
        if static.attn_objective == "importance":
            return importance_loss(a, r, pw, static.attn_reg), a
        return max_drift_loss(state, a, x, xj, pw), a

    lr = None
    if static.attn_lr_decay:
        lr = swept["akr.attn_lr"] * net.optim.lr_at(net.task_step, net.task_steps, net.steps_per_epoch) / net.optim.lr
    params, opt, loss, a = update_attention(attention_tx(swept["akr.attn_lr"]), state.attn_params,
                                            state.attn_opt_state, att_loss_fn, lr)
    return params, opt, a, loss, jnp.mean(d), weighted_corr(a, r, pw)
