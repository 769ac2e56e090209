"""On-device input pipeline: uint8 -> float, random crops, flip, brightness
jitter, resize, normalise.

All functions are pure, jit- and vmap-able, batched over a leading axis, and
run on whatever device holds the batch; there is no host input pipeline on
the hot path.  The image operations are dm-pix's (``dm_pix``: flips) and
JAX's own resampling (``jax.image``: the bilinear resizes); what is written
here is the sampling of the random parameters, the multiplicative
brightness (dm-pix's is additive) and the centre crop's offsets
(torchvision's rounding; ``dm_pix.center_crop`` puts an odd margin's extra
pixel on the other side).

The transforms of the references (``augment.preset``, :mod:`clj.config`):

* torchvision ``RandomCrop(32, padding=4)``: :func:`random_crop`;
* ``RandomResizedCrop(S)``: :func:`sample_resized_crop_boxes` (its
  parameter sampling, with its 10 tries and centre-crop fallback) and
  :func:`resized_crop` (crop + bilinear resize to S x S);
* ``RandomHorizontalFlip()``: :func:`random_flip`;
* ``ColorJitter(brightness=b)``: :func:`random_brightness`;
* ``Resize(R)`` + ``CenterCrop(S)``: :func:`resize_shorter_side` and
  :func:`center_crop`;
* ``ToTensor()`` + ``Normalize(mean, std)``: the scaling to [0, 1] and the
  normalisation of :class:`Augment`; :data:`NORMALIZATION_STATS` holds the
  references' constants.

Differences from torchvision on PIL images: the images are the stored
(already decoded, fixed-size) arrays, so a random resized crop of ImageNet
samples its box on the stored image, not on the original JPEG; every step
stays in float32 (PIL rounds to uint8 after each resize and after the jitter).
"""
from __future__ import annotations

import dataclasses
import math

import dm_pix
import jax
import jax.numpy as jnp

NORMALIZATION_STATS = {
    # PyCIL utils/data.py iCIFAR100 and Mammoth datasets/seq_cifar100.py
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    # torchvision's ImageNet statistics (PyCIL iImageNet100 / iImageNet1000, SER)
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
"""``augment.normalization`` -> (mean, std), per channel, fractions of 255
(``"dataset"``, the default, takes the training set's own statistics)."""


@dataclasses.dataclass(frozen=True)
class Augment:
    """The training/evaluation transform of a scenario (hashable, static).

    Training order (as the references compose them): scale to [0, 1]; one
    random crop (``resized_crop`` or ``crop_pad``); flip; brightness;
    normalise.  Evaluation: scale; ``eval_resize``; ``eval_crop``; normalise.

    Attributes:
      mean, std: per-channel constants, as fractions of 255 (length C).
      crop_pad: pad each side by this many zero pixels and crop back to the
        original size at a random offset (0 = no crop; CIFAR uses 4).
      flip: random horizontal flip with probability 1/2.
      normalize: subtract ``mean`` and divide by ``std`` after scaling to
        [0, 1]; when False the output is ``x / 255``.
      resized_crop: side S of torchvision's ``RandomResizedCrop(S)`` (0 =
        off): a box of area fraction in ``crop_scale`` and aspect ratio
        (width / height) log-uniform in ``crop_ratio``, resized bilinearly
        (antialiased) to S x S.
      crop_scale, crop_ratio: the box's ranges (torchvision's defaults
        (0.08, 1) and (3/4, 4/3)).
      brightness: ``ColorJitter(brightness=b)``: every image times its own
        factor uniform in ``[max(0, 1 - b), 1 + b]``, clipped to [0, 1]
        (0 = off).
      eval_resize: evaluation: resize the shorter side to this (the longer
        in proportion, truncated, as torchvision's ``Resize(int)``); 0 = off.
      eval_crop: evaluation: centre crop to this square side (0 = off).
    """

    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    crop_pad: int = 0
    flip: bool = False
    normalize: bool = True
    resized_crop: int = 0
    crop_scale: tuple[float, float] = (0.08, 1.0)
    crop_ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0)
    brightness: float = 0.0
    eval_resize: int = 0
    eval_crop: int = 0

    def output_shape(self, image_shape: tuple[int, ...], train: bool) -> tuple[int, ...]:
        """(H', W', C) of the transformed images of ``image_shape`` (H, W, C).

        Raises:
          ValueError: an ``eval_crop`` larger than the (resized) evaluation image.
        """
        H, W, C = (int(d) for d in image_shape)
        if train:
            return (self.resized_crop, self.resized_crop, C) if self.resized_crop > 0 else (H, W, C)
        h, w = resized_shorter_side_shape(H, W, self.eval_resize) if self.eval_resize > 0 else (H, W)
        if self.eval_crop > 0:
            if self.eval_crop > min(h, w):
                raise ValueError(f"augment.eval_crop={self.eval_crop} is larger than the {h}x{w} evaluation images.")
            h = w = self.eval_crop
        return h, w, C

    def __call__(self, x: jax.Array, rng: jax.Array | None = None, train: bool = False) -> jax.Array:
        """Transforms a batch.

        Args:
          x: uint8 [B, H, W, C].
          rng: PRNG key (needed when ``train`` and a random transform is on).
          train: apply the random transforms (else the evaluation ones).

        Returns:
          float32 [B, H', W', C] (:meth:`output_shape`).

        Raises:
          ValueError: ``train`` with a random transform and no ``rng``; an
            ``eval_crop`` larger than the evaluation image.
        """
        out = x.astype(jnp.float32) / 255.0
        if train and (self.crop_pad > 0 or self.flip or self.resized_crop > 0 or self.brightness > 0):
            if rng is None:
                raise ValueError("Augment(train=True) with a random transform needs an rng key.")
            k_crop, k_flip = jax.random.split(rng)
            if self.resized_crop > 0:
                boxes = sample_resized_crop_boxes(k_crop, out.shape[0], out.shape[1], out.shape[2],
                                                  self.crop_scale, self.crop_ratio)
                out = resized_crop(out, boxes, (self.resized_crop, self.resized_crop))
            elif self.crop_pad > 0:
                out = random_crop(out, k_crop, self.crop_pad)
            if self.flip:
                out = random_flip(out, k_flip)
            if self.brightness > 0:
                out = random_brightness(out, jax.random.fold_in(rng, 2), self.brightness)
        elif not train:
            if self.eval_resize > 0:
                out = resize_shorter_side(out, self.eval_resize)
            if self.eval_crop > 0:
                self.output_shape(x.shape[1:], train=False)  # raises when the crop does not fit
                out = center_crop(out, self.eval_crop)
        if self.normalize:
            mean = jnp.asarray(self.mean, jnp.float32)
            std = jnp.asarray(self.std, jnp.float32)
            out = (out - mean) / std
        return out


def random_crop(x: jax.Array, rng: jax.Array, pad: int) -> jax.Array:
    """Zero-pads [B, H, W, C] by ``pad`` on each side and crops each example
    back to H x W at an independent uniform offset in [0, 2 * pad]."""
    B, H, W, C = x.shape
    padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    offs = jax.random.randint(rng, (B, 2), 0, 2 * pad + 1)

    def crop(img, off):
        return jax.lax.dynamic_slice(img, (off[0], off[1], 0), (H, W, C))

    return jax.vmap(crop)(padded, offs)


def random_flip(x: jax.Array, rng: jax.Array) -> jax.Array:
    """Flips each example of [B, H, W, C] left-right with probability 1/2
    (one Bernoulli draw per example; ``dm_pix.flip_left_right``)."""
    flip = jax.random.bernoulli(rng, 0.5, (x.shape[0],))
    return jnp.where(flip[:, None, None, None], dm_pix.flip_left_right(x), x)


def random_brightness(x: jax.Array, rng: jax.Array, brightness: float) -> jax.Array:
    """torchvision's ``ColorJitter(brightness=b)`` on float images in [0, 1]:
    each example of [B, H, W, C] is multiplied by its own factor drawn
    uniformly from ``[max(0, 1 - b), 1 + b]`` and clipped to [0, 1]
    (torchvision's ``adjust_brightness``: a blend with a black image).

    dm-pix's ``adjust_brightness`` adds a delta (``tf.image`` semantics), so
    the multiplicative form is written here.

    Returns float32 [B, H, W, C] in [0, 1].
    """
    lo, hi = max(0.0, 1.0 - float(brightness)), 1.0 + float(brightness)
    f = jax.random.uniform(rng, (x.shape[0], 1, 1, 1), jnp.float32, lo, hi)
    return jnp.clip(x * f, 0.0, 1.0)


def sample_resized_crop_boxes(rng: jax.Array, batch: int, height: int, width: int,
                              scale: tuple[float, float] = (0.08, 1.0),
                              ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
                              tries: int = 10) -> jax.Array:
    """Boxes of torchvision's ``RandomResizedCrop.get_params``, one per example.

    Per example, ``tries`` candidates are drawn at once: area fraction
    uniform in ``scale``, aspect ratio w / h = exp(uniform(log ratio)), and
    ``w = round(sqrt(A r))``, ``h = round(sqrt(A / r))`` (A the area in
    pixels, round half to even as Python's ``round``); the first candidate
    that fits (``0 < w <= width``, ``0 < h <= height``) is taken, at a
    uniform integer offset.  When none fits, the fallback is torchvision's:
    the whole image, or when its aspect ratio is outside ``ratio`` the
    largest centred box at the nearest bound ratio.

    Args:
      rng: PRNG key.
      batch, height, width: B, H, W of the images (static ints).
      scale: (lo, hi) area fractions, 0 < lo <= hi.
      ratio: (lo, hi) aspect ratios (width / height), 0 < lo <= hi.
      tries: candidates per example (torchvision: 10).

    Returns:
      int32 [B, 4]: (top, left, h, w) of each box, in pixels.
    """
    k_area, k_ratio, k_top, k_left = jax.random.split(rng, 4)
    area = float(height * width)
    target = area * jax.random.uniform(k_area, (batch, tries), jnp.float32, scale[0], scale[1])
    log_r = jax.random.uniform(k_ratio, (batch, tries), jnp.float32, math.log(ratio[0]), math.log(ratio[1]))
    r = jnp.exp(log_r)
    w = jnp.round(jnp.sqrt(target * r)).astype(jnp.int32)
    h = jnp.round(jnp.sqrt(target / r)).astype(jnp.int32)
    ok = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = jnp.argmax(ok, axis=1)
    found = jnp.any(ok, axis=1)
    w = jnp.take_along_axis(w, first[:, None], axis=1)[:, 0]
    h = jnp.take_along_axis(h, first[:, None], axis=1)[:, 0]
    in_ratio = width / height  # the fallback (static): a centred box at the ratio nearest the image's
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fh, fw = height, int(round(height * max(ratio)))
    else:
        fw, fh = width, height
    h = jnp.where(found, h, fh)
    w = jnp.where(found, w, fw)
    u_top = jax.random.uniform(k_top, (batch,), jnp.float32)
    u_left = jax.random.uniform(k_left, (batch,), jnp.float32)
    top = jnp.minimum(jnp.floor(u_top * (height - h + 1)).astype(jnp.int32), height - h)
    left = jnp.minimum(jnp.floor(u_left * (width - w + 1)).astype(jnp.int32), width - w)
    top = jnp.where(found, top, (height - fh) // 2)
    left = jnp.where(found, left, (width - fw) // 2)
    return jnp.stack([top, left, h, w], axis=1)


def resized_crop(x: jax.Array, boxes: jax.Array, size: tuple[int, int]) -> jax.Array:
    """Crops each example of [B, H, W, C] to its box and resizes it to
    ``size`` = (S_h, S_w), bilinear with antialiasing when shrinking (as
    PIL's and torchvision's bilinear ``resized_crop``).

    The resampling is ``jax.image.scale_and_translate`` on the whole image,
    restricted to the box: the image and the box's indicator are resampled
    with the same weights and divided, so the filter of an output pixel
    near the box's edge is renormalised over the box (as a crop followed by
    a resize), never reading pixels outside it.

    Args:
      x: float [B, H, W, C].
      boxes: int [B, 4] (top, left, h, w), each inside the image
        (:func:`sample_resized_crop_boxes`).
      size: static output (S_h, S_w).

    Returns:
      float32 [B, S_h, S_w, C].
    """
    S_h, S_w = int(size[0]), int(size[1])
    H, W = x.shape[1], x.shape[2]
    rows = jnp.arange(H, dtype=jnp.int32)
    cols = jnp.arange(W, dtype=jnp.int32)

    def one(img, box):
        top, left, h, w = box[0], box[1], box[2], box[3]
        sy = S_h / h.astype(jnp.float32)
        sx = S_w / w.astype(jnp.float32)
        scale = jnp.stack([sy, sx])
        trans = jnp.stack([-top.astype(jnp.float32) * sy, -left.astype(jnp.float32) * sx])
        inside = (((rows >= top) & (rows < top + h))[:, None] & ((cols >= left) & (cols < left + w))[None, :])
        inside = inside.astype(jnp.float32)[:, :, None]
        both = jnp.concatenate([img.astype(jnp.float32) * inside, inside], axis=-1)
        out = jax.image.scale_and_translate(both, (S_h, S_w, both.shape[-1]), (0, 1), scale, trans,
                                            method="linear", antialias=True)
        return out[..., :-1] / jnp.maximum(out[..., -1:], 1e-12)

    return jax.vmap(one)(x, boxes)


def center_crop(x: jax.Array, side: int) -> jax.Array:
    """torchvision's ``CenterCrop(side)`` of [B, H, W, C] (side <= H, W): the
    offsets ``round((H - side) / 2)`` and ``round((W - side) / 2)``, rounded
    half to even as Python's ``round`` (``dm_pix.center_crop`` rounds an odd
    margin the other way).

    Raises:
      ValueError: ``side`` larger than H or W.
    """
    B, H, W, C = x.shape
    if side > H or side > W:
        raise ValueError(f"augment.eval_crop={side} is larger than the {H}x{W} evaluation images.")
    top, left = int(round((H - side) / 2.0)), int(round((W - side) / 2.0))
    return jax.lax.slice(x, (0, top, left, 0), (B, top + side, left + side, C))


def resized_shorter_side_shape(height: int, width: int, side: int) -> tuple[int, int]:
    """(h, w) after torchvision's ``Resize(side)``: the shorter side becomes
    ``side``, the longer ``int(side * long / short)``."""
    if height <= width:
        return int(side), int(side * width / height)
    return int(side * height / width), int(side)


def resize_shorter_side(x: jax.Array, side: int) -> jax.Array:
    """torchvision's ``Resize(side)`` of [B, H, W, C]: bilinear, antialiased
    when shrinking (``jax.image.resize``), to
    :func:`resized_shorter_side_shape`.  Returns float32."""
    B, H, W, C = x.shape
    h, w = resized_shorter_side_shape(H, W, side)
    if (h, w) == (H, W):
        return x.astype(jnp.float32)
    return jax.image.resize(x.astype(jnp.float32), (B, h, w, C), "linear", antialias=True)


def permute_pixels(x: jax.Array, perm: jax.Array) -> jax.Array:
    """Applies a pixel permutation (Permuted-MNIST) to one image or a batch.

    Args:
      x: [..., H, W, C] any dtype.
      perm: int32 [H * W], the source pixel of each output pixel.
    """
    *lead, H, W, C = x.shape
    flat = x.reshape(*lead, H * W, C)
    return jnp.take(flat, perm, axis=-2).reshape(x.shape)


def rotate(x: jax.Array, degrees: jax.Array) -> jax.Array:
    """Rotates uint8 images [B, H, W, C] about their centre by ``degrees``
    (counter-clockwise), bilinear, zero fill (Rotated-MNIST)."""
    B, H, W, C = x.shape
    theta = jnp.deg2rad(degrees)
    cy, cx = (H - 1) / 2.0, (W - 1) / 2.0
    yy, xx = jnp.meshgrid(jnp.arange(H, dtype=jnp.float32), jnp.arange(W, dtype=jnp.float32), indexing="ij")
    c, s = jnp.cos(theta), jnp.sin(theta)
    src_y = c * (yy - cy) - s * (xx - cx) + cy
    src_x = s * (yy - cy) + c * (xx - cx) + cx
    xf = x.astype(jnp.float32)

    def one(img_c):  # [H, W]
        return jax.scipy.ndimage.map_coordinates(img_c, [src_y, src_x], order=1, mode="constant", cval=0.0)

    out = jax.vmap(jax.vmap(one, in_axes=-1, out_axes=-1))(xf)
    return jnp.clip(jnp.round(out), 0, 255).astype(x.dtype)
