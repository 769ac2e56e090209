"""Backbones of SERENA (Yildirim et al., CoLLAs 2025): no biases anywhere and
parameter-free, stateless BatchNorm (``docs/serena.md``, "Backbones").

* :class:`SerenaMLP` — flatten -> Dense(400) -> ReLU -> Dense(400) -> ReLU ->
  head, no biases (the paper's ``MLP_400_400``).
* :class:`SerenaResNet18` — the CIFAR ResNet-18 of the official code
  (``docs/serena.md``, "Backbones"): 7x7 stride-2 stem with explicit padding 3 and **no max-pool**,
  four stages of two BasicBlocks at ``width * (1, 2, 4, 8)`` channels, global
  average pool, bias-free linear head.  ``width=64`` is the paper's network
  (11,172,032 parameters for 10 classes); ``width=20`` is the "reduced"
  ResNet-18 of GEM/Mammoth.

BatchNorm here (:func:`stateless_batch_norm`) has no scale, shift or running
statistics: it always normalises with the current batch's mean and biased
variance, in training and at test time alike (PyTorch
``BatchNorm2d(affine=False, track_running_stats=False)``).  The models
therefore have only a ``params`` collection and ``train`` changes nothing.

Weights use ``variance_scaling(1/3, "fan_in", "uniform")`` = U(±1/sqrt(fan_in)),
PyTorch's default init of Conv/Linear.  Params have the top-level keys
``backbone`` and ``head`` like every ``clj.models`` network, and every leaf
is a ``kernel`` (so :func:`clj.sparse.default_maskable` masks them all,
``docs/serena.md``, "Concept cells and their masks").
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

torch_default_init = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def stateless_batch_norm(x: jax.Array, eps: float = 1e-5, valid: jax.Array | None = None) -> jax.Array:
    """Normalises ``x`` [B, ..., C] per channel with the batch's own statistics.

    Mean and biased variance over all axes but the last, of the rows where
    ``valid`` (bool [B], default all) is True; no affine parameters
    (``docs/serena.md``, "Backbones").  Rows with ``valid=False`` are normalised too, but do
    not enter the statistics.

    Returns:
      float32 array with the shape of ``x``.
    """
    x = x.astype(jnp.float32)
    axes = tuple(range(x.ndim - 1))
    if valid is None:
        mean = jnp.mean(x, axis=axes)
        var = jnp.mean(jnp.square(x - mean), axis=axes)
    else:
        w = valid.astype(jnp.float32).reshape((-1,) + (1,) * (x.ndim - 1))
        n = jnp.maximum(jnp.sum(w) * (x[0].size // x.shape[-1]), 1.0)
        mean = jnp.sum(x * w, axis=axes) / n
        var = jnp.sum(jnp.square(x - mean) * w, axis=axes) / n
    return (x - mean) * jax.lax.rsqrt(var + eps)


def _conv(features: int, k: int, stride: int, pad: int, name: str, dtype=jnp.float32) -> nn.Conv:
    return nn.Conv(features, (k, k), strides=(stride, stride), padding=((pad, pad), (pad, pad)),
                   use_bias=False, kernel_init=torch_default_init, dtype=dtype, param_dtype=jnp.float32, name=name)


def _bn(x, valid, dtype):
    """Stateless BN: statistics in float32, the result back in the compute dtype."""
    return stateless_batch_norm(x, valid=valid).astype(dtype)


class SerenaBasicBlock(nn.Module):
    """conv3x3(s) -> BN -> ReLU -> conv3x3 -> BN, plus the identity or a
    conv1x1(s) -> BN shortcut; ReLU."""

    features: int
    stride: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, valid=None):
        dt = self.dtype
        y = _conv(self.features, 3, self.stride, 1, "conv1", dt)(x)
        y = nn.relu(_bn(y, valid, dt))
        y = _conv(self.features, 3, 1, 1, "conv2", dt)(y)
        y = _bn(y, valid, dt)
        if self.stride != 1 or x.shape[-1] != self.features:
            x = _bn(_conv(self.features, 1, self.stride, 0, "shortcut", dt)(x), valid, dt)
        return nn.relu(y + x)


class SerenaResNet18Backbone(nn.Module):
    """Stem + 4 stages + global average pool -> [B, 8 * width]."""

    width: int = 64
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False, valid=None):
        del train  # stateless BN: identical in both modes
        x = _conv(self.width, 7, 2, 3, "conv1", self.dtype)(x.astype(self.dtype))
        x = nn.relu(_bn(x, valid, self.dtype))
        for s, mult in enumerate((1, 2, 4, 8)):
            for b in range(2):
                stride = 2 if (s > 0 and b == 0) else 1
                x = SerenaBasicBlock(self.width * mult, stride, self.dtype, name=f"layer{s + 1}_{b}")(x, valid)
        return jnp.mean(x.astype(jnp.float32), axis=(1, 2))


class SerenaResNet18(nn.Module):
    """ResNet-18 of SERENA (module doc).  ``apply(vars, x [B,H,W,C], train,
    return_features=False)`` -> float32 logits [B, num_classes]
    (and features [B, 8*width])."""

    num_classes: int
    width: int = 64
    dtype: Any = jnp.float32

    @property
    def feature_dim(self) -> int:
        return 8 * self.width

    @nn.compact
    def __call__(self, x, train: bool = False, return_features: bool = False, valid=None):
        f = SerenaResNet18Backbone(self.width, self.dtype, name="backbone")(x, train, valid)
        logits = nn.Dense(self.num_classes, use_bias=False, kernel_init=torch_default_init, dtype=self.dtype,
                          param_dtype=jnp.float32, name="head")(f.astype(self.dtype))
        logits = logits.astype(jnp.float32)
        return (logits, f) if return_features else logits


class SerenaMLPBackbone(nn.Module):
    hidden: Sequence[int] = (400, 400)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        del train
        x = x.reshape((x.shape[0], -1)).astype(self.dtype)
        for i, h in enumerate(self.hidden):
            x = nn.relu(nn.Dense(h, use_bias=False, kernel_init=torch_default_init, dtype=self.dtype,
                                 param_dtype=jnp.float32, name=f"fc{i}")(x))
        return x


class SerenaMLP(nn.Module):
    """Bias-free MLP (module doc).  ``apply(vars, x [B,...], train,
    return_features=False)`` -> float32 logits [B, num_classes]."""

    num_classes: int
    hidden: Sequence[int] = (400, 400)
    dtype: Any = jnp.float32

    @property
    def feature_dim(self) -> int:
        return int(self.hidden[-1])

    @nn.compact
    def __call__(self, x, train: bool = False, return_features: bool = False, valid=None):
        del valid
        f = SerenaMLPBackbone(tuple(self.hidden), self.dtype, name="backbone")(x, train)
        logits = nn.Dense(self.num_classes, use_bias=False, kernel_init=torch_default_init, dtype=self.dtype,
                          param_dtype=jnp.float32, name="head")(f)
        logits = logits.astype(jnp.float32)
        return (logits, f.astype(jnp.float32)) if return_features else logits
