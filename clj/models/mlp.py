"""Multi-layer perceptron (Mammoth's MNIST MLP)."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from clj.models.common import PARAM_DTYPE, Dtype, classify

MLP_INITS = ("lecun_normal", "xavier_uniform")
"""``model.weight_init`` of the MLP (clj.config.MLP_INITS mirrors it, JAX-free):
Flax's default LeCun normal (variance 1/fan_in), or the Xavier (Glorot)
uniform of Mammoth's MNIST MLP (``backbone.xavier``: U(-a, a) with
a = sqrt(6 / (fan_in + fan_out)); Glorot & Bengio 2010, Eq. 16). Biases
start at 0 in both."""


def mlp_kernel_init(init: str):
    """The Dense weight initializer named ``init`` (one of :data:`MLP_INITS`).

    Raises:
      ValueError: ``init`` not in :data:`MLP_INITS`, naming the valid ones.
    """
    if init == "lecun_normal":
        return nn.initializers.lecun_normal()
    if init == "xavier_uniform":
        return nn.initializers.xavier_uniform()
    raise ValueError(f"model.weight_init={init!r} is unknown; valid: {', '.join(MLP_INITS)}.")


class MLPBackbone(nn.Module):
    """Flatten + ReLU hidden Dense layers.

    Input: float ``[B, ...]`` (e.g. ``[B, 28, 28, 1]``), flattened per example.
    Output: ``[B, hidden[-1]]`` features in ``dtype``.
    """

    hidden: Sequence[int] = (100, 100)
    dtype: Dtype = jnp.float32
    weight_init: str = "lecun_normal"

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        del train  # no train-dependent layers
        x = x.reshape((x.shape[0], -1)).astype(self.dtype)
        for i, h in enumerate(self.hidden):
            x = nn.Dense(h, dtype=self.dtype, param_dtype=PARAM_DTYPE, kernel_init=mlp_kernel_init(self.weight_init),
                         name=f"fc{i}")(x)
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
    ``variables == {"params": ...}``. ``weight_init`` names the weight
    initializer (:data:`MLP_INITS`; ``"xavier_uniform"`` is Mammoth's).
    """

    num_classes: int
    hidden: Sequence[int] = (100, 100)
    dtype: Dtype = jnp.float32
    weight_init: str = "lecun_normal"

    @property
    def feature_dim(self) -> int:
        """Feature dimension D = ``hidden[-1]`` (``hidden`` must be non-empty)."""
        return int(self.hidden[-1])

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, return_features: bool = False):
        feats = MLPBackbone(hidden=tuple(self.hidden), dtype=self.dtype, weight_init=self.weight_init,
                            name="backbone")(x, train)
        return classify(feats, self.num_classes, self.dtype, return_features, mlp_kernel_init(self.weight_init))
