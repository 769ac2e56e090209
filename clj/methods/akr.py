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
   importance target r_b from the pair's drifts (default ``zscore``: the
   drifts standardised over the batch, ``r_b = sigmoid((z_b - z_pi(b)) /
   importance_tau)``); L_att = BCE(a_b; r_b); one optax Adam step on S's
   trainable params only (``attn_train``);
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
* ``attn_train``: ``"head"`` (default: only S's score layer trains; the
  trunk copy stays the frozen old model, so its eval-mode BN statistics are
  the ones its weights were trained with, and its features are the old
  model's features already computed for the drift) or ``"all"`` (the whole
  trunk copy trains while its BN statistics stay the old ones).
* ``drift_metric`` ``"l2"`` / ``"cosine"``, ``feat_norm`` (L2-normalise
  features first), ``importance_norm``: ``"zscore"`` (default; drifts
  standardised over the batch's valid rows, then the pair's softmax at
  ``importance_tau``), ``"softmax"`` (the pair's softmax of the raw drifts)
  or ``"ratio"`` (``d_i / (d_i + d_j)``; the drifts of a batch are close to
  one another, so this stays within a few hundredths of 0.5 and the learned
  weight with it), ``importance_sign`` +1 (more drift, more weight) / -1
  (inverted).
* ``warmup_epochs``: in phases >= 1, the first epochs blend with Beta
  weights while S already trains (drift is 0 when a phase starts);
  ``phase0_mix``: ``"random"`` (Beta mixup in phase 0, no old model) or
  ``"none"``.
* S's optimizer: ``optax.adam(attn_lr)``, state reset at every phase start;
  ``attn_lr_decay`` follows the classifier's schedule (through
  ``optax.inject_hyperparams``).  The classification
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
from clj.methods import icarl, sections
from clj.methods.sections import akr_config  # noqa: F401 (the one builder of the block; JAX-free)
from clj.methods.common import ModelState, TaskInfo
from clj.replay import exemplars as ex

# The valid values and defaults of config.akr live in the JAX-free clj.methods.sections.
REPLAYS = sections.AKR_REPLAYS
TARGET_MODES = sections.AKR_TARGET_MODES
BCE_OVER = sections.AKR_BCE_OVER
PAIR_MODES = sections.AKR_PAIR_MODES
ATTN_ARCHS = sections.AKR_ATTN_ARCHS
ATTN_NORMS = sections.AKR_ATTN_NORMS
ATTN_OBJECTIVES = sections.AKR_ATTN_OBJECTIVES
DRIFT_METRICS = sections.AKR_DRIFT_METRICS
IMPORTANCE_NORMS = sections.AKR_IMPORTANCE_NORMS
ATTN_TRAINS = sections.AKR_ATTN_TRAINS
PHASE0_MIX = sections.AKR_PHASE0_MIX
EPS = 1e-8

AKR_DEFAULTS = dict(sections.AKR.defaults)


def get_akr(config) -> ml_collections.ConfigDict:
    """``config.akr`` filled with defaults for missing fields, validated
    (:data:`clj.methods.sections.AKR`).

    Raises:
      clj.config.ConfigError: a bad value, naming it and what is valid.
    """
    c = sections.get_section("akr", config)
    c["beta_alpha"] = tuple(float(v) for v in c["beta_alpha"])
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
    attn_train: str = "head"
    importance_norm: str = "zscore"
    importance_tau: float = 1.0
    importance_sign: int = 1
    feat_dim: int = 64


@struct.dataclass
class State:
    """iCaRL's state plus the attention module.

    Attributes:
      net, old_params, old_batch_stats, mem: as :class:`clj.methods.icarl.State`.
      attn_params: S's trainable parameters (``trunk_copy``: ``{"w": [D],
        "b": []}`` on the old model's features with ``attn_train="head"``,
        plus ``"trunk"`` (backbone+head params) with ``"all"``;
        ``feature_mlp``: ``{"w1": [D, H], "b1": [H], "w2": [H], "b2": []}``).
      attn_opt_state: optax Adam state of S (reset at each phase start).
      attn_stats: float32 [5] of the last step: mean |a - 0.5| of the
        blended rows, mean drift, L_att, the exemplar's mean weight in
        new/exemplar pairs (NaN without such pairs), corr(a, r) over the
        valid pairs (0 when undefined).
      weight_acc: float32 [T, 4] per phase, over the steps whose blending
        weights were used (mixup: every step; AKR: after the warm-up):
        sum of |a - 0.5| over blended rows, their count, sum of the
        exemplar's weight over blended new/exemplar pairs, their count.
      hp: static hyperparameters.
    """

    net: ModelState
    old_params: common.PyTree
    old_batch_stats: common.PyTree
    mem: ex.ExemplarMemory
    attn_params: common.PyTree
    attn_opt_state: common.PyTree
    attn_stats: jax.Array
    weight_acc: jax.Array
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


def importance_targets(d_i: jax.Array, d_j: jax.Array, norm: str = "zscore", tau: float = 1.0,
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
      tau: temperature (> 0) of ``zscore`` and ``softmax``.
      sign: ``-1`` gives ``1 - r`` (less drift, more weight).
      valid: bool [N] rows that count in the batch statistics (``zscore``).

    The paper says the weights follow each sample's relative importance from
    its feature change across phases (AKR abstract); the mapping from drift
    to a pair weight is not given (spec Sec. 4.6, open), hence the options.

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


# ------------------------------------------------------ attention module S
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
    is at a = r (spec Sec. 4.7, reading A)."""
    la = jnp.log(jnp.clip(a, EPS, 1.0))
    lb = jnp.log(jnp.clip(1.0 - a, EPS, 1.0))
    per = -(r * la + (1.0 - r) * lb)
    if reg:
        per = per + reg * (a * la + (1 - a) * lb)
    v = valid.astype(jnp.float32)
    return jnp.sum(per * v) / jnp.maximum(jnp.sum(v), 1.0)


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


def weighted_corr(a: jax.Array, r: jax.Array, valid: jax.Array) -> jax.Array:
    """Pearson correlation of a and r over the ``valid`` rows, float32 [];
    0 when either is constant there."""
    v = valid.astype(jnp.float32)
    n = jnp.maximum(jnp.sum(v), 1.0)
    da, dr = a - jnp.sum(a * v) / n, r - jnp.sum(r * v) / n
    cov = jnp.sum(v * da * dr)
    den = jnp.sqrt(jnp.sum(v * da * da) * jnp.sum(v * dr * dr))
    return jnp.where(den > 1e-12, cov / jnp.where(den > 1e-12, den, 1.0), 0.0)


# --------------------------------------------------------------- protocol
def _zero_head(D: int):
    return {"w": jnp.zeros((D,), jnp.float32), "b": jnp.zeros((), jnp.float32)}


def init_attention(rng: jax.Array, hp: Hparams, net: ModelState):
    """S's initial trainable parameters (see :class:`State`)."""
    D = hp.feat_dim
    if hp.attn_arch == "trunk_copy":
        return {"trunk": net.params, **_zero_head(D)} if hp.attn_train == "all" else _zero_head(D)
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
                 attn_params=attn, attn_opt_state=attention_tx(hp.attn_lr).init(attn),
                 attn_stats=jnp.zeros((5,), jnp.float32),
                 weight_acc=jnp.zeros((scenario.num_tasks, 4), jnp.float32), hp=hp)


def begin_task(state: State, task: TaskInfo) -> State:
    """iCaRL's phase start, then S re-initialised: ``trunk_copy`` zeroes the
    score layer (and, with ``attn_train="all"``, copies the old model's
    params into the trunk); ``feature_mlp`` zeroes its output layer; the
    optimizer state is reset."""
    hp = dataclasses.replace(state.hp, st=icarl.task_statics(state.hp, task))
    net = state.net.replace(optim=hp.init_optim if task.task_id == 0 else hp.update_optim)
    net = common.begin_task_model(net, task)
    attn = dict(state.attn_params)
    if hp.attn_arch == "trunk_copy":
        attn.update(_zero_head(hp.feat_dim))
        if hp.attn_train == "all":
            attn["trunk"] = state.old_params
    else:
        attn.update({"w2": jnp.zeros_like(attn["w2"]), "b2": jnp.zeros_like(attn["b2"])})
    return state.replace(net=net, hp=hp, attn_params=attn, attn_opt_state=attention_tx(hp.attn_lr).init(attn))


def attention_scores(state: State, attn_params, x: jax.Array, old_feats: jax.Array) -> jax.Array:
    """S's scores float32 [N]: on the old model's features (``feature_mlp``,
    and ``trunk_copy`` with ``attn_train="head"``, whose frozen trunk is the
    old model), or the trained trunk copy on the images x (``"all"``; eval
    BN with the old statistics)."""
    if "trunk" in attn_params:
        (_, f), _ = common.forward(state.net, attn_params["trunk"], state.old_batch_stats, x, train=False,
                                   return_features=True)
        return head_scores({"w": attn_params["w"], "b": attn_params["b"]}, f)
    return head_scores(attn_params, old_feats)


def _pairs(hp: Hparams, key: jax.Array, B: int, N: int) -> jax.Array:
    """int32 [N] partner of every row of the batch (module doc, pair_mode)."""
    R = N - B
    if hp.pair_mode == "exemplar_new" and R > 0 and B > 0:
        k1, k2 = jax.random.split(key)
        new_p = B + jax.random.randint(k1, (B,), 0, R)
        mem_p = jax.random.randint(k2, (R,), 0, B)
        return jnp.concatenate([new_p, mem_p]).astype(jnp.int32)
    return jax.random.permutation(key, N).astype(jnp.int32)


def _step(state: State, batch: dict, rng: jax.Array):
    """The train step (module doc, items 1-4)."""
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
    mixing = hp.replay != "none" and (has_old or hp.phase0_mix == "random")
    attentive = hp.replay == "attentive" and has_old
    zero = jnp.zeros((), jnp.float32)

    partner = _pairs(hp, k_pair, B, N) if mixing else jnp.arange(N, dtype=jnp.int32)
    xj, yj, wj = x[partner], y[partner], w[partner]
    pw = w & wj

    # --- importance from feature drift, and S's update -------------------
    att_loss, drift_mean, corr = zero, zero, zero
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
                                                     hp.importance_sign, valid=w))

        def att_loss_fn(ap):
            s = attention_scores(state, ap, x, old_feats_x)
            a = pair_weights(s, s[partner], hp.attn_norm, hp.attn_tau)
            if hp.attn_objective == "importance":
                return importance_loss(a, r, pw, hp.attn_reg), a
            # reading B: maximise the disagreement of old and current features on the blend
            xt = blend(x, xj, a)
            (_, fo), _ = common.forward(net, state.old_params, state.old_batch_stats, xt, train=False,
                                        return_features=True)
            (_, fc), _ = common.forward(net, jax.lax.stop_gradient(net.params), net.batch_stats, xt,
                                        train=False, return_features=True)
            per = -jnp.sum((ex.l2_normalize(fc) - ex.l2_normalize(jax.lax.stop_gradient(fo))) ** 2, -1)
            if hp.attn_reg:
                per = per + hp.attn_reg * (a * jnp.log(jnp.clip(a, EPS, 1.0))
                                           + (1 - a) * jnp.log(jnp.clip(1 - a, EPS, 1.0)))
            v = pw.astype(jnp.float32)
            return jnp.sum(per * v) / jnp.maximum(jnp.sum(v), 1.0), a

        lr = None
        if hp.attn_lr_decay:
            lr = hp.attn_lr * net.optim.lr_at(net.task_step, net.task_steps, net.steps_per_epoch) / net.optim.lr
        attn_params, attn_opt, att_loss, a_att = update_attention(attention_tx(hp.attn_lr), attn_params,
                                                                  attn_opt, att_loss_fn, lr)
        corr = weighted_corr(a_att, r, pw)

    # --- blending weights --------------------------------------------------
    in_use = jnp.asarray(mixing and has_old)
    if mixing:
        a_beta = jax.random.beta(k_beta, hp.beta_alpha[0], hp.beta_alpha[1], (N,)).astype(jnp.float32)
        a = a_beta
        if attentive:
            epoch = net.task_step // jnp.maximum(net.steps_per_epoch, 1)
            in_use = epoch >= hp.warmup_epochs
            a = jnp.where(in_use, jax.lax.stop_gradient(a_att), a_beta)
        if hp.mix_fraction < 1.0:
            a = jnp.where(jax.random.bernoulli(k_frac, hp.mix_fraction, (N,)), a, 1.0)
    else:
        a = jnp.ones((N,), jnp.float32)
    a = jax.lax.stop_gradient(a)
    blended = a < 1.0
    xt = blend(x, xj, a) if mixing else x
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
            if mixing:
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

    # --- diagnostics: spread of the used weights, the exemplars' share ------
    counted = blended & pw
    nb = jnp.sum(counted.astype(jnp.float32))
    abs_sum = jnp.sum(jnp.where(counted, jnp.abs(a - 0.5), 0.0))
    abs_a = abs_sum / jnp.maximum(nb, 1)
    ex_sum, ex_n = exemplar_share(a, partner, B, counted)
    share = jnp.where(ex_n > 0, ex_sum / jnp.maximum(ex_n, 1.0), jnp.nan)
    add = jnp.where(in_use, jnp.stack([abs_sum, nb, ex_sum, ex_n]), 0.0)
    weight_acc = state.weight_acc.at[st.task].add(add.astype(jnp.float32))
    acc = jnp.mean((jnp.argmax(cc.mask_logits(logits, st.total)[:B], -1) == batch["y"]).astype(jnp.float32))
    stats = jnp.stack([abs_a, drift_mean, att_loss, share, corr]).astype(jnp.float32)
    new = state.replace(net=new_net, attn_params=attn_params, attn_opt_state=attn_opt, attn_stats=stats,
                        weight_acc=weight_acc)
    return new, {"loss": loss, "ce": ce, "kd": kd, "acc": acc, "att": att_loss, "abs_a": abs_a,
                 "drift": drift_mean, "exemplar_weight": share, "corr_a_r": corr}


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
      drift of the batch), ``exemplar_weight`` (the exemplar's mean weight
      in blended new/exemplar pairs; NaN without such pairs), ``corr_a_r``
      (corr of S's weights and the importance targets); float32 scalars.
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
    """iCaRL's extras plus the blending diagnostics of one seed's host State:
    per phase, the mean |a - 0.5| of the blended rows and the exemplar's mean
    weight in new/exemplar pairs, over the steps whose weights were used
    (None where nothing was counted), their means over phases >= 1, and
    the last step's values."""
    import numpy as np

    hp = state.hp
    out = icarl.result_extras(state)
    acc = np.asarray(state.weight_acc, np.float64)
    abs_a = [float(s / n) if n > 0 else None for s, n in acc[:, :2]]
    share = [float(s / n) if n > 0 else None for s, n in acc[:, 2:]]
    tot = acc[1:].sum(0) if len(acc) > 1 else np.zeros(4)
    st = np.asarray(state.attn_stats, np.float64)
    out.update({"replay": hp.replay, "target_mode": hp.target_mode, "attn_arch": hp.attn_arch,
                "attn_train": hp.attn_train, "importance_norm": hp.importance_norm,
                "attn_param_bytes": common.param_bytes(state.attn_params),
                "abs_a_per_task": abs_a, "exemplar_weight_per_task": share,
                "abs_a_mean": float(tot[0] / tot[1]) if tot[1] > 0 else None,
                "exemplar_weight_mean": float(tot[2] / tot[3]) if tot[3] > 0 else None,
                "last_step_abs_a": float(st[0]), "last_step_drift": float(st[1]),
                "last_step_att_loss": float(st[2]),
                "last_step_exemplar_weight": None if np.isnan(st[3]) else float(st[3]),
                "last_step_corr_a_r": float(st[4])})
    return out


def _spec():
    from clj.methods.api import Capabilities, MethodSpec

    return MethodSpec(init=init, begin_task=begin_task, train_step=train_step, end_task=end_task,
                      predict=predict, capabilities=Capabilities(static_task_info=True, heavy_step=True),
                      memory_bytes=memory_bytes, result_extras=result_extras)


SPEC = _spec()
