"""Residual networks: ResNet-18 (CIFAR stem, its reduced variant, and the
ImageNet stem of torchvision's ``resnet18``), its MEMO cut, and ResNet-32.

Conventions (see :mod:`clj.models.common`): NHWC float inputs, BatchNorm with
momentum 0.9 / eps 1e-5, bias-free convolutions with Kaiming (fan_out)
initialisation, float32 parameters, computation in ``dtype``, float32 logits.
"""

from __future__ import annotations

from typing import Dict

import flax.linen as nn
import jax
import jax.numpy as jnp

from clj.models.common import PARAM_DTYPE, Dtype, batch_norm, classify, conv_kernel_init
from clj.models.utils import count_params


def _conv(features: int, kernel: int, stride: int, dtype: Dtype, name: str) -> nn.Conv:
    """Bias-free conv with PyTorch-style symmetric padding ``kernel // 2``."""
    pad = kernel // 2
    return nn.Conv(
        features,
        (kernel, kernel),
        strides=(stride, stride),
        padding=((pad, pad), (pad, pad)),
        use_bias=False,
        dtype=dtype,
        param_dtype=PARAM_DTYPE,
        kernel_init=conv_kernel_init,
        name=name,
    )


def _global_avg_pool(x: jnp.ndarray, dtype: Dtype) -> jnp.ndarray:
    """Mean over H, W (reduced in float32), ``[B, H, W, C] -> [B, C]``."""
    return jnp.mean(x.astype(jnp.float32), axis=(1, 2)).astype(dtype)


class BasicBlock(nn.Module):
    """Two 3x3 convs with BN and an identity / downsampling shortcut.

    ``shortcut="B"``: 1x1 conv (stride ``stride``) + BN projection when the
    shape changes (ResNet-18 CIFAR variant).
    ``shortcut="A"``: parameter-free; subsample spatially by ``stride`` and
    zero-pad the extra channels (He et al. 2016, Sec. 4.2 "option A").

    Input ``[B, H, W, Cin]`` -> output ``[B, ceil(H/stride), ceil(W/stride), features]``.
    """

    features: int
    stride: int = 1
    shortcut: str = "B"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        in_ch = x.shape[-1]
        y = _conv(self.features, 3, self.stride, self.dtype, "conv1")(x)
        y = batch_norm(train, self.dtype, "bn1")(y)
        y = nn.relu(y)
        y = _conv(self.features, 3, 1, self.dtype, "conv2")(y)
        y = batch_norm(train, self.dtype, "bn2")(y)

        residual = x
        if self.stride != 1 or in_ch != self.features:
            if self.shortcut == "B":
                residual = _conv(self.features, 1, self.stride, self.dtype, "shortcut_conv")(x)
                residual = batch_norm(train, self.dtype, "shortcut_bn")(residual)
            elif self.shortcut == "A":
                if self.features < in_ch:
                    raise ValueError("option-A shortcut cannot reduce the channel count")
                residual = x[:, :: self.stride, :: self.stride, :]
                extra = self.features - in_ch
                # Zeros appended after the existing channels (as PyCIL's DownsampleA).
                residual = jnp.pad(residual, ((0, 0), (0, 0), (0, 0), (0, extra)))
            else:
                raise ValueError(f"unknown shortcut option {self.shortcut!r}; expected 'A' or 'B'")
        return nn.relu(y + residual.astype(y.dtype))


class ResNetStage(nn.Module):
    """``num_blocks`` BasicBlocks; the first one applies ``stride``.

    Submodules are named ``block_0 .. block_{num_blocks-1}``.
    """

    features: int
    num_blocks: int
    stride: int = 1
    shortcut: str = "B"
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        for i in range(self.num_blocks):
            x = BasicBlock(
                self.features,
                stride=self.stride if i == 0 else 1,
                shortcut=self.shortcut,
                dtype=self.dtype,
                name=f"block_{i}",
            )(x, train)
        return x


# ----------------------------------------------------------------------------
# ResNet-18 (CIFAR and ImageNet stems)
# ----------------------------------------------------------------------------

RESNET_STEMS = ("cifar", "imagenet", "conv3_maxpool")
"""The stems of :class:`ResNet18Backbone` (``model.stem``):

* ``"cifar"``: 3x3 conv stride 1 + BN + ReLU, no pooling (CIFAR ResNets of
  Mammoth and PyCIL; total stride 8);
* ``"imagenet"``: 7x7 conv stride 2 (padding 3) + BN + ReLU + 3x3 max-pool
  stride 2 (padding 1), He et al. 2016 Table 1 and torchvision's
  ``resnet18`` (total stride 32; PyCIL's ``memo_resnet18`` and its
  ``resnet18`` on ImageNet B0 settings);
* ``"conv3_maxpool"``: 3x3 conv stride 1 + BN + ReLU + the same max-pool
  (PyCIL's ``resnet18`` on ImageNet when ``init_cls != increment``; total
  stride 16).
"""
STEM_STRIDE = {"cifar": 1, "imagenet": 4, "conv3_maxpool": 2}
"""Spatial reduction of each stem (input side / stem output side)."""


def check_stem(stem: str) -> None:
    """Raises ValueError naming ``stem`` and :data:`RESNET_STEMS` when unknown."""
    if stem not in RESNET_STEMS:
        raise ValueError(f"model.stem={stem!r} is unknown; valid: {', '.join(RESNET_STEMS)}.")


def stem_pre_relu(x: jnp.ndarray, stem: str, width: int, train: bool, dtype: Dtype) -> jnp.ndarray:
    """The stem's convolution + BN (its pre-ReLU activation), registered on the
    calling module as ``stem_conv`` / ``stem_bn`` (call it inside an
    ``nn.compact`` method).

    ``[B, H, W, C] -> [B, H/s, W/s, width]`` in ``dtype`` with s = 2 for the
    ``imagenet`` stem's stride-2 7x7 conv (PyTorch padding 3: ``ceil(H/2)``),
    else 1 (3x3, padding 1).

    Raises:
      ValueError: an unknown ``stem`` (:func:`check_stem`).
    """
    check_stem(stem)
    kernel, stride = (7, 2) if stem == "imagenet" else (3, 1)
    y = _conv(width, kernel, stride, dtype, "stem_conv")(x)
    return batch_norm(train, dtype, "stem_bn")(y)


def stem_pool(x: jnp.ndarray, stem: str) -> jnp.ndarray:
    """The stem's pooling after its ReLU: identity for ``"cifar"``, else a 3x3
    max-pool with stride 2 and padding 1 (PyTorch ``MaxPool2d(3, 2, 1)``: the
    padding never wins, ``[B, H, W, C] -> [B, ceil(H/2), ceil(W/2), C]``)."""
    if stem == "cifar":
        return x
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


def resnet_stem(x: jnp.ndarray, stem: str, width: int, train: bool, dtype: Dtype) -> jnp.ndarray:
    """The whole stem: :func:`stem_pre_relu`, ReLU, :func:`stem_pool`."""
    return stem_pool(nn.relu(stem_pre_relu(x, stem, width, train, dtype)), stem)


RESNET18_STAGES = tuple(zip((1, 2, 4, 8), (1, 2, 2, 2)))  # (width multiplier, stride) of stages 1..4


class ResNet18Backbone(nn.Module):
    """ResNet-18 feature extractor.

    The stem ``stem`` (:data:`RESNET_STEMS`; ``"cifar"``: 3x3 stride-1 conv
    with ``width`` channels + BN + ReLU, no max-pool; ``"imagenet"``: 7x7
    stride-2 conv + BN + ReLU + 3x3 stride-2 max-pool), then four stages of
    two BasicBlocks with widths ``width * (1, 2, 4, 8)`` and strides
    ``(1, 2, 2, 2)``, projection (1x1 conv + BN) shortcuts; global average
    pooling.  The parameter names do not depend on the stem.

    Input: float ``[B, H, W, C]`` (CIFAR: ``[B, 32, 32, 3]``; ImageNet:
    ``[B, 224, 224, 3]``).
    Output: ``[B, 8 * width]`` features in ``dtype``.

    Raises:
      ValueError: an unknown ``stem`` (at the first call).
    """

    width: int = 64
    dtype: Dtype = jnp.float32
    stem: str = "cifar"

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x = resnet_stem(x.astype(self.dtype), self.stem, self.width, train, self.dtype)
        for i, (mult, stride) in enumerate(RESNET18_STAGES):
            x = ResNetStage(
                self.width * mult, 2, stride=stride, shortcut="B", dtype=self.dtype, name=f"stage_{i + 1}"
            )(x, train)
        return _global_avg_pool(x, self.dtype)


class ResNet18Shallow(nn.Module):
    """Generalized (shared) part of MEMO's ResNet-18 cut: the stem and
    stages 1-3 (PyCIL ``convs/memo_resnet.py``,
    ``GeneralizedResNet_imagenet``: conv1, bn1, max-pool, layer1-3).

    2,782,784 parameters for ``width=64`` and the ``imagenet`` stem (as
    PyCIL's ``memo_resnet18``).

    Input: float ``[B, H, W, C]``. Output: feature map
    ``[B, H / (8 s), W / (8 s), 4 * width]`` in ``dtype``, s the stem's stride
    (:data:`STEM_STRIDE`; ceil at every stride).
    """

    width: int = 64
    dtype: Dtype = jnp.float32
    stem: str = "imagenet"

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x = resnet_stem(x.astype(self.dtype), self.stem, self.width, train, self.dtype)
        for i, (mult, stride) in enumerate(RESNET18_STAGES[:3]):
            x = ResNetStage(self.width * mult, 2, stride, "B", self.dtype, name=f"stage_{i + 1}")(x, train)
        return x


class ResNet18Deep(nn.Module):
    """Specialized (per-task) part of MEMO's ResNet-18 cut: stage 4 and the
    global average pool (PyCIL ``SpecializedResNet_imagenet``: layer4,
    avgpool).  8,393,728 parameters for ``width=64``.

    Input: the feature map of :class:`ResNet18Shallow` ``[B, h, w, 4 * width]``.
    Output: ``[B, 8 * width]`` features in ``dtype``.
    """

    width: int = 64
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x = x.astype(self.dtype)
        mult, stride = RESNET18_STAGES[3]
        x = ResNetStage(self.width * mult, 2, stride, "B", self.dtype, name="stage_4")(x, train)
        return _global_avg_pool(x, self.dtype)


class ResNet18(nn.Module):
    """ResNet-18 (He et al. 2016 BasicBlocks [2, 2, 2, 2]), CIFAR stem by default.

    ``width=64`` is the standard CIFAR ResNet-18 (11,173,962 parameters with a
    10-class head, BN scale/bias included, running statistics excluded).
    ``width=20`` is the "reduced ResNet-18" used in online continual learning
    (GEM, Lopez-Paz & Ranzato 2017; Mammoth / DER, Buzzega et al. 2020,
    ``reduced_resnet18`` with ``nf=20``).  ``stem="imagenet"`` is
    torchvision's ``resnet18`` (11,689,512 parameters with a 1,000-class
    head, as its ``parameters()`` counts them); see :data:`RESNET_STEMS`.

    Call: ``model.apply(variables, x, train=False, return_features=False)``
    with float32 ``x`` of shape ``[B, H, W, C]`` (already normalised).
    Returns float32 logits ``[B, num_classes]`` (and float32 features
    ``[B, 8 * width]`` when ``return_features=True``). Variables hold
    ``params`` and ``batch_stats``; in training call with
    ``train=True, mutable=["batch_stats"]``.
    """

    num_classes: int
    width: int = 64
    dtype: Dtype = jnp.float32
    stem: str = "cifar"

    @property
    def feature_dim(self) -> int:
        """Feature dimension D = ``8 * width`` (512 standard, 160 reduced)."""
        return 8 * int(self.width)

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, return_features: bool = False):
        feats = ResNet18Backbone(width=self.width, dtype=self.dtype, stem=self.stem, name="backbone")(x, train)
        return classify(feats, self.num_classes, self.dtype, return_features)


# ----------------------------------------------------------------------------
# ResNet-32 (CIFAR, option-A shortcuts)
# ----------------------------------------------------------------------------

RESNET32_FEATURE_DIM = 64


class ResNet32Shallow(nn.Module):
    """Shallow ("generalized", MEMO) part of ResNet-32: stem + stage_1 + stage_2.

    3x3 conv (16) + BN + ReLU, then stage_1 (``num_blocks`` blocks, 16 ch,
    stride 1) and stage_2 (32 ch, stride 2), option-A shortcuts.
    112,016 parameters for ``num_blocks=5``.

    Input: float ``[B, H, W, C]`` (CIFAR ``[B, 32, 32, 3]``).
    Output: feature map ``[B, H/2, W/2, 32]`` in ``dtype``.
    """

    num_blocks: int = 5
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x = x.astype(self.dtype)
        x = _conv(16, 3, 1, self.dtype, "stem_conv")(x)
        x = batch_norm(train, self.dtype, "stem_bn")(x)
        x = nn.relu(x)
        x = ResNetStage(16, self.num_blocks, 1, "A", self.dtype, name="stage_1")(x, train)
        x = ResNetStage(32, self.num_blocks, 2, "A", self.dtype, name="stage_2")(x, train)
        return x


class ResNet32Deep(nn.Module):
    """Deep ("specialized", MEMO) part of ResNet-32: stage_3 + global average pool.

    ``num_blocks`` BasicBlocks with 64 channels, first with stride 2 and an
    option-A shortcut. 351,488 parameters for ``num_blocks=5``.

    Input: feature map ``[B, H', W', 32]`` (output of :class:`ResNet32Shallow`).
    Output: ``[B, 64]`` features in ``dtype``.
    """

    num_blocks: int = 5
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x = x.astype(self.dtype)
        x = ResNetStage(64, self.num_blocks, 2, "A", self.dtype, name="stage_3")(x, train)
        return _global_avg_pool(x, self.dtype)


class ResNet32Backbone(nn.Module):
    """ResNet-32 feature extractor = ``shallow`` (:class:`ResNet32Shallow`)
    followed by ``deep`` (:class:`ResNet32Deep`).

    Parameters live under ``{"shallow": ..., "deep": ...}``; 463,504 in total
    for ``num_blocks=5`` (depth 6n+2 = 32).

    Input: float ``[B, H, W, C]``. Output: ``[B, 64]`` features in ``dtype``.
    """

    num_blocks: int = 5
    dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        x = ResNet32Shallow(self.num_blocks, self.dtype, name="shallow")(x, train)
        return ResNet32Deep(self.num_blocks, self.dtype, name="deep")(x, train)


class ResNet32(nn.Module):
    """CIFAR ResNet-32 (He et al., CVPR 2016, Sec. 4.2), as PyCIL's ``resnet32``.

    3x3 conv 16 + BN + ReLU stem; three stages of 5 BasicBlocks with widths
    16/32/64 and strides 1/2/2; option-A (parameter-free: stride-2 spatial
    subsampling + zero channel padding) shortcuts; global average pooling to
    64-d features. The backbone has 463,504 parameters; MEMO (Zhou et al.,
    ICLR 2023) splits it into the generalized part ``backbone/shallow``
    (stem + stage_1 + stage_2, 112,016) and the specialized part
    ``backbone/deep`` (stage_3, 351,488); see :func:`resnet32_split_param_counts`.

    Call: ``model.apply(variables, x, train=False, return_features=False)``
    with float32 ``x`` of shape ``[B, H, W, C]`` (already normalised;
    CIFAR ``[B, 32, 32, 3]``). Returns float32 logits ``[B, num_classes]``
    (and float32 features ``[B, 64]`` when ``return_features=True``).
    Variables hold ``params`` and ``batch_stats``.
    """

    num_classes: int
    num_blocks: int = 5
    dtype: Dtype = jnp.float32

    @property
    def feature_dim(self) -> int:
        """Feature dimension D = 64."""
        return RESNET32_FEATURE_DIM

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False, return_features: bool = False):
        feats = ResNet32Backbone(self.num_blocks, self.dtype, name="backbone")(x, train)
        return classify(feats, self.num_classes, self.dtype, return_features)


def resnet32_split_param_counts(num_blocks: int = 5) -> Dict[str, int]:
    """Parameter counts of the MEMO split of the ResNet-32 backbone (no head).

    Computed from shapes only (``jax.eval_shape``; no FLOPs). For the
    standard ``num_blocks=5``: ``{"shallow": 112016, "deep": 351488,
    "total": 463504}``, where ``shallow`` = stem + stage_1 + stage_2 and
    ``deep`` = stage_3.
    """
    key = jax.random.PRNGKey(0)
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    h = jax.ShapeDtypeStruct((1, 16, 16, 32), jnp.float32)
    shallow = jax.eval_shape(ResNet32Shallow(num_blocks).init, key, x)
    deep = jax.eval_shape(ResNet32Deep(num_blocks).init, key, h)
    n_shallow = count_params(shallow["params"])
    n_deep = count_params(deep["params"])
    return {"shallow": n_shallow, "deep": n_deep, "total": n_shallow + n_deep}


def resnet18_split_param_counts(width: int = 64, stem: str = "imagenet") -> Dict[str, int]:
    """Parameter counts of MEMO's cut of the ResNet-18 backbone (no head):
    ``{"shallow": stem + stages 1-3, "deep": stage 4, "total": both}``, from
    shapes only (``jax.eval_shape``).  ``width=64``, ImageNet stem:
    ``{"shallow": 2782784, "deep": 8393728, "total": 11176512}``, PyCIL's
    ``memo_resnet18`` (``tests/test_imagenet_models.py``).
    """
    key = jax.random.PRNGKey(0)
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    shallow_m = ResNet18Shallow(width, stem=stem)
    shallow = jax.eval_shape(shallow_m.init, key, x)
    h = jax.eval_shape(lambda v, x: shallow_m.apply(v, x), shallow, x)
    deep = jax.eval_shape(ResNet18Deep(width).init, key, h)
    n_shallow = count_params(shallow["params"])
    n_deep = count_params(deep["params"])
    return {"shallow": n_shallow, "deep": n_deep, "total": n_shallow + n_deep}
