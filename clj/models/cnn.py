"""Small convolutional network for 8x8 digits / 28x28 MNIST-like inputs."""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from clj.models.common import PARAM_DTYPE, Dtype, batch_norm, classify


class SmallCNNBackbone(nn.Module):
    """conv3x3(width) -> [BN] -> ReLU -> maxpool2 -> conv3x3(2*width) -> [BN] -> ReLU
    -> maxpool2 -> flatten -> Dense(feature_width) -> ReLU.

    Convolutions and pools use 'SAME' padding, so any spatial size works
    (8x8 -> 2x2, 28x28 -> 7x7 before flattening).

    Input: float ``[B, H, W, C]``. Output: ``[B, feature_width]`` in ``dtype``.
    """

    width: int = 32
    feature_width: int = 128
    use_bn: bool = False
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x = x.astype(self.dtype)
        for i, ch in enumerate((self.width, 2 * self.width)):
            x = nn.Conv(
                ch,
                (3, 3),
                padding="SAME",
                use_bias=not self.use_bn,
                dtype=self.dtype,
                param_dtype=PARAM_DTYPE,
                name=f"conv{i}",
            )(x)
            if self.use_bn:
                x = batch_norm(train, self.dtype, name=f"bn{i}")(x)
            x = nn.relu(x)
            x = nn.max_pool(x, (2, 2), strides=(2, 2), padding="SAME")
            # the stage's output map, kept only when "intermediates" is mutable (PODNet's POD-spatial)
            self.sow("intermediates", f"fmap{i}", x)
        x = x.reshape((x.shape[0], -1))
        x = nn.Dense(self.feature_width, dtype=self.dtype, param_dtype=PARAM_DTYPE, name="fc")(x)
        return nn.relu(x)


class SmallCNN(nn.Module):
    """Small 2-conv CNN classifier for 8x8 (sklearn digits) or 28x28 inputs.

    Architecture: two 3x3 conv layers (``width``, ``2*width`` channels), each
    followed by optional BatchNorm (``use_bn``, off by default), ReLU and a
    2x2 max-pool; then Dense(``feature_width``=128) + ReLU giving the
    features, and the ``head`` Dense(num_classes).

    Call: ``model.apply(variables, x, train=False, return_features=False)``
    with float32 ``x`` of shape ``[B, H, W, C]`` (already normalised).
    Returns float32 logits ``[B, num_classes]`` (and float32 features
    ``[B, feature_width]`` when ``return_features=True``). With
    ``use_bn=True`` the variables also contain ``batch_stats``.
    """

    num_classes: int
    width: int = 32
    feature_width: int = 128
    use_bn: bool = False
    dtype: Dtype = jnp.float32

    @property
    def feature_dim(self) -> int:
        """Feature dimension D = ``feature_width`` (128 by default)."""
        return int(self.feature_width)

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, return_features: bool = False):
        feats = SmallCNNBackbone(
            width=self.width,
            feature_width=self.feature_width,
            use_bn=self.use_bn,
            dtype=self.dtype,
            name="backbone",
        )(x, train)
        return classify(feats, self.num_classes, self.dtype, return_features)
