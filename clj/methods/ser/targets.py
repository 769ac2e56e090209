"""Saliency targets and the saliency loss of SER, computable offline in jnp.

Sources: ``docs/ser.md``, "One training step" (the KLD loss of the official
code) and "Without the saliency data or the checkpoint" (offline targets, a
pretraining pool disjoint from the stream); Hou & Zhang, "Saliency Detection: A
Spectral Residual Approach", CVPR 2007 (Sec. 2, Eqs. 5-9).

Every map here is float32 [B, H, W], non-negative, summing to 1 per image (as
the official code normalises its maps: a map summing to 0 becomes uniform;
``docs/ser.md``, "The paper's protocol").  All functions are pure jnp, jit- and
vmap-able.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

KLD_EPS = 2.220446049250313e-16  # float64 machine epsilon, as the official KLDLoss uses


def normalize_map(m: jax.Array) -> jax.Array:
    """Per-image normalisation of float [B, H, W] maps to unit sum.

    Subtracts the minimum where it is negative, divides by the sum, and returns
    the uniform map 1/(H*W) where the sum is 0.
    """
    m = m.astype(jnp.float32)
    mn = jnp.min(m, axis=(1, 2), keepdims=True)
    m = jnp.where(mn < 0, m - mn, m)
    s = jnp.sum(m, axis=(1, 2), keepdims=True)
    uniform = jnp.full_like(m, 1.0 / (m.shape[1] * m.shape[2]))
    return jnp.where(s > 0, m / jnp.where(s > 0, s, 1.0), uniform)


def kld_loss(pred: jax.Array, target: jax.Array) -> jax.Array:
    """SER's saliency loss: mean over the batch of KL(target || pred).

    Both maps are normalised to unit sum over all their entries per sample,
    then ``sum q * log(eps + q / (p + eps))`` with eps = 2.22e-16
    (``docs/ser.md``, "One training step", step 1).  Computed in float32.

    Args:
      pred: float [B, H, W] or [B, H, W, 1], positive (a sigmoid output).
      target: float of the same number of entries per sample, >= 0.

    Returns:
      float32 [], >= 0 up to rounding.
    """
    B = pred.shape[0]
    p = pred.reshape(B, -1).astype(jnp.float32)
    q = target.reshape(B, -1).astype(jnp.float32)
    p = p / jnp.sum(p, axis=1, keepdims=True)
    q = q / jnp.sum(q, axis=1, keepdims=True)
    per = jnp.sum(q * jnp.log(KLD_EPS + q / (p + KLD_EPS)), axis=1)
    return jnp.mean(per)


def to_gray(x_raw: jax.Array) -> jax.Array:
    """uint8 [B, H, W, C] -> float32 [B, H, W] in [0, 1] (luma 0.299/0.587/0.114
    for C = 3, the channel mean otherwise)."""
    x = x_raw.astype(jnp.float32) / 255.0
    if x.shape[-1] == 3:
        return x @ jnp.asarray([0.299, 0.587, 0.114], jnp.float32)
    return jnp.mean(x, axis=-1)


def _gaussian_kernel(sigma: float, size: int) -> jax.Array:
    r = jnp.arange(size, dtype=jnp.float32) - (size - 1) / 2.0
    k = jnp.exp(-0.5 * (r / sigma) ** 2)
    return k / jnp.sum(k)


def gaussian_blur(m: jax.Array, sigma: float, size: int = 11) -> jax.Array:
    """Separable Gaussian blur of float [B, H, W] with reflect padding."""
    if sigma <= 0:
        return m
    k = _gaussian_kernel(sigma, size)
    p = size // 2
    mode = "reflect" if min(m.shape[1], m.shape[2]) > p else "edge"
    x = jnp.pad(m, ((0, 0), (p, p), (p, p)), mode=mode)
    # rows then columns (valid correlations)
    x = sum(k[i] * x[:, i:i + m.shape[1], :] for i in range(size))
    x = sum(k[i] * x[:, :, i:i + m.shape[2]] for i in range(size))
    return x


def _dft_matrix(n: int) -> jax.Array:
    k = jnp.arange(n, dtype=jnp.float32)
    ang = -2.0 * math.pi * jnp.outer(k, k) / n
    return jax.lax.complex(jnp.cos(ang), jnp.sin(ang))


def dft2(x: jax.Array, inverse: bool = False) -> jax.Array:
    """2-D DFT of [B, n, n] as two complex matmuls (``W X W``; the inverse
    uses conj(W) / n^2).  Equal to ``jnp.fft.fft2`` / ``ifft2`` up to float
    rounding; used instead of them because XLA's CPU FFT rejects the
    non-default layouts that vmap-over-seeds plus sharding produces."""
    n = x.shape[-1]
    W = _dft_matrix(n)
    if inverse:
        W = jnp.conj(W)
    out = jnp.einsum("ij,bjk,kl->bil", W, x.astype(jnp.complex64), W)
    return out / (n * n) if inverse else out


def spectral_residual(gray: jax.Array, work_size: int = 64, blur_sigma: float = 3.0,
                      out_shape: tuple[int, int] | None = None, border: str = "hann") -> jax.Array:
    """Spectral-residual saliency (Hou & Zhang 2007; ``docs/ser.md``, "Without the
    saliency data or the checkpoint").

    1. resize the gray image to ``work_size x work_size`` (bilinear);
       with ``border="hann"`` (default) subtract its mean and multiply it by
       a 2-D Hann window, so that the DFT's periodic wrap sees no step at the
       image border; ``border="periodic"`` skips this (the plain method,
       whose map concentrates on the border ring whenever content touches
       the edge: an 8x8 digit upsampled to 64x64 put 56 % of its mass on the
       outer ring);
    2. A = log(|FFT| + 1e-8), phase P;
    3. R = A - (3x3 mean of A, wrap padding);
    4. S = |IFFT(exp(R + iP))|^2;
    5. Gaussian blur (sigma ``blur_sigma`` pixels at ``work_size``, 11x11),
       bilinear resize to ``out_shape`` (default: the input's H, W);
    6. normalise to unit sum.  A constant image (max - min < 1e-6) gives the
       uniform map.

    Args:
      gray: float [B, H, W] in [0, 1].
      border: ``"hann"`` or ``"periodic"``.

    Returns:
      float32 [B, h, w] maps, non-negative, each summing to 1.

    Raises:
      ValueError: an unknown ``border``.
    """
    if border not in ("hann", "periodic"):
        raise ValueError(f"spectral_residual border={border!r} is unknown; valid: hann, periodic.")
    B, H, W = gray.shape
    out_shape = out_shape or (H, W)
    g = jax.image.resize(gray.astype(jnp.float32), (B, work_size, work_size), "bilinear")
    if border == "hann":
        win = jnp.hanning(work_size).astype(jnp.float32)
        g = (g - jnp.mean(g, axis=(1, 2), keepdims=True)) * (win[:, None] * win[None, :])
    F = dft2(g)
    A = jnp.log(jnp.abs(F) + 1e-8)
    P = jnp.angle(F)
    Ap = jnp.pad(A, ((0, 0), (1, 1), (1, 1)), mode="wrap")
    mean3 = sum(Ap[:, i:i + work_size, j:j + work_size] for i in range(3) for j in range(3)) / 9.0
    R = A - mean3
    S = jnp.abs(dft2(jnp.exp(R + 1j * P), inverse=True)) ** 2
    S = gaussian_blur(S.astype(jnp.float32), blur_sigma, 11)
    S = jax.image.resize(S, (B, *out_shape), "bilinear")
    S = jnp.maximum(S, 0.0)
    flat = (jnp.max(gray, axis=(1, 2)) - jnp.min(gray, axis=(1, 2))) < 1e-6
    S = jnp.where(flat[:, None, None], 0.0, S)
    return normalize_map(S)


def center_bias(h: int, w: int, sigma_frac: float = 0.25) -> jax.Array:
    """One centred Gaussian float32 [h, w], sigma = sigma_frac * (h, w), unit sum."""
    ys = (jnp.arange(h, dtype=jnp.float32) - (h - 1) / 2.0) / (sigma_frac * h)
    xs = (jnp.arange(w, dtype=jnp.float32) - (w - 1) / 2.0) / (sigma_frac * w)
    m = jnp.exp(-0.5 * ys[:, None] ** 2) * jnp.exp(-0.5 * xs[None, :] ** 2)
    return m / jnp.sum(m)


TARGETS = ("dataset", "spectral_residual", "center", "center_sr", "teacher")  # dataset, teacher: not computed here


def compute_targets(kind: str, x_raw: jax.Array, work_size: int = 64, blur_sigma: float = 3.0,
                    center_sigma: float = 0.25) -> jax.Array:
    """Offline saliency targets float32 [B, H, W] (unit sum) of uint8 [B, H, W, C].

    ``spectral_residual``; ``center`` (the same centre-bias map for every
    image); ``center_sr`` (their product, renormalised).  ``teacher`` targets
    come from a network and are computed by the method, not here.

    Raises:
      ValueError: an unknown ``kind``.
    """
    B, H, W, _ = x_raw.shape
    if kind == "spectral_residual":
        return spectral_residual(to_gray(x_raw), work_size, blur_sigma)
    if kind == "center":
        return jnp.broadcast_to(center_bias(H, W, center_sigma), (B, H, W))
    if kind == "center_sr":
        sr = spectral_residual(to_gray(x_raw), work_size, blur_sigma)
        return normalize_map(sr * center_bias(H, W, center_sigma)[None])
    raise ValueError(f"ser.sal_target={kind!r} cannot be computed here; valid: "
                     f"spectral_residual, center, center_sr (teacher is computed by the method).")


def procedural_images(rng: jax.Array, batch: int, shape: tuple[int, int, int]) -> jax.Array:
    """A pool of images disjoint from any dataset, for pretraining the
    saliency net (``docs/ser.md``, "Without the saliency data or the
    checkpoint"): a smooth random background (bilinear upsampling
    of a 4x4 noise grid, low contrast) with one to three random filled
    ellipses of random intensity, position and size.

    Returns:
      uint8 [batch, H, W, C].
    """
    H, W, C = shape
    k_bg, k_n, k_c, k_r, k_v, k_a = jax.random.split(rng, 6)
    bg = jax.random.uniform(k_bg, (batch, 4, 4, C), minval=0.0, maxval=0.35)
    bg = jax.image.resize(bg, (batch, H, W, C), "bilinear")
    n_obj = jax.random.randint(k_n, (batch,), 1, 4)
    centres = jax.random.uniform(k_c, (batch, 3, 2), minval=0.2, maxval=0.8)
    radii = jax.random.uniform(k_r, (batch, 3, 2), minval=0.08, maxval=0.25)
    values = jax.random.uniform(k_v, (batch, 3, C), minval=0.5, maxval=1.0)
    ang = jax.random.uniform(k_a, (batch, 3), minval=0.0, maxval=math.pi)
    ys = (jnp.arange(H, dtype=jnp.float32) + 0.5) / H
    xs = (jnp.arange(W, dtype=jnp.float32) + 0.5) / W
    dy = ys[None, None, :, None] - centres[:, :, 0, None, None]
    dx = xs[None, None, None, :] - centres[:, :, 1, None, None]
    c, s = jnp.cos(ang)[:, :, None, None], jnp.sin(ang)[:, :, None, None]
    u, v = c * dy + s * dx, -s * dy + c * dx
    inside = (u / radii[:, :, 0, None, None]) ** 2 + (v / radii[:, :, 1, None, None]) ** 2 <= 1.0
    inside = inside & (jnp.arange(3)[None, :, None, None] < n_obj[:, None, None, None])  # [B, 3, H, W]
    img = bg
    for j in range(3):
        img = jnp.where(inside[:, j, :, :, None], values[:, j, None, None, :], img)
    return jnp.clip(jnp.round(img * 255.0), 0, 255).astype(jnp.uint8)
