"""On-device input pipeline: uint8 -> float, random crop, flip, normalise.

All functions are pure, jit- and vmap-able, and run on whatever device holds
the batch; there is no host input pipeline on the hot path.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class Augment:
    """The training/evaluation transform of a scenario (hashable, static).

    Attributes:
      mean, std: per-channel constants, as fractions of 255 (length C).
      crop_pad: pad each side by this many zero pixels and crop back to the
        original size at a random offset (0 = no crop; CIFAR uses 4).
      flip: random horizontal flip with probability 1/2.
      normalize: subtract ``mean`` and divide by ``std`` after scaling to
        [0, 1]; when False the output is ``x / 255``.
    """

    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    crop_pad: int = 0
    flip: bool = False
    normalize: bool = True

    def __call__(self, x: jax.Array, rng: jax.Array | None = None, train: bool = False) -> jax.Array:
        """Transforms a batch.

        Args:
          x: uint8 [B, H, W, C].
          rng: PRNG key (needed when ``train`` and crop/flip are enabled).
          train: apply the random crop and flip.

        Returns:
          float32 [B, H, W, C].
        """
        out = x.astype(jnp.float32) / 255.0
        if train and (self.crop_pad > 0 or self.flip):
            if rng is None:
                raise ValueError("Augment(train=True) with crop or flip needs an rng key.")
            k_crop, k_flip = jax.random.split(rng)
            if self.crop_pad > 0:
                out = random_crop(out, k_crop, self.crop_pad)
            if self.flip:
                out = random_flip(out, k_flip)
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
    """Flips each example of [B, H, W, C] left-right with probability 1/2."""
    flip = jax.random.bernoulli(rng, 0.5, (x.shape[0],))
    return jnp.where(flip[:, None, None, None], x[:, :, ::-1, :], x)


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
