"""Multi-layer perceptron (Mammoth's MNIST MLP)."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from clj.models.common import PARAM_DTYPE, Dtype, classify


class MLPBackbone(nn.Module):
    """Flatten + ReLU hidden Dense layers.

    Input: float ``[B, ...]`` (e.g. ``[B, 28, 28, 1]``), flattened per example.
    Output: ``[B, hidden[-1]]`` features in ``dtype``.
    """

    hidden: Sequence[int] = (100, 100)
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        del train  # no train-dependent layers
        x = x.reshape((x.shape[0], -1)).astype(self.dtype)
        for i, h in enumerate(self.hidden):
            x = nn.Dense(h, dtype=self.dtype, param_dtype=PARAM_DTYPE, name=f"fc{i}")(x)
            x = nn.relu(x)
        return x


class MLP(nn.Module):
    """MLP classifier: flatten -> [Dense(h) -> ReLU]* -> head Dense(num_classes).

    With ``hidden=(100, 100)`` on ``[B, 28, 28, 1]`` inputs this is the
    784-100-100-10 MLP used for MNIST benchmarks in Mammoth (Buzzega et al.,
    NeurIPS 2020) and GEM (Lopez-Paz & Ranzato, 2017): 89,610 parameters.

    Call: ``model.apply(variables, x, train=False, return_features=False)``
    with float32 ``x`` of shape ``[B, H, W, C]`` (already normalised).
    Returns float32 logits ``[B, num_classes]`` (and float32 features
    ``[B, hidden[-1]]`` when ``return_features=True``). No BatchNorm, so
    ``variables == {"params": ...}``.
    """

    num_classes: int
    hidden: Sequence[int] = (100, 100)
    dtype: Dtype = jnp.float32

    @property
    def feature_dim(self) -> int:
        """Feature dimension D = ``hidden[-1]`` (``hidden`` must be non-empty)."""
        return int(self.hidden[-1])

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, return_features: bool = False):
        feats = MLPBackbone(hidden=tuple(self.hidden), dtype=self.dtype, name="backbone")(x, train)
        return classify(feats, self.num_classes, self.dtype, return_features)
