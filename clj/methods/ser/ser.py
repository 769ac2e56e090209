"""SER: saliency-driven experience replay, as an add-on to DER++, ER-ACE and ER.

Source: Sorrenti, Bellitto, Proietto Salanitri, Pennisi, Palazzo, Spampinato,
"Saliency-driven Experience Replay for Continual Learning", NeurIPS 2024
(two branches, multiplicative modulation, stop-gradient from the classifier
to the saliency net); the official code's step as ``docs/ser.md``, "SER as the
official code runs it", describes it (DER++, ER-ACE; ER by the same pattern,
the official code has no ER variant).

One jitted step (``train_step``), in the official order ("One training step"):

1. **Saliency step.**  The saliency net runs in train mode (batch-stat BN,
   channel dropout) on the stream images; loss ``sal_coeff * KLD(pred,
   target)``; one step of its own optimiser (SGD momentum 0.9, coupled weight
   decay; encoder at ``sal_lr * sal_cnn_lr_factor`` with
   ``sal_cnn_weight_decay``, decoder at ``sal_lr`` with ``sal_weight_decay``;
   "Optimisers").  The encoder's five pre-ReLU features of *this* forward (pre-update
   weights) modulate the stream pass; they are ``stop_gradient``-ed, so no
   classification gradient reaches the saliency net, and the saliency loss
   does not depend on the classifier.
2. **Buffer features.**  The replay draws go through the saliency net in
   eval mode with the *updated* weights, without gradient (one apply on all
   draws together: eval BN is per-example).
3. **Classifier step** of the base method: the base's own loss
   (:func:`clj.methods.baselines.rehearsal.objective_loss` for DER++ and ER,
   :func:`clj.methods.baselines.er_ace.ace_loss` for ER-ACE) with, as its network, the
   classifier modulated by the saliency features of each pass's images:
   DER++: CE(stream) + alpha MSE(draw 1, stored logits) + beta CE(draw 2),
   three BN batches; ER-ACE: masked CE(stream) + (task > 0) CE(draw), two BN
   batches; ER: CE over the concatenation of stream and draw, one BN batch.
   The base's handling of an empty buffer (the run's first step) comes with
   it: the replay rows are the stream rows tiled, with zero weight (ER's
   single BN batch then counts them, as the base ER does).
   Plain SGD on the classifier (``config.optim``).
4. **Insertion**: reservoir, after the step, of the (padded, uint8) stream
   images, labels and, for DER++, the stream logits of step 3 (pre-update,
   train mode, modulated).  No saliency map is stored or replayed ("One
   training step", step 5): storing uint8 and normalising at sampling equals
   the official float copy of the normalised stream tensor up to float
   rounding.

The saliency branch (its optimiser, step, pretraining and weight import)
is :mod:`clj.methods.ser.saliency`.

Saliency targets (``ser.sal_target``, recorded in results.json): ``dataset``,
the paper's: each stream image's ground-truth map stored with it in the
prepared records of ``mini_imagenet`` / ``fg_imagenet``, gathered into the
batch by the loop (``batch["saliency"]``, :attr:`Capabilities.batch_extras`)
and normalised to unit sum as SER's loader does; the offline
``spectral_residual`` (default), ``center``, ``center_sr`` ("Without the
saliency data or the checkpoint") or ``teacher``: the eval-mode prediction of a
frozen copy of the *initial* saliency net, meaningful with
``sal_init='ckpt:<file>'`` (a user's saliency checkpoint standing in for the
dataset's pseudo-ground-truth maps).

Saliency weights (``ser.sal_init``, the same subsection): ``pretrain:<K>``
(default: K steps on procedural images disjoint from every dataset, before
task 0), ``scratch`` (the classifier's initial backbone copied into the encoder, as
the official code deep-copies it), ``ckpt:<path>`` (an ``.npz`` written by
:func:`~clj.methods.ser.saliency.save_saliency_checkpoint`, e.g. after
converting the official PyTorch checkpoint).

Inputs whose H or W are not multiples of 8 (Fashion-MNIST's 28x28) are
zero-padded (in pixel space) to the next multiple of 8 for both networks.
The method refuses data augmentation (SER trains without it, "The paper's protocol").
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import struct

from clj.data.augment import Augment
from clj.methods import common, sections
from clj.methods.ser import section as ser_section
from clj.methods.baselines import er_ace, rehearsal
from clj.methods.baselines.section import REPLAY
from clj.methods.common import ModelState, TaskInfo
from clj.methods.baselines.rehearsal import Draw
from clj.methods.ser.saliency import (SalOptSpec, SalState, load_saliency_checkpoint, pretrain_saliency,
                                      saliency_apply, saliency_step, save_saliency_checkpoint)
from clj.models.common import compute_dtype
from clj.models.saliency import ModulatedResNet18, SaliencyNet, input_multiple
from clj.replay.buffer import Buffer, buffer_nbytes, init_buffer, reservoir_add, sample_indices

__all__ = ["BASES", "CLASSIFIERS", "Static", "SalOptSpec", "SalState", "State", "classifier_apply", "init",
           "load_saliency_checkpoint", "make_spec", "pad_normalized", "pad_raw", "predict", "pretrain_saliency",
           "saliency_apply", "save_saliency_checkpoint", "ser_config", "train_step"]

BASES = ("derpp", "er_ace", "er")
MNP_MODES = ser_section.SER_MNP_MODES
CLASSIFIERS = {"resnet18": 64, "resnet18_reduced": 20, "resnet18_imagenet": 64}  # name -> default width


def ser_config() -> ml_collections.ConfigDict:
    """Defaults of ``config.ser`` (a config file sets ``c.ser = ser_config()``
    and overrides fields; ``docs/ser.md``, "The paper's protocol", for the
    paper's values)."""
    return ml_collections.ConfigDict(ser_section.SER.defaults)


@dataclasses.dataclass(frozen=True)
class Static:
    """Static hyperparameters of SER (hashable); fields as in :func:`ser_config`
    plus the base method, replay sizes, DER++ weights, the normalisation and
    the padded input shape."""

    base: str
    buffer_size: int
    minibatch_size: int
    alpha: float
    beta: float
    augment: Augment
    in_shape: tuple[int, int, int]
    pad: tuple[int, int]
    sal_target: str
    sal_init: str
    sal_coeff: float
    mnp_blocks: tuple[bool, ...]
    sr_work_size: int
    sr_blur_sigma: float
    center_sigma: float
    cls_init: str = "random"


@struct.dataclass
class State:
    """SER state.

    Attributes:
      cls: the classifier (:class:`ModulatedResNet18`) as a core ModelState.
      sal: the saliency network.
      teacher: frozen ``{"params", "batch_stats"}`` of the initial saliency
        net (only with ``sal_target='teacher'``; else None).
      buffer: reservoir buffer of padded uint8 images, labels and (DER++)
        logits.
      seen: bool [C] labels seen (ER-ACE mask).
      task: int32 [] current task index.
      sal_loss_ema: float32 [] running mean of the saliency loss (reporting).
      static: the static (hashable) hyperparameters of the run.
    """

    cls: ModelState
    sal: SalState
    teacher: Any
    buffer: Buffer
    seen: jax.Array
    task: jax.Array
    sal_loss_ema: jax.Array
    static: Static = struct.field(pytree_node=False)


# ------------------------------------------------------------------ config


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ValueError(msg)


def resolve_config(config) -> ml_collections.ConfigDict:
    """``config.ser`` merged over :func:`ser_config`, validated
    (:data:`clj.methods.ser.section.SER`).

    Raises:
      clj.config.ConfigError (a ValueError): a bad value, named with what is valid.
    """
    return ml_collections.ConfigDict(sections.block(config, ser_section.SER))


def _pad_amounts(n: int, multiple: int = 8) -> int:
    return (-n) % multiple


def classifier_stem(model_cfg) -> str:
    """The stem of SER's two networks: ``model.stem`` when set, else
    ``"imagenet"`` for ``resnet18_imagenet`` and ``"cifar"`` (SER's code)
    for the others."""
    return str(model_cfg.get("stem", "imagenet" if model_cfg.name == "resnet18_imagenet" else "cifar"))


# -------------------------------------------------------------------- init


def init(rng: jax.Array, config, scenario, base: str) -> State:
    """A fresh SER State over ``base`` (one of ``BASES``).

    The classifier is ``config.model`` = ``resnet18`` / ``resnet18_reduced``
    / ``resnet18_imagenet`` (``width`` and ``stem`` honoured:
    :func:`classifier_stem`) made modulatable; the saliency net has the same
    width and stem; both compute in ``model.dtype`` (float32 parameters).
    Inputs are zero-padded to a multiple of 8 (32 with the ImageNet stem).  The
    encoder starts as a copy of the classifier's initial backbone
    (``docs/ser.md``, "The saliency network"), then ``sal_init`` applies; with
    ``ser.cls_init='sal_encoder'`` the classifier's backbone (parameters and
    BN statistics) is then replaced by a copy of the saliency encoder (the
    "base initialised from the saliency encoder" control; with
    ``mnp_blocks`` all 0 the classifier is the plain base network).

    Raises:
      ValueError: an unknown base, a classifier other than the ResNet-18s,
        data augmentation configured, or a bad ``config.ser`` value.
    """
    _check(base in BASES, f"SER base={base!r} is unknown; valid: {', '.join(BASES)}.")
    sc = resolve_config(config)
    mname = config.model.name
    _check(mname in CLASSIFIERS, f"model.name={mname!r} is not supported by SER; valid: {', '.join(CLASSIFIERS)}.")
    width = int(config.model.get("width", CLASSIFIERS[mname]))
    ser_section.check_ser_model(config)  # the classifier, a stem and no augmentation
    aug = common.augment_from_config(config.augment, scenario)
    stem = classifier_stem(config.model)
    H, W, C = scenario.image_shape
    multiple = input_multiple(stem)
    ph, pw = _pad_amounts(H, multiple), _pad_amounts(W, multiple)
    in_shape = (H + ph, W + pw, C)
    r = sections.block(config, REPLAY)
    static = Static(base=base, buffer_size=int(r.buffer_size),
                    minibatch_size=int(r.minibatch_size), alpha=float(r.alpha),
                    beta=float(r.beta), augment=aug, in_shape=in_shape, pad=(ph, pw),
                    sal_target=str(sc.sal_target), sal_init=str(sc.sal_init), sal_coeff=float(sc.sal_coeff),
                    mnp_blocks=tuple(bool(b) for b in sc.mnp_blocks), sr_work_size=int(sc.sr_work_size),
                    sr_blur_sigma=float(sc.sr_blur_sigma), center_sigma=float(sc.center_sigma),
                    cls_init=str(sc.cls_init))
    k_cls, k_sal, k_pre = jax.random.split(rng, 3)
    dtype = compute_dtype(config.model)  # both networks compute in it; parameters stay float32
    model = ModulatedResNet18(scenario.num_classes, width=width, mnp_blocks=static.mnp_blocks, pool_mode=sc.pool_mode,
                              dtype=dtype, stem=stem)
    cls = common.init_model_state(k_cls, model, common.optim_spec_from_config(config.optim), in_shape)
    smodel = SaliencyNet(width=width, n_gaussians=int(sc.sal_n_gaussians), dtype=dtype, stem=stem)
    svars = smodel.init({"params": k_sal, "dropout": k_sal}, jnp.zeros((1, *in_shape), jnp.float32), train=False)
    sparams = dict(svars["params"])
    sbs = dict(svars["batch_stats"])
    sparams["cnn"] = cls.params["backbone"]
    sbs["cnn"] = cls.batch_stats["backbone"]
    sopt = SalOptSpec(lr=float(sc.sal_lr), cnn_lr_factor=float(sc.sal_cnn_lr_factor),
                      momentum=float(sc.sal_momentum), weight_decay=float(sc.sal_weight_decay),
                      cnn_weight_decay=float(sc.sal_cnn_weight_decay))
    if static.sal_init.startswith("ckpt:"):
        sparams, sbs = load_saliency_checkpoint(static.sal_init[5:], sparams, sbs)
    elif static.sal_init.startswith("pretrain:"):
        sparams, sbs = pretrain_saliency(k_pre, smodel, sopt, sparams, sbs, static,
                                         int(static.sal_init.split(":", 1)[1]), int(config.train.batch_size),
                                         float(sc.pretrain_lr_mult))
    sal = SalState(params=sparams, batch_stats=sbs, opt_state=sopt.make().init(sparams),
                   step=jnp.zeros((), jnp.int32), model=smodel, optim=sopt)
    if sc.cls_init == "sal_encoder":  # transfer control: the classifier starts from the saliency encoder
        cls = cls.replace(params={**cls.params, "backbone": sparams["cnn"]},
                          batch_stats={**cls.batch_stats, "backbone": sbs["cnn"]})
    teacher = {"params": sparams, "batch_stats": sbs} if static.sal_target == "teacher" else None
    buf = init_buffer(static.buffer_size, in_shape, scenario.num_classes if base == "derpp" else 0)
    return State(cls=cls, sal=sal, teacher=teacher, buffer=buf, seen=jnp.zeros((scenario.num_classes,), bool),
                 task=jnp.zeros((), jnp.int32), sal_loss_ema=jnp.zeros((), jnp.float32), static=static)


def begin_task(state: State, task: TaskInfo) -> State:
    """Resets the classifier's optimiser (the saliency optimiser persists)
    and sets the task counter."""
    return state.replace(cls=common.begin_task_model(state.cls, task), task=jnp.asarray(task.task_id, jnp.int32))


def end_task(state: State, task_data) -> State:
    del task_data
    return state


# ----------------------------------------------------------------- forward


def pad_raw(static: Static, x_raw: jax.Array) -> jax.Array:
    """Zero-pads uint8 [B, H, W, C] to the model's input shape (centred)."""
    ph, pw = static.pad
    if ph == 0 and pw == 0:
        return x_raw
    return jnp.pad(x_raw, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))


def pad_normalized(static: Static, x: jax.Array) -> jax.Array:
    """Pads normalised float [B, H, W, C] with the normalised value of a zero pixel."""
    ph, pw = static.pad
    if ph == 0 and pw == 0:
        return x
    a = static.augment
    fill = (-jnp.asarray(a.mean, jnp.float32) / jnp.asarray(a.std, jnp.float32)) if a.normalize else \
        jnp.zeros((x.shape[-1],), jnp.float32)
    canvas = jnp.broadcast_to(fill, (x.shape[0], *static.in_shape)).astype(x.dtype)
    return jax.lax.dynamic_update_slice(canvas, x, (0, ph // 2, pw // 2, 0))


def classifier_apply(ms: ModelState, params, batch_stats, x, feats, train: bool):
    """Modulated classifier forward; returns ``(logits float32 [B, C], new_batch_stats)``."""
    v = {"params": params, "batch_stats": batch_stats}
    if train:
        out, upd = ms.model.apply(v, x, train=True, sal_feats=feats, mutable=["batch_stats"])
        return out, upd["batch_stats"]
    return ms.model.apply(v, x, train=False, sal_feats=feats), batch_stats


def predict(state: State, x: jax.Array, task_id: jax.Array | None = None) -> jax.Array:
    """Logits float32 [B, C] of normalised x float32 [B, H, W, C]: the
    saliency net (eval mode) gives the features that modulate the classifier
    (eval mode); test images need the saliency branch (``docs/ser.md``,
    "Evaluation")."""
    del task_id
    x = pad_normalized(state.static, x)
    _, feats, _ = saliency_apply(state.sal, state.sal.params, state.sal.batch_stats, x, train=False)
    logits, _ = classifier_apply(state.cls, state.cls.params, state.cls.batch_stats, x, feats, train=False)
    return logits


def _replay_draws(state: State, sal: SalState, k1: jax.Array, k2: jax.Array) -> list[Draw]:
    """The base method's replay draws (DER++ two, ER-ACE and ER one, of
    ``minibatch_size`` each; not augmented, normalised and padded), each
    with the *updated* saliency net's eval-mode features of its images (one
    saliency apply on all draws together: eval BN is per-example)."""
    static, buf, m = state.static, state.buffer, state.static.minibatch_size
    idx1, v1 = sample_indices(buf, k1, m)
    idx2, v2 = sample_indices(buf, k2, m)
    idx = jnp.concatenate([idx1, idx2]) if static.base == "derpp" else idx1
    bx = static.augment(buf.x[idx])
    _, bfeats, _ = saliency_apply(sal, sal.params, sal.batch_stats, bx, train=False)
    bfeats = jax.lax.stop_gradient(bfeats)
    by = buf.y[idx]
    first = Draw((bx[:m], [f[:m] for f in bfeats]), by[:m], buf.logits[idx1] if static.base == "derpp" else None, v1)
    if static.base != "derpp":
        return [first]
    return [first, Draw((bx[m:], [f[m:] for f in bfeats]), by[m:], None, v2)]


def train_step(state: State, batch: dict, rng: jax.Array):
    """One SER step over the base method (module doc): the saliency step,
    then the base method's loss with the modulated classifier as its network.

    Args:
      state: the State.
      batch: ``x_raw`` uint8 [B, H, W, C] stream images (SER normalises and
        pads them itself: no augmentation), ``y`` int32 [B], ``task_id``;
        with ``ser.sal_target='dataset'`` also ``saliency`` uint8 [B, H, W, 1],
        the images' ground-truth maps (padded like the images).
      rng: PRNG key (dropout, replay draws, reservoir).

    Returns:
      (new State, metrics: ``loss``, ``sal_loss``, ``acc``).
    """
    static, ms = state.static, state.cls
    k_drop, k_r1, k_r2, k_add = jax.random.split(rng, 4)
    x_raw = pad_raw(static, batch["x_raw"])
    x = static.augment(x_raw)
    y = batch["y"]
    given = None
    if static.sal_target == "dataset":  # the dataset's maps, zero-padded like the images
        given = pad_raw(static, batch["saliency"])[..., 0].astype(jnp.float32) / 255.0
    new_sal, feats, sal_loss = saliency_step(static, state.sal, state.teacher, x_raw, x, k_drop, given)
    draws = _replay_draws(state, new_sal, k_r1, k_r2)
    seen = state.seen

    def apply_fn(params, batch_stats, inputs):  # the base's network: the modulated classifier
        return classifier_apply(ms, params, batch_stats, inputs[0], inputs[1], True)

    if static.base == "er_ace":
        active, seen = er_ace.ace_mask(state.seen, y)
        loss_fn = functools.partial(er_ace.ace_loss, apply_fn=apply_fn, batch_stats=ms.batch_stats,
                                    inputs=(x, feats), y=y, draw=draws[0], active=active, replay_on=state.task > 0)
    else:
        loss_fn = functools.partial(rehearsal.objective_loss, objective=static.base, apply_fn=apply_fn,
                                    batch_stats=ms.batch_stats, inputs=(x, feats), y=y, draws=draws,
                                    alpha=static.alpha, beta=static.beta, empty=state.buffer.is_empty())
    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(ms.params)
    new_cls = common.apply_gradients(ms, grads, aux["batch_stats"])
    logits = aux["logits"]
    buf = reservoir_add(state.buffer, k_add, x_raw, y,
                        logits=jax.lax.stop_gradient(logits) if static.base == "derpp" else None,
                        task_id=batch.get("task_id"))
    ema = jnp.where(new_sal.step == 1, sal_loss, 0.99 * state.sal_loss_ema + 0.01 * sal_loss)
    metrics = {"loss": loss, "sal_loss": sal_loss, "acc": common.accuracy(logits, y)}
    return state.replace(cls=new_cls, sal=new_sal, buffer=buf, seen=seen, sal_loss_ema=ema), metrics


# --------------------------------------------------------------- reporting


def memory_bytes(state: State) -> dict:
    """Bytes of the buffer and of both networks' parameters."""
    model = common.param_bytes(state.cls.params) + common.param_bytes(state.sal.params)
    if state.teacher is not None:
        model += common.param_bytes(state.teacher["params"])
    return {"buffer": buffer_nbytes(state.buffer), "model": model}


def result_extras(state: State) -> dict:
    """SER's choices and saliency statistics for results.json ``extra``."""
    static = state.static
    return {"ser": {"base": static.base, "sal_target": static.sal_target, "sal_init": static.sal_init,
                    "mnp": "multiply", "mnp_blocks": [int(b) for b in static.mnp_blocks],
                    "input_shape": list(static.in_shape), "padding": list(static.pad),
                    "cls_init": static.cls_init, "sal_coeff": static.sal_coeff,
                    "sal_steps": int(np.asarray(state.sal.step)),
                    "final_sal_loss_ema": float(np.asarray(state.sal_loss_ema))}}


def _sal_target(config) -> str:
    ser = config.get("ser", None)
    return str(ser.get("sal_target", "spectral_residual")) if ser is not None else "spectral_residual"


def make_spec(base: str):
    """The :class:`~clj.methods.api.MethodSpec` of SER over ``base``."""
    from clj.methods.api import Capabilities, MethodSpec

    return MethodSpec(init=functools.partial(init, base=base), begin_task=begin_task,
                      train_step=train_step, end_task=end_task, predict=predict,
                      capabilities=lambda config: Capabilities(
                          conv=True, heavy_step=True,
                          # the paper's target: the dataset's maps, gathered into each batch by the loop
                          batch_extras=("saliency",) if _sal_target(config) == "dataset" else ()),
                      memory_bytes=memory_bytes, result_extras=result_extras)
