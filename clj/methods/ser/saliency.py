"""SER's saliency branch: its optimiser, its state, its step during the
stream, its pretraining before task 0 and its weight import.

Source: Sorrenti et al., "Saliency-driven Experience Replay for Continual
Learning", NeurIPS 2024 (the saliency branch trained online on the stream, its
encoder features modulating the classifier); the official code's optimiser and
step as ``docs/ser.md`` describes them ("One training step", "Optimisers",
"Without the saliency data or the checkpoint").  The classifier side and the
method's step are in :mod:`clj.methods.ser.ser`.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct, traverse_util

from clj.methods.ser import targets as tg
from clj.models.saliency import SaliencyNet


@dataclasses.dataclass(frozen=True)
class SalOptSpec:
    """The saliency optimiser (hashable): PyTorch SGD with momentum and coupled
    weight decay, two groups (``docs/ser.md``, "Optimisers"): ``cnn`` (encoder) at
    ``lr * cnn_lr_factor`` / ``cnn_weight_decay``; the rest at ``lr`` /
    ``weight_decay``.  optax's trace starts at zero, so its first step equals
    PyTorch's momentum buffer initialised to the gradient."""

    lr: float = 0.005
    cnn_lr_factor: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    cnn_weight_decay: float = 1e-5

    def make(self, scale: float = 1.0) -> optax.GradientTransformation:
        """The optax transformation, learning rates times ``scale``."""
        def group(lr, wd):
            parts = [optax.add_decayed_weights(wd)] if wd > 0 else []
            parts.append(optax.sgd(lr * scale, momentum=self.momentum or None))
            return optax.chain(*parts)

        def labels(params):
            return {k: jax.tree_util.tree_map(lambda _: "enc" if k == "cnn" else "dec", v)
                    for k, v in params.items()}

        return optax.multi_transform({"enc": group(self.lr * self.cnn_lr_factor, self.cnn_weight_decay),
                                      "dec": group(self.lr, self.weight_decay)}, labels)


@struct.dataclass
class SalState:
    """The saliency network: params (``cnn`` encoder + decoder), BN statistics,
    optimiser state (kept across tasks), steps taken."""

    params: Any
    batch_stats: Any
    opt_state: Any
    step: jax.Array
    model: SaliencyNet = struct.field(pytree_node=False)
    optim: SalOptSpec = struct.field(pytree_node=False)


def saliency_apply(sal: SalState, params, batch_stats, x, train: bool, rng=None):
    """Saliency net forward on normalised x float32 [B, H, W, C]; returns
    ``(pred [B, H, W, 1], feats (the encoder's five pre-ReLU features),
    new_batch_stats)``; ``rng`` is the dropout key of train mode."""
    v = {"params": params, "batch_stats": batch_stats}
    if train:
        (pred, feats), upd = sal.model.apply(v, x, train=True, mutable=["batch_stats"], rngs={"dropout": rng})
        return pred, feats, upd["batch_stats"]
    pred, feats = sal.model.apply(v, x, train=False)
    return pred, feats, batch_stats


def saliency_targets(static, sal: SalState, teacher, x_raw: jax.Array, x: jax.Array,
                     given: jax.Array | None = None) -> jax.Array:
    """Targets float32 [B, H, W] (unit sum) of padded uint8 ``x_raw`` /
    normalised ``x`` images: with ``sal_target='dataset'`` the images' own
    ground-truth maps ``given`` (float [B, H, W], any scale: SER's loader
    reads the grey PNG into [0, 1] and normalises it to unit sum, ``docs/ser.md``
    "Data"); the offline map ``static.sal_target`` of
    :func:`clj.methods.ser.targets.compute_targets`; or with ``teacher`` the
    eval-mode prediction of the frozen initial saliency net.

    Raises:
      ValueError: ``sal_target='dataset'`` without ``given`` (at trace time).
    """
    if static.sal_target == "dataset":
        if given is None:
            raise ValueError("ser.sal_target='dataset' needs the batch's saliency maps (batch['saliency']).")
        return tg.normalize_map(given)
    if static.sal_target == "teacher":
        pred, _ = sal.model.apply({"params": teacher["params"], "batch_stats": teacher["batch_stats"]}, x,
                                  train=False)
        return tg.normalize_map(jax.lax.stop_gradient(pred[..., 0]))
    return tg.compute_targets(static.sal_target, x_raw, static.sr_work_size, static.sr_blur_sigma, static.center_sigma)


def kld_step(model: SaliencyNet, tx: optax.GradientTransformation, params, batch_stats, opt_state,
             x: jax.Array, target: jax.Array, rng: jax.Array, coeff: float = 1.0):
    """One optimiser step of the saliency net on ``coeff * KLD(pred, target)``
    (:func:`clj.methods.ser.targets.kld_loss`), train mode (batch-stat BN,
    channel dropout with key ``rng``).

    Args:
      x: float32 [B, H, W, C] normalised images; target: float32 [B, H, W]
        unit-sum maps.

    Returns:
      ``(params, batch_stats, opt_state, loss float32 [] before the step,
      feats)``: ``feats`` are the encoder's features of this forward (the
      pre-update weights).
    """
    def loss_fn(p):
        (pred, feats), upd = model.apply({"params": p, "batch_stats": batch_stats}, x, train=True,
                                         mutable=["batch_stats"], rngs={"dropout": rng})
        return coeff * tg.kld_loss(pred, target), (upd["batch_stats"], feats)

    (loss, (bs, feats)), g = jax.value_and_grad(loss_fn, has_aux=True)(params)
    upd, opt_state = tx.update(g, opt_state, params)
    return optax.apply_updates(params, upd), bs, opt_state, loss, feats


def saliency_step(static, sal: SalState, teacher, x_raw: jax.Array, x: jax.Array, rng: jax.Array,
                  given: jax.Array | None = None):
    """The saliency branch's step on a stream batch (``docs/ser.md``, "One
    training step", steps 1-2):
    :func:`kld_step` at ``static.sal_coeff`` with the saliency optimiser,
    towards :func:`saliency_targets` (``given``: the batch's ground-truth
    maps, float [B, H, W], for ``sal_target='dataset'``).

    Returns:
      ``(new SalState, stream features (stop-gradient: no classification
      gradient reaches the saliency net), saliency loss float32 [])``.
    """
    target = saliency_targets(static, sal, teacher, x_raw, x, given)
    params, bs, opt, loss, feats = kld_step(sal.model, sal.optim.make(), sal.params, sal.batch_stats,
                                            sal.opt_state, x, target, rng, static.sal_coeff)
    new = sal.replace(params=params, batch_stats=bs, opt_state=opt, step=sal.step + 1)
    return new, jax.lax.stop_gradient(feats), loss


PRETRAIN_UNROLL_MAX = 8  # pretraining steps up to which the scan is unrolled


def pretrain_saliency(rng, smodel: SaliencyNet, sopt: SalOptSpec, params, batch_stats, static,
                      steps: int, batch: int, lr_mult: float):
    """Trains the saliency net for ``steps`` steps on procedural images
    (:func:`clj.methods.ser.targets.procedural_images`, disjoint from the
    continual stream) against the configured offline target (``teacher``
    and ``dataset`` fall back to spectral residual), with the saliency optimiser at
    ``lr_mult`` times its learning rates (``docs/ser.md``, "Without the
    saliency data or the checkpoint").  One ``lax.scan``.

    Returns:
      (params, batch_stats).
    """
    if steps <= 0:
        return params, batch_stats
    tx = sopt.make(lr_mult)
    kind = "spectral_residual" if static.sal_target in ("teacher", "dataset") else static.sal_target

    def step(carry, k):
        p, bs, opt = carry
        k_img, k_drop = jax.random.split(k)
        x_raw = tg.procedural_images(k_img, batch, static.in_shape)
        target = tg.compute_targets(kind, x_raw, static.sr_work_size, static.sr_blur_sigma, static.center_sigma)
        p, bs, opt, loss, _ = kld_step(smodel, tx, p, bs, opt, static.augment(x_raw), target, k_drop)
        return (p, bs, opt), loss

    # A short pretraining (--tiny's two steps) is unrolled: a loop around the
    # convolutions' weight gradients is XLA:CPU's 20-50x slow case
    # (clj.train.runtime.auto_chunking); a long one stays a rolled scan (compile time).
    (params, batch_stats, _), _ = jax.lax.scan(step, (params, batch_stats, tx.init(params)),
                                               jax.random.split(rng, steps),
                                               unroll=steps if steps <= PRETRAIN_UNROLL_MAX else 1)
    return params, batch_stats


# -------------------------------------------------------------- checkpoint


def save_saliency_checkpoint(path: str, params, batch_stats) -> None:
    """Writes the saliency net's variables to ``path`` (.npz, keys
    ``params/<a>/<b>/...`` and ``batch_stats/...``)."""
    flat = {}
    for col, tree in (("params", params), ("batch_stats", batch_stats)):
        for k, v in traverse_util.flatten_dict(jax.device_get(tree), sep="/").items():
            flat[f"{col}/{k}"] = np.asarray(v)
    np.savez(path, **flat)


def load_saliency_checkpoint(path: str, params, batch_stats):
    """Reads a file written by :func:`save_saliency_checkpoint` into the
    structure of (params, batch_stats).

    Raises:
      FileNotFoundError: no such file.
      ValueError: missing or extra keys, or a shape mismatch (named).
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"ser.sal_init: saliency checkpoint {path!r} does not exist.")
    data = np.load(path)
    out = []
    for col, tree in (("params", params), ("batch_stats", batch_stats)):
        flat = traverse_util.flatten_dict(tree, sep="/")
        keys = {f"{col}/{k}" for k in flat}
        have = {k for k in data.files if k.startswith(col + "/")}
        if keys != have:
            raise ValueError(f"saliency checkpoint {path!r} does not match the network: missing "
                             f"{sorted(keys - have)[:5]}, extra {sorted(have - keys)[:5]}.")
        new = {}
        for k, v in flat.items():
            a = data[f"{col}/{k}"]
            if a.shape != tuple(v.shape):
                raise ValueError(f"saliency checkpoint {path!r}: {col}/{k} has shape {a.shape}, "
                                 f"the network needs {tuple(v.shape)}.")
            new[k] = jnp.asarray(a, jnp.float32)
        out.append(traverse_util.unflatten_dict(new, sep="/"))
    return out[0], out[1]
