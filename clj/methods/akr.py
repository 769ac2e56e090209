"""Attentive Knowledge Replay (AKR) on top of iCaRL, and its plain-mixup baseline.

Source: Y.-L. Lee, D.-S. Chen, C.-Y. Lee, Y.-H. Tsai, W.-C. Chiu, "Data
Efficient Incremental Learning Via Attentive Knowledge Replay", IEEE SMC
2023 (abstract, method figure, results table; the official code was not
available, see ``shared/specs/akr.md``).  The iCaRL base is
:mod:`clj.methods.icarl` (herding memory, frozen previous model, CNN or NME
prediction).

What the paper fixes (spec Sec. 4.1) and this module implements:

* training pairs (x_i, x_j) drawn from the union of new data and exemplars
  are blended **globally** into one virtual image ``a_i x_i + a_j x_j``
  (one scalar per image) with the mixed label ``a_i e(y_i) + a_j e(y_j)``;
* the weights come from an attention module S with shared weights that
  scores each image of the pair (s_i, s_j), followed by a normalization over
  the pair (so ``a_i + a_j = 1``);
* S is trained so that its weights follow the samples' relative importance,
  which comes from how much their features changed between the previous
  phase's (old, frozen) model and the model being trained;
* the virtual samples and their soft targets replace the real ones in the
  iCaRL objective.

One ``train_step`` (all jitted, static shapes): the loop's B new-task images
plus R exemplars drawn from the memory (as :mod:`~clj.methods.icarl`) form
the batch of N = B + R augmented, normalised images; every row b is paired
with a partner pi(b) of the same batch; then

1. old model (eval BN, frozen) on ``[x; x_tilde]`` in one call: old features
   of x (drift) and old logits of the blended images (distillation);
2. current model in eval BN, stop-gradient: current features of x; drift
   ``d_b = ||n(f_cur(x_b)) - n(f_old(x_b))||``;
3. S on x: scores s, weights ``a_b = sigmoid((s_b - s_pi(b)) / tau)``,
   importance target ``r_b = d_b / (d_b + d_pi(b) + eps)``; L_att =
   BCE(a_b; r_b); one Adam step on S's params only;
4. classifier: one training forward on the blended images with weights
   ``stop_gradient(a)``, loss of ``target_mode``, one SGD step.

Decisions where the paper is silent (spec Sec. 4; each is a ``config.akr``
switch, defaults in :data:`AKR_DEFAULTS`):

* ``replay``: ``"attentive"`` (AKR), ``"mixup"`` (the paper's Mixup row: the
  same pipeline with ``a ~ Beta(beta_alpha)`` in every step, no S),
  ``"none"`` (plain iCaRL; identical to the ``icarl`` method).
* ``target_mode``: ``"mixed_ce_kd"`` (default; clj's iCaRL is PyCIL's CE +
  softened KD, so the blended sample gets CE over the seen classes against
  the mixed label, as the figure draws it, plus ``kd_weight`` x KD between
  the current and the old model's logits **on the blended image**) or
  ``"icarl_bce"`` (official iCaRL's sigmoid BCE whose old-class targets are
  replaced by the old model's sigmoid outputs on the blended image, current
  classes take the mixed label, unseen classes 0; ``bce_over`` =
  ``"seen"`` or ``"all"`` outputs).  With a weight of 1 both reduce exactly
  to their iCaRL.
* ``pair_mode``: ``"union_perm"`` (default; partner = a random permutation
  of the batch, standard mixup over the union) or ``"exemplar_new"`` (every
  new sample is paired with an exemplar of the batch and vice versa, the
  figure's example made a rule; falls back to ``union_perm`` in phase 0).
  ``mix_fraction``: probability that a row is blended (others stay real).
* ``attn_arch``: ``"trunk_copy"`` (S = a copy of the classifier's backbone,
  initialised from the old model at each phase start, eval-mode BN with the
  old statistics, then a zero-initialised linear layer D -> 1, so every pair
  starts at a = 0.5) or ``"feature_mlp"`` (a 2-layer MLP D -> hidden -> 1 on
  the old model's features; output layer zeroed at each phase start; cheap).
* ``attn_norm``: ``"softmax"`` (a_i = sigmoid((s_i - s_j)/tau)) or
  ``"ratio"`` (a_i = softplus(s_i) / (softplus(s_i) + softplus(s_j))).
* ``attn_objective``: ``"importance"`` (reading A: predict the normalised
  drift r) or ``"max_drift"`` (reading B: maximise the old/current feature
  disagreement of the blended image, gradient through the blend into a).
* ``drift_metric`` ``"l2"`` / ``"cosine"``, ``feat_norm`` (L2-normalise
  features first), ``importance_norm`` ``"ratio"`` / ``"softmax"``,
  ``importance_sign`` +1 (more drift, more weight) / -1 (inverted).
* ``warmup_epochs``: in phases >= 1, the first epochs blend with Beta
  weights while S already trains (drift is 0 when a phase starts);
  ``phase0_mix``: ``"random"`` (Beta mixup in phase 0, no old model) or
  ``"none"``.
* S's optimizer: Adam(``attn_lr``), moments reset at every phase start;
  ``attn_lr_decay`` follows the classifier's schedule.  The classification
  loss does not train S (``a`` is stop-gradient there).

Gradients of L_att reach only S; the old model is never updated; BN running
statistics change only through the classifier's training forward.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import struct

from clj.methods import cil_common as cc
from clj.methods import common
from clj.methods import icarl
from clj.methods.common import ModelState, TaskInfo
from clj.replay import exemplars as ex

REPLAYS = ("attentive", "mixup", "none")
TARGET_MODES = ("mixed_ce_kd", "icarl_bce")
BCE_OVER = ("seen", "all")
PAIR_MODES = ("union_perm", "exemplar_new")
ATTN_ARCHS = ("trunk_copy", "feature_mlp")
ATTN_NORMS = ("softmax", "ratio")
ATTN_OBJECTIVES = ("importance", "max_drift")
DRIFT_METRICS = ("l2", "cosine")
IMPORTANCE_NORMS = ("ratio", "softmax")
PHASE0_MIX = ("random", "none")
EPS = 1e-8

AKR_DEFAULTS = dict(
    replay="attentive", target_mode="mixed_ce_kd", bce_over="seen", pair_mode="union_perm",
    mix_fraction=1.0, beta_alpha=(1.0, 1.0), warmup_epochs=20, phase0_mix="random",
    attn_arch="trunk_copy", attn_hidden=64, attn_norm="softmax", attn_tau=1.0, attn_lr=2e-6,
    attn_lr_decay=False, attn_objective="importance", attn_reg=0.0, drift_metric="l2", feat_norm=True,
    importance_norm="ratio", importance_tau=1.0, importance_sign=1)


def akr_config(**overrides) -> ml_collections.ConfigDict:
    """A ``config.akr`` block with :data:`AKR_DEFAULTS` updated by ``overrides``."""
    d = dict(AKR_DEFAULTS)
    d.update(overrides)
    return ml_collections.ConfigDict(d)


def _choice(name, value, valid):
    from clj.config import ConfigError

    if value not in valid:
        raise ConfigError(f"akr.{name}={value!r} is unknown; valid: {', '.join(valid)}.")


def get_akr(config) -> ml_collections.ConfigDict:
    """``config.akr`` filled with defaults for missing fields, validated.

    Raises:
      clj.config.ConfigError: a bad value, naming it and what is valid.
    """
    from clj.config import ConfigError

    c = dict(AKR_DEFAULTS)
    if "akr" in config:
        c.update(config.akr.to_dict())
    unknown = sorted(set(c) - set(AKR_DEFAULTS))
    if unknown:
        raise ConfigError(f"akr.{unknown[0]} is not a field; valid fields: {', '.join(sorted(AKR_DEFAULTS))}.")
    for name, valid in (("replay", REPLAYS), ("target_mode", TARGET_MODES), ("bce_over", BCE_OVER),
                        ("pair_mode", PAIR_MODES), ("attn_arch", ATTN_ARCHS), ("attn_norm", ATTN_NORMS),
                        ("attn_objective", ATTN_OBJECTIVES), ("drift_metric", DRIFT_METRICS),
                        ("importance_norm", IMPORTANCE_NORMS), ("phase0_mix", PHASE0_MIX)):
        _choice(name, c[name], valid)
    if not 0.0 <= float(c["mix_fraction"]) <= 1.0:
        raise ConfigError(f"akr.mix_fraction={c['mix_fraction']} is invalid: valid is 0 <= mix_fraction <= 1.")
    ba = tuple(float(v) for v in c["beta_alpha"])
    if len(ba) != 2 or min(ba) <= 0:
        raise ConfigError(f"akr.beta_alpha={c['beta_alpha']} is invalid: two Beta shape parameters, both > 0.")
    if int(c["warmup_epochs"]) < 0:
        raise ConfigError(f"akr.warmup_epochs={c['warmup_epochs']} is invalid: it must be >= 0.")
    for k in ("attn_tau", "importance_tau"):
        if float(c[k]) <= 0:
            raise ConfigError(f"akr.{k}={c[k]} is invalid: the temperature must be > 0.")
    if float(c["attn_lr"]) < 0:
        raise ConfigError(f"akr.attn_lr={c['attn_lr']} is invalid: it must be >= 0.")
    if int(c["attn_hidden"]) < 1:
        raise ConfigError(f"akr.attn_hidden={c['attn_hidden']} is invalid: it must be >= 1.")
    if int(c["importance_sign"]) not in (1, -1):
        raise ConfigError(f"akr.importance_sign={c['importance_sign']} is invalid: valid: 1, -1.")
    c["beta_alpha"] = ba
    return ml_collections.ConfigDict(c)


@dataclasses.dataclass(frozen=True)
class Hparams(icarl.Hparams):
    """iCaRL's static hyperparameters plus the ``config.akr`` fields (module doc)."""

    replay: str = "attentive"
    target_mode: str = "mixed_ce_kd"
    bce_over: str = "seen"
    pair_mode: str = "union_perm"
    mix_fraction: float = 1.0
    beta_alpha: tuple[float, float] = (1.0, 1.0)
    warmup_epochs: int = 20
    phase0_mix: str = "random"
    attn_arch: str = "trunk_copy"
    attn_hidden: int = 64
    attn_norm: str = "softmax"
    attn_tau: float = 1.0
    attn_lr: float = 2e-6
    attn_lr_decay: bool = False
    attn_objective: str = "importance"
    attn_reg: float = 0.0
    drift_metric: str = "l2"
    feat_norm: bool = True
    importance_norm: str = "ratio"
    importance_tau: float = 1.0
    importance_sign: int = 1
    feat_dim: int = 64


@struct.dataclass
class State:
    """iCaRL's state plus the attention module.

    Attributes:
      net, old_params, old_batch_stats, mem: as :class:`clj.methods.icarl.State`.
      attn_params: S's parameters (``trunk_copy``: ``{"trunk": backbone+head
        params, "w": [D], "b": []}``; ``feature_mlp``: ``{"w1": [D, H],
        "b1": [H], "w2": [H], "b2": []}``).
      attn_opt_state: Adam moments of S (reset at each phase start).
      attn_stats: float32 [3] of the last step: mean |a - 0.5| of the
        blended rows, mean drift, L_att (diagnostics for ``result_extras``).
      hp: static hyperparameters.
    """

    net: ModelState
    old_params: common.PyTree
    old_batch_stats: common.PyTree
    mem: ex.ExemplarMemory
    attn_params: common.PyTree
    attn_opt_state: common.PyTree
    attn_stats: jax.Array
    hp: Hparams = struct.field(pytree_node=False)


# ------------------------------------------------------------ pure pieces
def pair_weights(s_i: jax.Array, s_j: jax.Array, norm: str = "softmax", tau: float = 1.0) -> jax.Array:
    """Blending weight a_i of the first image of each pair (a_j = 1 - a_i).

    Args:
      s_i, s_j: float32 [N] attention scores of the two images.
      norm: ``"softmax"`` (``sigmoid((s_i - s_j) / tau)``, the pair's softmax)
        or ``"ratio"`` (``softplus(s_i) / (softplus(s_i) + softplus(s_j))``).

    Returns:
      float32 [N] in (0, 1); equal scores give 0.5; swapping the inputs gives
      ``1 - a_i``.  (AKR figure, "Normalization" block; spec Sec. 4.4.)
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


def feature_drift(f_cur: jax.Array, f_old: jax.Array, metric: str = "l2", normalize: bool = True) -> jax.Array:
    """Per-sample feature change between the current and the old model, float32 [N].

    ``l2``: ``||n(f_cur) - n(f_old)||`` (n = L2 normalisation when
    ``normalize``); ``cosine``: ``1 - cos(f_cur, f_old)``.  Zero when the two
    features are equal.  (AKR abstract: importance from feature change across
    phases; spec Sec. 4.6.)
    """
    f_cur, f_old = f_cur.astype(jnp.float32), f_old.astype(jnp.float32)
    if metric == "cosine":
        return 1.0 - jnp.sum(ex.l2_normalize(f_cur) * ex.l2_normalize(f_old), -1)
    if normalize:
        f_cur, f_old = ex.l2_normalize(f_cur), ex.l2_normalize(f_old)
    return jnp.sqrt(jnp.sum((f_cur - f_old) ** 2, -1) + 1e-12) * (jnp.any(f_cur != f_old, -1))


def importance_targets(d_i: jax.Array, d_j: jax.Array, norm: str = "ratio", tau: float = 1.0,
                       sign: int = 1) -> jax.Array:
    """Importance r_i of the first image of each pair (r_j = 1 - r_i), float32 [N].

    ``ratio``: ``d_i / (d_i + d_j + eps)``, 0.5 when both drifts are 0;
    ``softmax``: ``sigmoid((d_i - d_j) / tau)``.  ``sign=-1`` gives ``1 - r``
    (less drift, more weight).
    """
    if norm == "ratio":
        tot = d_i + d_j
        r = jnp.where(tot > EPS, d_i / (tot + EPS), 0.5)
    elif norm == "softmax":
        r = jax.nn.sigmoid((d_i - d_j) / tau)
    else:
        raise ValueError(f"importance_norm={norm!r} is unknown; valid: {', '.join(IMPORTANCE_NORMS)}.")
    return r if sign > 0 else 1.0 - r


def soft_cross_entropy(logits: jax.Array, targets: jax.Array, num: int, weights: jax.Array) -> jax.Array:
    """``-sum_c T_c log softmax(z)_c`` over the first ``num`` classes, weighted mean over rows."""
    lp = jax.nn.log_softmax(cc.mask_logits(logits.astype(jnp.float32), num), -1)
    col = jnp.arange(logits.shape[-1]) < num
    per = -jnp.sum(jnp.where(col, targets * lp, 0.0), -1)
    w = weights.astype(jnp.float32)
    return jnp.sum(per * w) / jnp.maximum(jnp.sum(w), 1.0)


def icarl_bce(logits, old_logits, mixed, known: int, total: int, over: str, weights) -> jax.Array:
    """Official iCaRL's loss on (blended) samples (Rebuffi et al. 2017, Sec. 2.4;
    spec Sec. 3.3 / 4.5): sigmoid BCE against T with T = sigmoid(old logits)
    on the ``known`` old classes, the mixed label on ``[known, total)``, 0
    above; averaged over the seen outputs (``over="seen"``) or all outputs,
    then over the weighted rows.  float32 []."""
    C = logits.shape[-1]
    col = jnp.arange(C)
    T = jnp.where(col < total, mixed, 0.0)
    if old_logits is not None and known > 0:
        T = jnp.where(col < known, jax.nn.sigmoid(old_logits.astype(jnp.float32)), T)
    bce = optax.sigmoid_binary_cross_entropy(logits.astype(jnp.float32), T)
    if over == "seen":
        per = jnp.sum(jnp.where(col < total, bce, 0.0), -1) / total
    else:
        per = jnp.mean(bce, -1)
    w = weights.astype(jnp.float32)
    return jnp.sum(per * w) / jnp.maximum(jnp.sum(w), 1.0)


# --------------------------------------------------------------- protocol
def _zero_head(D: int):
    return {"w": jnp.zeros((D,), jnp.float32), "b": jnp.zeros((), jnp.float32)}


def init_attention(rng: jax.Array, hp: Hparams, net: ModelState):
    """S's initial parameters (see :class:`State`)."""
    D = hp.feat_dim
    if hp.attn_arch == "trunk_copy":
        return {"trunk": net.params, **_zero_head(D)}
    H = hp.attn_hidden
    w1 = jax.random.normal(rng, (D, H), jnp.float32) * jnp.sqrt(2.0 / D)
    return {"w1": w1, "b1": jnp.zeros((H,), jnp.float32), "w2": jnp.zeros((H,), jnp.float32),
            "b2": jnp.zeros((), jnp.float32)}


def init(rng: jax.Array, config, scenario) -> State:
    """A fresh State: iCaRL's (``config.cil`` budget, ``config.model``) plus S.

    Raises:
      clj.config.ConfigError: bad ``config.cil`` or ``config.akr`` values.
    """
    a = get_akr(config)
    k_net, k_att = jax.random.split(rng)
    base = icarl.init(k_net, config, scenario, "icarl")
    fields = {k: (tuple(v) if isinstance(v, list) else v) for k, v in a.to_dict().items()}
    fields["beta_alpha"] = tuple(float(v) for v in a.beta_alpha)
    hp = Hparams(**{f.name: getattr(base.hp, f.name) for f in dataclasses.fields(icarl.Hparams)},
                 **fields, feat_dim=int(base.net.model.feature_dim))
    net = base.net
    attn = init_attention(k_att, hp, net)
    return State(net=net, old_params=base.old_params, old_batch_stats=base.old_batch_stats, mem=base.mem,
                 attn_params=attn, attn_opt_state=optax.scale_by_adam().init(attn),
                 attn_stats=jnp.zeros((3,), jnp.float32), hp=hp)


def begin_task(state: State, task: TaskInfo) -> State:
    """iCaRL's phase start, then S re-initialised: ``trunk_copy`` copies the
    old model's params and zeroes the score layer; ``feature_mlp`` zeroes its
    output layer; Adam moments reset."""
    hp = dataclasses.replace(state.hp, st=icarl.task_statics(state.hp, task))
    net = state.net.replace(optim=hp.init_optim if task.task_id == 0 else hp.update_optim)
    net = common.begin_task_model(net, task)
    attn = dict(state.attn_params)
    if hp.attn_arch == "trunk_copy":
        attn.update({"trunk": state.old_params, **_zero_head(hp.feat_dim)})
    else:
        attn.update({"w2": jnp.zeros_like(attn["w2"]), "b2": jnp.zeros_like(attn["b2"])})
    return state.replace(net=net, hp=hp, attn_params=attn, attn_opt_state=optax.scale_by_adam().init(attn))


def attention_scores(state: State, attn_params, x: jax.Array, old_feats: jax.Array) -> jax.Array:
    """S's scores float32 [N]: ``trunk_copy`` on the images x (eval BN with
    the old statistics), ``feature_mlp`` on the old model's features."""
    hp = state.hp
    if hp.attn_arch == "trunk_copy":
        (_, f), _ = common.forward(state.net, attn_params["trunk"], state.old_batch_stats, x, train=False,
                                   return_features=True)
        return f.astype(jnp.float32) @ attn_params["w"] + attn_params["b"]
    h = jax.nn.relu(old_feats.astype(jnp.float32) @ attn_params["w1"] + attn_params["b1"])
    return h @ attn_params["w2"] + attn_params["b2"]


def _pairs(hp: Hparams, key: jax.Array, B: int, N: int) -> jax.Array:
    """int32 [N] partner of every row of the batch (module doc, pair_mode)."""
    R = N - B
    if hp.pair_mode == "exemplar_new" and R > 0 and B > 0:
        k1, k2 = jax.random.split(key)
        new_p = B + jax.random.randint(k1, (B,), 0, R)
        mem_p = jax.random.randint(k2, (R,), 0, B)
        return jnp.concatenate([new_p, mem_p]).astype(jnp.int32)
    return jax.random.permutation(key, N).astype(jnp.int32)


def _step(state: State, batch: dict, rng: jax.Array, force_weight: float | None = None):
    """The train step; ``force_weight`` (tests) fixes every blending weight."""
    hp, st, net = state.hp, state.hp.st, state.net
    x, y = batch["x"], batch["y"]
    B = y.shape[0]
    w = jnp.ones(y.shape, bool)
    if st.replay > 0:  # the same exemplar draw as icarl.train_step (same key)
        rx, ry, rv = icarl._draw(state, rng, st.replay)
        x, y, w = jnp.concatenate([x, rx]), jnp.concatenate([y, ry]), jnp.concatenate([w, rv])
    N = y.shape[0]
    k_pair, k_beta, k_frac = jax.random.split(jax.random.fold_in(rng, 7), 3)
    has_old = st.known > 0
    mixing = hp.replay != "none" and (has_old or hp.phase0_mix == "random" or force_weight is not None)
    attentive = hp.replay == "attentive" and has_old
    zero = jnp.zeros((), jnp.float32)

    partner = _pairs(hp, k_pair, B, N) if mixing else jnp.arange(N, dtype=jnp.int32)
    xj, yj, wj = x[partner], y[partner], w[partner]

    # --- importance from feature drift, and S's update -------------------
    old_feats_x = None
    att_loss, drift_mean = zero, zero
    attn_params, attn_opt = state.attn_params, state.attn_opt_state
    a_att = None
    if attentive:
        (_, old_feats_x), _ = common.forward(net, state.old_params, state.old_batch_stats, x, train=False,
                                             return_features=True)
        old_feats_x = jax.lax.stop_gradient(old_feats_x)
        (_, cur_feats_x), _ = common.forward(net, net.params, net.batch_stats, x, train=False,
                                             return_features=True)
        cur_feats_x = jax.lax.stop_gradient(cur_feats_x)
        d = feature_drift(cur_feats_x, old_feats_x, hp.drift_metric, hp.feat_norm)
        drift_mean = jnp.mean(d)
        r = jax.lax.stop_gradient(importance_targets(d, d[partner], hp.importance_norm, hp.importance_tau,
                                                     hp.importance_sign))
        pw = (w & wj).astype(jnp.float32)

        def att_loss_fn(ap):
            s = attention_scores(state, ap, x, old_feats_x)
            a = pair_weights(s, s[partner], hp.attn_norm, hp.attn_tau)
            if hp.attn_objective == "importance":
                la = jnp.log(jnp.clip(a, EPS, 1.0))
                lb = jnp.log(jnp.clip(1.0 - a, EPS, 1.0))
                per = -(r * la + (1.0 - r) * lb)
            else:  # reading B: maximise the disagreement of old and current features on the blend
                xt = blend(x, xj, a)
                (_, fo), _ = common.forward(net, state.old_params, state.old_batch_stats, xt, train=False,
                                            return_features=True)
                (_, fc), _ = common.forward(net, jax.lax.stop_gradient(net.params), net.batch_stats, xt,
                                            train=False, return_features=True)
                per = -jnp.sum((ex.l2_normalize(fc) - ex.l2_normalize(jax.lax.stop_gradient(fo))) ** 2, -1)
            if hp.attn_reg:
                ent = -(a * jnp.log(jnp.clip(a, EPS, 1.0)) + (1 - a) * jnp.log(jnp.clip(1 - a, EPS, 1.0)))
                per = per - hp.attn_reg * ent
            return jnp.sum(per * pw) / jnp.maximum(jnp.sum(pw), 1.0), a

        (att_loss, a_att), g = jax.value_and_grad(att_loss_fn, has_aux=True)(attn_params)
        lr = jnp.asarray(hp.attn_lr, jnp.float32)
        if hp.attn_lr_decay:
            base_lr = net.optim.lr
            lr = lr * net.optim.lr_at(net.task_step, net.task_steps, net.steps_per_epoch) / base_lr
        upd, attn_opt = optax.scale_by_adam().update(g, attn_opt, attn_params)
        attn_params = jax.tree_util.tree_map(lambda p, u: p - lr * u, attn_params, upd)

    # --- blending weights --------------------------------------------------
    if force_weight is not None:
        a = jnp.full((N,), force_weight, jnp.float32)
    elif mixing:
        a_beta = jax.random.beta(k_beta, hp.beta_alpha[0], hp.beta_alpha[1], (N,)).astype(jnp.float32)
        a = a_beta
        if attentive:
            epoch = net.task_step // jnp.maximum(net.steps_per_epoch, 1)
            a = jnp.where(epoch >= hp.warmup_epochs, jax.lax.stop_gradient(a_att), a_beta)
        if hp.mix_fraction < 1.0:
            a = jnp.where(jax.random.bernoulli(k_frac, hp.mix_fraction, (N,)), a, 1.0)
    else:
        a = jnp.ones((N,), jnp.float32)
    a = jax.lax.stop_gradient(a)
    blended = a < 1.0
    xt = blend(x, xj, a) if mixing or force_weight is not None else x
    T = mixed_targets(y, yj, a, hp.num_classes)
    rw = w & jnp.where(a < 1.0, wj, True)

    # --- old model on the blended images (distillation targets) ------------
    old_logits = None
    if has_old:
        old_logits, _ = common.forward(net, state.old_params, state.old_batch_stats, xt, train=False)
        old_logits = jax.lax.stop_gradient(old_logits)

    def loss_fn(params):
        logits, bs = common.forward(net, params, net.batch_stats, xt, train=True)
        if hp.target_mode == "mixed_ce_kd":
            if mixing or force_weight is not None:
                ce = soft_cross_entropy(logits, T, st.total, rw)
            else:  # plain iCaRL: exactly icarl.train_step's loss
                ce = common.cross_entropy(cc.mask_logits(logits, st.total), y, rw)
            kd = cc.kd_loss(logits, old_logits, st.known, hp.kd_T, rw) if has_old else zero
            loss = ce + hp.kd_weight * kd
        else:
            ce = icarl_bce(logits, old_logits, T, st.known, st.total, hp.bce_over, rw)
            kd, loss = zero, ce
        return loss, (bs, logits, ce, kd)

    (loss, (bs, logits, ce, kd)), grads = jax.value_and_grad(loss_fn, has_aux=True)(net.params)
    mask = None if (hp.target_mode == "icarl_bce" and hp.bce_over == "all") else \
        icarl.head_update_mask(net.params, st.total)
    new_net = common.apply_gradients(net, grads, bs, mask)
    nb = jnp.sum(blended)
    abs_a = jnp.sum(jnp.where(blended, jnp.abs(a - 0.5), 0.0)) / jnp.maximum(nb, 1)
    acc = jnp.mean((jnp.argmax(cc.mask_logits(logits, st.total)[:B], -1) == batch["y"]).astype(jnp.float32))
    stats = jnp.stack([abs_a, drift_mean, att_loss]).astype(jnp.float32)
    new = state.replace(net=new_net, attn_params=attn_params, attn_opt_state=attn_opt, attn_stats=stats)
    return new, {"loss": loss, "ce": ce, "kd": kd, "acc": acc, "att": att_loss, "abs_a": abs_a,
                 "drift": drift_mean}


def train_step(state: State, batch: dict, rng: jax.Array):
    """One AKR step (module doc, items 1-4).

    Args:
      state: the State.
      batch: ``x`` float32 [B, H, W, C] augmented and normalised, ``y`` int32
        [B] (the loop's batch of the current task).
      rng: PRNG key.

    Returns:
      (State, metrics): ``loss``, ``ce``, ``kd``, ``acc``, ``att`` (L_att),
      ``abs_a`` (mean |a - 0.5| of the blended rows), ``drift`` (mean feature
      drift of the batch); float32 scalars.
    """
    return _step(state, batch, rng)


def end_task(state: State, task_data: dict) -> State:
    """iCaRL's phase end: herding memory update, NME means, old-model snapshot."""
    return icarl.end_task(state, task_data)


def predict(state: State, x: jax.Array, task_id: jax.Array | None = None) -> jax.Array:
    """float32 [B, C]: the classifier's logits (``cil.predict="cnn"``) or NME scores."""
    return icarl.predict(state, x, task_id)


def memory_bytes(state: State) -> dict:
    """iCaRL's accounting (exemplar bytes + 4 B per backbone parameter); S and
    the old model are training-time state and not counted (see ``result_extras``)."""
    return icarl.memory_bytes(state)


def result_extras(state: State) -> dict:
    hp = state.hp
    out = icarl.result_extras(state)
    out.update({"replay": hp.replay, "target_mode": hp.target_mode, "attn_arch": hp.attn_arch,
                "attn_param_bytes": common.param_bytes(state.attn_params),
                "last_step_abs_a": float(state.attn_stats[0]), "last_step_drift": float(state.attn_stats[1]),
                "last_step_att_loss": float(state.attn_stats[2])})
    return out


def _spec():
    from clj.methods.api import Capabilities, MethodSpec

    return MethodSpec(init=init, begin_task=begin_task, train_step=train_step, end_task=end_task,
                      predict=predict, capabilities=Capabilities(static_task_info=True, heavy_step=True),
                      memory_bytes=memory_bytes, result_extras=result_extras)


SPEC = _spec()
