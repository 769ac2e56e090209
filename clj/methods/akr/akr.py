"""Attentive Knowledge Replay (AKR) on top of iCaRL, and its plain-mixup baseline.

Source: Y.-L. Lee, D.-S. Chen, C.-Y. Lee, Y.-H. Tsai, W.-C. Chiu, "Data
Efficient Incremental Learning Via Attentive Knowledge Replay", IEEE SMC
2023 (abstract, method figure, results table; the official code was not
available, see ``docs/akr.md``).  The iCaRL base is
:mod:`clj.methods.cil.icarl` (herding memory, frozen previous model, CNN or NME
prediction).

What the paper fixes (``docs/akr.md``, "What the paper fixes") and this module
implements:

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
plus R exemplars drawn from the memory (as :mod:`~clj.methods.cil.icarl`) form
the batch of N = B + R augmented, normalised images; every row b is paired
with a partner pi(b) of the same batch; then

1. old model (eval BN, frozen): old features of x (drift) and, once the
   images are blended, old logits of the blended images (distillation);
2. current model in eval BN, stop-gradient: current features of x; drift
   ``d_b = ||n(f_cur(x_b)) - n(f_old(x_b))||``;
3. S on x: scores s, weights ``a_b = sigmoid((s_b - s_pi(b)) / tau)``,
   importance target r_b from the pair's drifts (default ``zscore``: the
   drifts standardised over the batch, ``r_b = sigmoid((z_b - z_pi(b)) /
   importance_tau)``); L_att = BCE(a_b; r_b); one optax Adam step on S's
   trainable params only (``attn_train``);
4. classifier: one training forward on the blended images with weights
   ``stop_gradient(a)``, loss of ``target_mode``, one SGD step.

Items 1-3 are :func:`clj.methods.akr.attention.attention_step`; the pairs,
weights and virtual images :mod:`clj.methods.akr.blend`; item 4's loss
:func:`clj.methods.akr.loss.classifier_loss`.  The names of those modules
stay importable from here.

Decisions where the paper is silent (``docs/akr.md``, "Design decisions"; each is a
``config.akr`` switch, defaults in :data:`AKR_DEFAULTS`):

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
from flax import struct

from clj.methods.cil import common as cc
from clj.methods import common
from clj.methods import sections
from clj.methods.akr import section as akr_section
from clj.methods.cil import icarl
from clj.methods.akr.attention import (attention_scores, attention_step, attention_tx, feature_drift,  # noqa: F401
                                       head_scores, importance_loss, importance_targets, init_attention,
                                       update_attention, weighted_corr, zero_head)
from clj.methods.akr.blend import (blend, blend_weights, exemplar_share, mixed_targets, pair_weights,  # noqa: F401
                                   partners)
from clj.methods.akr.loss import classifier_loss, icarl_bce, soft_cross_entropy  # noqa: F401
# Augment and OptimSpec: the annotations of the fields Static inherits from icarl's resolve here too
# (the API reference, docs/build_api.py, reads them).
from clj.data.augment import Augment  # noqa: F401
from clj.methods.common import ModelState, OptimSpec, TaskInfo  # noqa: F401
from clj.replay import exemplars as ex

# The valid values and defaults of config.akr live in the JAX-free clj.methods.akr.section.
REPLAYS = akr_section.AKR_REPLAYS
TARGET_MODES = akr_section.AKR_TARGET_MODES
BCE_OVER = akr_section.AKR_BCE_OVER
PAIR_MODES = akr_section.AKR_PAIR_MODES
ATTN_ARCHS = akr_section.AKR_ATTN_ARCHS
ATTN_NORMS = akr_section.AKR_ATTN_NORMS
ATTN_OBJECTIVES = akr_section.AKR_ATTN_OBJECTIVES
DRIFT_METRICS = akr_section.AKR_DRIFT_METRICS
IMPORTANCE_NORMS = akr_section.AKR_IMPORTANCE_NORMS
ATTN_TRAINS = akr_section.AKR_ATTN_TRAINS
PHASE0_MIX = akr_section.AKR_PHASE0_MIX

AKR_DEFAULTS = dict(akr_section.AKR.defaults)


def get_akr(config) -> ml_collections.ConfigDict:
    """``config.akr`` filled with defaults for missing fields, validated
    (:data:`clj.methods.akr.section.AKR`).

    Raises:
      clj.config.ConfigError: a bad value, naming it and what is valid.
    """
    c = sections.block(config, akr_section.AKR)
    c["beta_alpha"] = tuple(float(v) for v in c["beta_alpha"])
    return ml_collections.ConfigDict(c)


@dataclasses.dataclass(frozen=True)
class Static(icarl.Static):
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
      net, old_params, old_batch_stats, mem: as :class:`clj.methods.cil.icarl.State`.
      attn_params: S's trainable parameters (``trunk_copy``: ``{"w": [D],
        "b": []}`` on the old model's features with ``attn_train="head"``,
        plus ``"trunk"`` (backbone+head params) with ``"all"``;
        ``feature_mlp``: ``{"w1": [D, H], "b1": [H], "w2": [H], "b2": []}``).
      attn_opt_state: optax Adam state of S (reset at each phase start).
      attn_stats: float32 [5] of the last step: mean |a - 0.5| of the
        blended rows, mean drift, L_att, the exemplar's mean weight in
        new/exemplar pairs (NaN without such pairs), corr(a, r) over the
        valid pairs (0 when undefined).
      swept: the sweepable hyperparameters (:data:`SWEEPABLE`) as float32 []
        arrays, so a grid of them is a vmapped axis (iCaRL's, plus S's
        temperatures and learning rate).
      weight_acc: float32 [T, 4] per phase, over the steps whose blending
        weights were used (mixup: every step; AKR: after the warm-up):
        sum of |a - 0.5| over blended rows, their count, sum of the
        exemplar's weight over blended new/exemplar pairs, their count.
      tc: the current task's counts (:class:`~clj.methods.cil.common.TaskCounts`).
      static: the static (hashable) hyperparameters of the run.
    """

    net: ModelState
    old_params: common.PyTree
    old_batch_stats: common.PyTree
    mem: ex.ExemplarMemory
    attn_params: common.PyTree
    attn_opt_state: common.PyTree
    attn_stats: jax.Array
    weight_acc: jax.Array
    swept: dict
    tc: cc.TaskCounts
    static: Static = struct.field(pytree_node=False)


SWEEPABLE = icarl.SWEEPABLE + ("akr.attn_tau", "akr.importance_tau", "akr.attn_lr")
"""Config fields carried as arrays in ``State.swept`` (no shape depends on
them): iCaRL's (:data:`clj.methods.cil.icarl.SWEEPABLE`), the temperatures of the
pair weight and of the importance targets, and S's Adam learning rate (set
into S's optimizer state at every phase start)."""


# --------------------------------------------------------------- protocol
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
    static = Static(**{f.name: getattr(base.static, f.name) for f in dataclasses.fields(icarl.Static)},
                    **fields, feat_dim=int(base.net.model.feature_dim))
    net = base.net
    attn = init_attention(k_att, static, net)
    swept = {**base.swept, "akr.attn_tau": jnp.float32(static.attn_tau),
             "akr.importance_tau": jnp.float32(static.importance_tau), "akr.attn_lr": jnp.float32(static.attn_lr)}
    return State(net=net, old_params=base.old_params, old_batch_stats=base.old_batch_stats, mem=base.mem,
                 attn_params=attn, attn_opt_state=attention_tx(swept["akr.attn_lr"]).init(attn),
                 attn_stats=jnp.zeros((5,), jnp.float32),
                 weight_acc=jnp.zeros((scenario.num_tasks, 4), jnp.float32), swept=swept, tc=base.tc,
                 static=static)


def begin_task(state: State, task: TaskInfo) -> State:
    """iCaRL's phase start, then S re-initialised: ``trunk_copy`` zeroes the
    score layer (and, with ``attn_train="all"``, copies the old model's
    params into the trunk); ``feature_mlp`` zeroes its output layer; the
    optimizer state is reset (learning rate ``swept["akr.attn_lr"]``)."""
    st, static, counts = icarl.enter_task(state.static, task)
    net = state.net.replace(optim=static.init_optim if task.task_id == 0 else static.update_optim)
    net = common.begin_task_model(net, task)
    attn = dict(state.attn_params)
    if static.attn_arch == "trunk_copy":
        attn.update(zero_head(static.feat_dim))
        if static.attn_train == "all":
            attn["trunk"] = state.old_params
    else:
        attn.update({"w2": jnp.zeros_like(attn["w2"]), "b2": jnp.zeros_like(attn["b2"])})
    opt = attention_tx(state.swept["akr.attn_lr"]).init(attn)
    return state.replace(net=net, static=static, attn_params=attn, attn_opt_state=opt, tc=counts)


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
    static, tc, phase, net = state.static, state.tc, state.static.phase, state.net
    x, y = batch["x"], batch["y"]
    B = y.shape[0]
    w = jnp.ones(y.shape, bool)
    if phase.rows > 0:  # the same exemplar draw as icarl.train_step (same key)
        rx, ry, rv = icarl.draw_exemplars(static, state.mem, rng, counts=tc, phase=phase)
        x, y, w = jnp.concatenate([x, rx]), jnp.concatenate([y, ry]), jnp.concatenate([w, rv])
    N = y.shape[0]
    k_pair, k_beta, k_frac = jax.random.split(jax.random.fold_in(rng, 7), 3)
    has_old = not phase.first  # class-IL: old classes exactly from task 1 on
    mixing = static.replay != "none" and (has_old or static.phase0_mix == "random")
    partner = partners(static.pair_mode, k_pair, B, N) if mixing else jnp.arange(N, dtype=jnp.int32)
    pw = w & w[partner]

    zero = jnp.zeros((), jnp.float32)
    att_loss, drift_mean, corr, a_att = zero, zero, zero, None
    attn_params, attn_opt = state.attn_params, state.attn_opt_state
    if static.replay == "attentive" and has_old:
        attn_params, attn_opt, a_att, att_loss, drift_mean, corr = attention_step(state, x, w, partner, pw)
    a, in_use = blend_weights(static, net.task_step, net.steps_per_epoch, a_att, N, mixing, has_old, k_beta, k_frac)
    xt = blend(x, x[partner], a) if mixing else x
    mixed = mixed_targets(y, y[partner], a, static.num_classes)
    rw = w & jnp.where(a < 1.0, w[partner], True)
    targets = icarl.old_logits(state, xt) if has_old else None

    def loss_fn(params):
        logits, bs = common.forward(net, params, net.batch_stats, xt, train=True)
        loss, ce, kd = classifier_loss(static, logits, y, mixed, rw, targets, mixing, state.swept, tc)
        return loss, (bs, logits, ce, kd)

    (loss, (bs, logits, ce, kd)), grads = jax.value_and_grad(loss_fn, has_aux=True)(net.params)
    mask = None if (static.target_mode == "icarl_bce" and static.bce_over == "all") else \
        icarl.head_update_mask(net.params, tc.total)
    new_net = common.apply_gradients(net, grads, bs, mask, base_lr=icarl.phase_lr(state.swept, 0 if phase.first else 1))
    abs_a, share, weight_acc = _weight_diagnostics(state, a, partner, B, pw, in_use)
    acc = jnp.mean((jnp.argmax(cc.mask_logits(logits, tc.total)[:B], -1) == batch["y"]).astype(jnp.float32))
    stats = jnp.stack([abs_a, drift_mean, att_loss, share, corr]).astype(jnp.float32)
    new = state.replace(net=new_net, attn_params=attn_params, attn_opt_state=attn_opt, attn_stats=stats,
                        weight_acc=weight_acc)
    return new, {"loss": loss, "ce": ce, "kd": kd, "acc": acc, "att": att_loss, "abs_a": abs_a,
                 "drift": drift_mean, "exemplar_weight": share, "corr_a_r": corr}


def _weight_diagnostics(state: State, a: jax.Array, partner: jax.Array, B: int, pw: jax.Array,
                        in_use: jax.Array):
    """The step's spread of the used weights and the exemplars' share over the
    blended rows with a real pair: (mean |a - 0.5|, the exemplar's mean weight
    in new/exemplar pairs (NaN without), ``weight_acc`` with this step added
    when ``in_use``)."""
    counted = (a < 1.0) & pw
    nb = jnp.sum(counted.astype(jnp.float32))
    abs_sum = jnp.sum(jnp.where(counted, jnp.abs(a - 0.5), 0.0))
    abs_a = abs_sum / jnp.maximum(nb, 1)
    ex_sum, ex_n = exemplar_share(a, partner, B, counted)
    share = jnp.where(ex_n > 0, ex_sum / jnp.maximum(ex_n, 1.0), jnp.nan)
    add = jnp.where(in_use, jnp.stack([abs_sum, nb, ex_sum, ex_n]), 0.0)
    return abs_a, share, state.weight_acc.at[state.tc.task].add(add.astype(jnp.float32))


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

    static = state.static
    out = icarl.result_extras(state)
    acc = np.asarray(state.weight_acc, np.float64)
    abs_a = [float(s / n) if n > 0 else None for s, n in acc[:, :2]]
    share = [float(s / n) if n > 0 else None for s, n in acc[:, 2:]]
    tot = acc[1:].sum(0) if len(acc) > 1 else np.zeros(4)
    st = np.asarray(state.attn_stats, np.float64)
    out.update({"replay": static.replay, "target_mode": static.target_mode, "attn_arch": static.attn_arch,
                "attn_train": static.attn_train, "importance_norm": static.importance_norm,
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
                      memory_bytes=memory_bytes, result_extras=result_extras, sweepable=SWEEPABLE)


SPEC = _spec()
