"""SER's two networks: a ResNet-18 classifier whose blocks can be modulated
multiplicatively, and a UNISAL-style saliency predictor on the same backbone.

Source: Sorrenti et al., "Saliency-driven Experience Replay for Continual
Learning" (SER), NeurIPS 2024; the architecture as the official code builds it,
described in ``docs/ser.md``, "The classifier and where it is modulated" and
"The saliency network":

* **Classifier** (:class:`ModulatedResNet18`): the CIFAR ResNet-18
  of :mod:`clj.models.resnet` (3x3 stem, no max-pool, stages of two
  BasicBlocks with widths ``width * (1, 2, 4, 8)`` and strides 1, 2, 2, 2).
  At five points -- the stem and the *last* BasicBlock of each stage -- the
  pre-ReLU activation ``a_i`` (the stem's BN output; a block's residual sum)
  is multiplied element-wise by the saliency encoder's pre-ReLU activation
  ``s_i`` at the same point, and the ReLU is applied to the product:
  ``h_i = ReLU(a_i * s_i)``.  ``mnp_blocks`` (five bools) selects the points.
  With ``s_i = 1`` (or no modulation) this is exactly the plain ResNet-18; the
  parameter tree has the same names as :class:`clj.models.resnet.ResNet18`,
  so the two share parameters.  ``stem`` (:data:`clj.models.resnet.RESNET_STEMS`)
  selects the stem: SER's code uses the CIFAR one at every resolution
  (``docs/ser.md``); ``"imagenet"`` (7x7 stride-2 conv, BN, ReLU, 3x3
  stride-2 max-pool) is the option for ImageNet-sized inputs (288x384), where
  the stem's modulation point is its BN output (before the ReLU and the pool).
* **Pooling**: ``pool_mode="mammoth_square"`` averages the left
  ``h x h`` square of the final ``h x w`` map (Mammoth's ``avg_pool2d`` with
  kernel = h); ``"global"`` averages all of it.  They agree for square maps.
* **Saliency net** (:class:`SaliencyNet`): the same ResNet-18 as encoder
  (``cnn``), returning its five pre-ReLU features, and a light decoder:
  ``skip_2x`` on stage 3 and ``skip_4x`` on stage 2 (1x1 expand, BN, ReLU6,
  channel dropout 0.6, 1x1 reduce with bias, BN), ``post_cnn`` (an inverted
  residual with expand ratio 1) on stage 4 (after ReLU, optionally
  concatenated with 16 learned Gaussian prior maps), bilinear x2,
  concatenation with ``skip_2x``, ``upsampling_2`` (inverted residual, expand
  2) and bilinear x2, concatenation with ``skip_4x``, ``post_upsampling_2``
  (inverted residual, expand 2), a 1x1 conv to one channel, nearest
  upsampling to the input size (x2 with the CIFAR stem, x8 with the ImageNet
  one) and a sigmoid.  Channel counts scale with ``width`` (the paper's
  ``width=64`` gives 256/128/64).  Decoder BatchNorms use momentum 0.99
  (PyTorch 0.01), the encoder's 0.9 (PyTorch 0.1).

Shapes: inputs float32 ``[B, H, W, C]`` with H and W multiples of 8 for the
saliency net (the two x2 upsamplings must meet the skip features), of 32
with the ImageNet stem (:func:`input_multiple`).

Dtypes: every module takes ``dtype``, the computation dtype of its
convolutions, BatchNorms and activations (``model.dtype``:
:func:`clj.models.compute_dtype`); parameters are float32, BatchNorm
statistics are reduced in float32, the classifier's logits and pooled
features and the saliency prediction are returned as float32.

Known differences from the PyTorch code: Flax BatchNorm keeps the biased
batch variance in its running average (PyTorch the unbiased one), and the
convolutions use the core's Kaiming (fan_out) initialisation rather than
PyTorch's default; both only matter when loading the official checkpoint,
which overwrites them.
"""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from clj.models.common import PARAM_DTYPE, batch_norm, classify
from clj.models.resnet import STEM_STRIDE, _conv, check_stem, stem_pool, stem_pre_relu

NUM_POINTS = 5  # stem + four stages
POOL_MODES = ("mammoth_square", "global")


class PreActBasicBlock(nn.Module):
    """BasicBlock returning ``(ReLU(pre), pre)``, ``pre`` = residual sum.

    Same parameters and names as :class:`clj.models.resnet.BasicBlock`
    (``conv1, bn1, conv2, bn2`` and, when the shape changes, the projection
    ``shortcut_conv, shortcut_bn``).
    """

    features: int
    stride: int = 1
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        dt = self.dtype
        y = _conv(self.features, 3, self.stride, dt, "conv1")(x)
        y = batch_norm(train, dt, "bn1")(y)
        y = nn.relu(y)
        y = _conv(self.features, 3, 1, dt, "conv2")(y)
        y = batch_norm(train, dt, "bn2")(y)
        res = x
        if self.stride != 1 or x.shape[-1] != self.features:
            res = _conv(self.features, 1, self.stride, dt, "shortcut_conv")(x)
            res = batch_norm(train, dt, "shortcut_bn")(res)
        pre = y + res
        return nn.relu(pre), pre


class PreActStage(nn.Module):
    """Two :class:`PreActBasicBlock` (names ``block_0``, ``block_1``); returns
    the last block's ``(ReLU(pre), pre)``."""

    features: int
    stride: int = 1
    num_blocks: int = 2
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        pre = None
        for i in range(self.num_blocks):
            x, pre = PreActBasicBlock(self.features, self.stride if i == 0 else 1, self.dtype,
                                      name=f"block_{i}")(x, train)
        return x, pre


def _modulate(out, pre, s, on: bool):
    """``ReLU(pre * s)`` where modulation is on and features are given, else ``out``."""
    if on and s is not None:
        return nn.relu(pre * s.astype(pre.dtype))
    return out


def square_pool(x: jax.Array, mode: str) -> jax.Array:
    """Pools ``[B, h, w, C]`` to ``[B, C]`` (float32).

    ``mammoth_square``: mean over rows ``[0, h)`` and columns ``[0, h)``
    (PyTorch ``avg_pool2d`` with kernel h and stride h, for h <= w < 2h;
    ``docs/ser.md``, "The classifier and where it is modulated"); ``global``:
    mean over all of ``h x w``.

    Raises:
      ValueError: an unknown mode, or ``mammoth_square`` with h > w or w >= 2h
        (where Mammoth's pooling would fail or emit several windows).
    """
    x = x.astype(jnp.float32)
    if mode == "global":
        return jnp.mean(x, axis=(1, 2))
    if mode == "mammoth_square":
        h, w = x.shape[1], x.shape[2]
        if not h <= w < 2 * h:
            raise ValueError(f"pool_mode='mammoth_square' needs h <= w < 2h for the final map, got {h}x{w}; "
                             "use pool_mode='global'.")
        return jnp.mean(x[:, :, :h], axis=(1, 2))
    raise ValueError(f"pool_mode={mode!r} is unknown; valid: {', '.join(POOL_MODES)}.")


def input_multiple(stem: str = "cifar") -> int:
    """The multiple H and W must be of for :class:`SaliencyNet` with ``stem``:
    8 times the stem's stride (8 CIFAR, 32 ImageNet, 16 ``conv3_maxpool``).

    Raises:
      ValueError: an unknown stem.
    """
    check_stem(stem)
    return 8 * STEM_STRIDE[stem]


class ModulatedResNet18Backbone(nn.Module):
    """ResNet-18 trunk with the five modulation points (module doc).

    ``__call__(x, train, sal_feats=None)`` returns ``(pooled [B, 8*width],
    prerelu list of 5 arrays)``; the pre-ReLU list holds the unmodulated
    ``a_i`` (what the saliency encoder hands to the classifier), in ``dtype``;
    the pooled features are float32.  ``stem``: ``"cifar"`` (SER's) or
    ``"imagenet"`` (:data:`clj.models.resnet.RESNET_STEMS`); the stem's
    point is its BN output, modulated before the ReLU and the stem's pool.
    """

    width: int = 64
    mnp_blocks: tuple[bool, ...] = (True,) * NUM_POINTS
    pool_mode: str = "mammoth_square"
    dtype: Any = jnp.float32
    stem: str = "cifar"

    @nn.compact
    def __call__(self, x, train: bool = False, sal_feats: Sequence[jax.Array] | None = None):
        dt = self.dtype
        x = x.astype(dt)
        s = list(sal_feats) if sal_feats is not None else [None] * NUM_POINTS
        a0 = stem_pre_relu(x, self.stem, self.width, train, dt)
        h = stem_pool(_modulate(nn.relu(a0), a0, s[0], self.mnp_blocks[0]), self.stem)
        pres = [a0]
        for i, (mult, stride) in enumerate(zip((1, 2, 4, 8), (1, 2, 2, 2))):
            out, pre = PreActStage(self.width * mult, stride, dtype=dt, name=f"stage_{i + 1}")(h, train)
            h = _modulate(out, pre, s[i + 1], self.mnp_blocks[i + 1])
            pres.append(pre)
        return square_pool(h, self.pool_mode), pres


class ModulatedResNet18(nn.Module):
    """SER's classifier: :class:`ModulatedResNet18Backbone` (``backbone``) and
    a Dense ``head``.

    Call: ``apply(vars, x, train=False, return_features=False,
    sal_feats=None)`` with x float32 [B, H, W, C]; ``sal_feats`` is the list
    of the saliency encoder's five pre-ReLU features (shapes of the stem and
    the four stages' outputs) or None (no modulation).  Returns float32 logits
    [B, num_classes] (and the float32 pooled features with
    ``return_features``), computed in ``dtype`` (float32 parameters).
    ``stem``: ``"cifar"`` (SER's code) or ``"imagenet"`` (module doc).
    """

    num_classes: int
    width: int = 64
    mnp_blocks: tuple[bool, ...] = (True,) * NUM_POINTS
    pool_mode: str = "mammoth_square"
    dtype: Any = jnp.float32
    stem: str = "cifar"

    @property
    def feature_dim(self) -> int:
        return 8 * int(self.width)

    @nn.compact
    def __call__(self, x, train: bool = False, return_features: bool = False, sal_feats=None):
        feats, _ = ModulatedResNet18Backbone(self.width, tuple(self.mnp_blocks), self.pool_mode, self.dtype,
                                             self.stem, name="backbone")(x, train, sal_feats)
        return classify(feats, self.num_classes, self.dtype, return_features)


# ---------------------------------------------------------------- decoder


def _bn(train: bool, name: str, momentum: float = 0.99, dtype: Any = jnp.float32) -> nn.BatchNorm:
    return nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=1e-5, dtype=dtype,
                        param_dtype=PARAM_DTYPE, name=name)


class PointwiseConv(nn.Module):
    """A 1x1 convolution as a contraction over channels: [B, H, W, C] ->
    [B, H, W, features] computed in ``dtype``, with ``nn.Conv``'s float32
    parameters (``kernel`` [1, 1, C, features], ``bias`` [features]) so
    checkpoints load either way.

    Every 1x1 convolution of the saliency decoder is one.  Under a vmap over
    seeds an ``nn.Conv`` with a per-seed kernel becomes a grouped convolution;
    with the seed axis sharded over devices XLA (CPU, jax 0.10) computed a
    stride-1 1x1 one wrongly (outputs off by O(1)) and refused the
    one-output-channel layer ("output feature dimension (value 1) ...
    feature_group_count (value 4)").  A contraction vmaps to a batched matmul
    and shards correctly
    (``tests/test_ser.py::test_saliency_net_vmapped_seeds_sharded_on_four_devices``)."""

    features: int
    use_bias: bool = True
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        k = self.param("kernel", nn.initializers.lecun_normal(), (1, 1, x.shape[-1], self.features), PARAM_DTYPE)
        x = x.astype(self.dtype)
        y = jnp.einsum("bhwc,co->bhwo", x, k[0, 0].astype(self.dtype))
        if self.use_bias:
            y = y + self.param("bias", nn.initializers.zeros, (self.features,), PARAM_DTYPE).astype(self.dtype)
        return y


def _conv1x1(features: int, name: str, bias: bool = False, dtype: Any = jnp.float32) -> nn.Module:
    return PointwiseConv(features, use_bias=bias, dtype=dtype, name=name)


def _depthwise(channels: int, name: str, dtype: Any = jnp.float32) -> nn.Conv:
    return nn.Conv(channels, (3, 3), padding=((1, 1), (1, 1)), feature_group_count=channels, use_bias=False,
                   dtype=dtype, param_dtype=PARAM_DTYPE, name=name)


class InvertedResidual(nn.Module):
    """MobileNetV2 inverted residual, stride 1 (``docs/ser.md``, "The
    saliency network").

    expand_ratio 1: depthwise 3x3, BN, ReLU6, 1x1 to ``features``, BN.
    expand_ratio r > 1: 1x1 to r*C_in, BN, ReLU6, depthwise 3x3, BN, ReLU6,
    1x1 to ``features``, BN.  A residual is added only when C_in equals
    ``features``.  ``bn_momentum``: Flax momentum of its BatchNorms;
    ``dtype``: the computation dtype.
    """

    features: int
    expand_ratio: int = 1
    bn_momentum: float = 0.99
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        dt, m = self.dtype, self.bn_momentum
        c_in = x.shape[-1]
        y = x
        hidden = c_in * self.expand_ratio
        if self.expand_ratio != 1:
            y = nn.relu6(_bn(train, "bn_expand", m, dt)(_conv1x1(hidden, "expand", dtype=dt)(y)))
        y = nn.relu6(_bn(train, "bn_dw", m, dt)(_depthwise(hidden, "dw", dt)(y)))
        y = _bn(train, "bn_project", m, dt)(_conv1x1(self.features, "project", dtype=dt)(y))
        return x + y if c_in == self.features else y


class Skip(nn.Module):
    """Decoder skip: 1x1 to ``2*features_in``, BN, ReLU6, channel dropout, 1x1
    (with bias) to ``features``, BN (``docs/ser.md``, "The saliency network"),
    computed in ``dtype``."""

    features: int
    drop: float = 0.6
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, train: bool = False):
        dt = self.dtype
        y = nn.relu6(_bn(train, "bn_expand", dtype=dt)(_conv1x1(2 * x.shape[-1], "expand", dtype=dt)(x)))
        y = nn.Dropout(self.drop, broadcast_dims=(1, 2), deterministic=not train)(y)
        return _bn(train, "bn_reduce", dtype=dt)(_conv1x1(self.features, "reduce", bias=True, dtype=dt)(y))


def manual_gaussian_init(key, shape, dtype=jnp.float32):
    """The 16 manual Gaussian priors [16, 2 (y, x), 2 (mu, log sigma)]
    (``docs/ser.md``, "The saliency network"): a 3x3 grid at
    {0.25, 0.5, 0.75}^2 with log sigma -1.5, three vertical bands, three
    horizontal bands, one broad centre."""
    del key, shape
    g = []
    for y in (0.25, 0.5, 0.75):
        for x in (0.25, 0.5, 0.75):
            g.append(((y, -1.5), (x, -1.5)))
    for x in (0.25, 0.5, 0.75):
        g.append(((0.5, 0.0), (x, -1.5)))
    for y in (0.25, 0.5, 0.75):
        g.append(((y, -1.5), (0.5, 0.0)))
    g.append(((0.5, 0.0), (0.5, 0.0)))
    return jnp.asarray(g, dtype)


def gaussian_maps(g: jax.Array, h: int, w: int, scale: float = 6.0) -> jax.Array:
    """Prior maps float32 [h, w, 16] from parameters g [16, 2, 2]
    (``docs/ser.md``, "The saliency network")
    over a linspace(0, 1) grid: ``scale * exp(-((y-mu_y)/s_y)^2/2) *
    exp(-((x-mu_x)/s_x)^2/2)``, s = exp(log sigma)."""
    ys = jnp.linspace(0.0, 1.0, h)[:, None, None]
    xs = jnp.linspace(0.0, 1.0, w)[None, :, None]
    my, sy = g[:, 0, 0], jnp.exp(g[:, 0, 1])
    mx, sx = g[:, 1, 0], jnp.exp(g[:, 1, 1])
    return scale * jnp.exp(-0.5 * ((ys - my) / sy) ** 2) * jnp.exp(-0.5 * ((xs - mx) / sx) ** 2)


def upsample_bilinear2x(x: jax.Array) -> jax.Array:
    """Bilinear x2 with half-pixel centres (PyTorch ``align_corners=False``)."""
    B, h, w, C = x.shape
    return jax.image.resize(x, (B, 2 * h, 2 * w, C), "bilinear")


def upsample_nearest2x(x: jax.Array) -> jax.Array:
    """Nearest x2 = pixel repetition on both spatial axes."""
    return upsample_nearest(x, 2)


def upsample_nearest(x: jax.Array, factor: int) -> jax.Array:
    """Nearest x ``factor`` (a static int) = pixel repetition on both spatial
    axes: [B, h, w, C] -> [B, factor h, factor w, C]."""
    if factor == 1:
        return x
    return jnp.repeat(jnp.repeat(x, factor, axis=1), factor, axis=2)


class SaliencyNet(nn.Module):
    """UNISAL-style saliency predictor over a ResNet-18 encoder (module doc).

    Call: ``apply(vars, x, train=False)`` (``rngs={"dropout": k}`` when
    training) with x float32 [B, H, W, C], H and W multiples of 8 (of 32
    with ``stem="imagenet"``: :func:`input_multiple`).  Returns ``(pred,
    feats)``: pred float32 [B, H, W, 1] in (0, 1), feats the encoder's five
    pre-ReLU features (stem and stages 1-4) in ``dtype``, the computation
    dtype of the whole net (float32 parameters).  ``stem``: the encoder's
    (the classifier's) stem.

    Raises:
      ValueError: H or W not a multiple of :func:`input_multiple`, or an
        unknown stem.
    """

    width: int = 64
    n_gaussians: int = 0
    dtype: Any = jnp.float32
    stem: str = "cifar"

    @nn.compact
    def __call__(self, x, train: bool = False):
        B, H, W, _ = x.shape
        m = input_multiple(self.stem)
        if H % m or W % m:
            raise ValueError(f"the saliency decoder needs H and W divisible by {m} (stem {self.stem!r}), got "
                             f"{H}x{W} (pad the input: SER pads to the next multiple of {m}).")
        dt = self.dtype
        _, feats = ModulatedResNet18Backbone(self.width, (False,) * NUM_POINTS, "global", dt, self.stem,
                                             name="cnn")(x, train)
        f2, f3, f4 = (nn.relu(f) for f in feats[2:])  # skip_with_relu on the three deepest
        w = self.width
        s2 = Skip(2 * w, dtype=dt, name="skip_2x")(f3, train)
        s4 = Skip(w, dtype=dt, name="skip_4x")(f2, train)
        if self.n_gaussians > 0:
            g = self.param("coarse_gaussians", manual_gaussian_init, (16, 2, 2))
            maps = gaussian_maps(g, f4.shape[1], f4.shape[2]).astype(f4.dtype)
            f4 = jnp.concatenate([f4, jnp.broadcast_to(maps[None], (B, *maps.shape))], axis=-1)
        y = InvertedResidual(4 * w, 1, bn_momentum=0.99, dtype=dt, name="post_cnn")(f4, train)
        y = jnp.concatenate([upsample_bilinear2x(y), s2], axis=-1)
        y = upsample_bilinear2x(InvertedResidual(2 * w, 2, dtype=dt, name="upsampling_2")(y, train))
        y = jnp.concatenate([y, s4], axis=-1)
        y = InvertedResidual(w, 2, dtype=dt, name="post_upsampling_2")(y, train)
        y = _conv1x1(1, "adaptation", bias=True, dtype=dt)(y)
        y = upsample_nearest(y, H // y.shape[1])  # to the input size: x2 (CIFAR stem), x8 (ImageNet stem)
        return nn.sigmoid(y.astype(jnp.float32)), feats
