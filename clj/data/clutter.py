"""Cluttered-object composites with exact ground-truth saliency, generated offline.

Each example is one object image (an MNIST digit or a Fashion-MNIST item)
resized to a random side and pasted at a random position on a square
``canvas x canvas`` gray canvas that already holds clutter: random crops of
the *other* dataset (Fashion-MNIST crops behind MNIST digits and vice versa),
each resized and dimmed at random, plus Gaussian pixel noise.  The label is
the object's class; the object's exact support (the pixels where the resized
object is non-zero) is the ground-truth mask, and its Gaussian blur is the
ground-truth saliency map.  The benchmark exists so that a saliency branch
(SER, Sorrenti et al., NeurIPS 2024) has something to find: centred 28x28
objects on a black background have no clutter to ignore.

Geometry (all per example, drawn from ``numpy.random.default_rng``):

* object side ``s ~ U[obj_min, obj_max] * canvas`` (rounded), top-left corner
  uniform over the positions that keep the object inside the canvas (so it
  may touch the border);
* ``num_clutter`` crops of side ``crop`` pixels at a uniform offset of a
  random image of the other dataset, resized to a side ``~ U[0.3, 0.6] *
  canvas``, multiplied by ``U[clutter_min, clutter_max]``, at a uniform
  position (possibly leaving the canvas), combined by pixel maximum;
* background = clutter + ``N(0, noise_std)`` (0..255 units), clipped;
* compositing uses the object's own intensity as its opacity (``out = o + (1
  - o / 255) * background``), so full-ink pixels show the object only and
  the mask is exactly ``o > 0`` where ``o`` is the resized object rounded to
  uint8.

Resizing is separable bilinear interpolation (pixel centres, zero outside the
source), done for a whole chunk of examples by two batched matrix products,
so generation is vectorised numpy and deterministic per ``seed``.  Results are
cached under ``$XDG_CACHE_HOME/clj/clutter`` (default ``~/.cache/clj/clutter``)
in one ``.npz`` per parameter set, keyed by a hash of every parameter.

Optional ``spurious_patch``: a ``patch x patch`` white square at a
class-specific position along the top row is added to *training* images only
(the spurious-feature test of the SER paper, Sec. 5); test images have none.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from clj.data.dataset import make_dataset
from clj.data.sources import load_source

__all__ = ["CLUTTER_DATASETS", "ClutterData", "ClutterParams", "composite", "load_clutter",
           "blur_masks", "cache_dir"]

CLUTTER_DATASETS = {"clutter_mnist": ("mnist", "fashion_mnist"),
                    "clutter_fashion_mnist": ("fashion_mnist", "mnist")}
"""clj name -> (object dataset, clutter dataset)."""

_VERSION = 1  # bump when the generator's output changes


@dataclasses.dataclass(frozen=True)
class ClutterParams:
    """Every parameter of the generator (the cache key).

    Attributes:
      canvas: side of the square canvas in pixels (>= 16).
      num_train, num_test: examples per split (>= 1; at most the object
        dataset's split size: each object image is used at most once).
      obj_min, obj_max: object side as a fraction of ``canvas``,
        0 < obj_min <= obj_max <= 1.
      num_clutter: clutter crops per image (>= 0).
      crop: side of each clutter crop in source pixels (1..28).
      clutter_min, clutter_max: intensity factor range of the crops, in [0, 1].
      noise_std: std of the Gaussian pixel noise, 0..255 units (>= 0).
      sal_sigma: std (pixels) of the Gaussian blur of the mask that gives the
        saliency map (>= 0).
      spurious_patch: side of the class-specific patch on training images
        (0 = none).
    """

    canvas: int = 48
    num_train: int = 10000
    num_test: int = 2000
    obj_min: float = 0.45
    obj_max: float = 0.75
    num_clutter: int = 4
    crop: int = 14
    clutter_min: float = 0.5
    clutter_max: float = 1.0
    noise_std: float = 12.0
    sal_sigma: float = 2.0
    spurious_patch: int = 0

    def check(self) -> None:
        """Raises ValueError naming the first bad field and its valid range."""
        bad = None
        if not 16 <= self.canvas <= 512:
            bad = f"canvas={self.canvas}: must be in [16, 512]"
        elif self.num_train < 1 or self.num_test < 1:
            bad = f"num_train={self.num_train}, num_test={self.num_test}: both must be >= 1"
        elif not 0 < self.obj_min <= self.obj_max <= 1:
            bad = f"obj_min={self.obj_min}, obj_max={self.obj_max}: need 0 < obj_min <= obj_max <= 1"
        elif self.num_clutter < 0:
            bad = f"num_clutter={self.num_clutter}: must be >= 0"
        elif not 1 <= self.crop <= 28:
            bad = f"crop={self.crop}: must be in [1, 28]"
        elif not 0 <= self.clutter_min <= self.clutter_max <= 1:
            bad = f"clutter_min={self.clutter_min}, clutter_max={self.clutter_max}: need 0 <= min <= max <= 1"
        elif self.noise_std < 0 or self.sal_sigma < 0:
            bad = f"noise_std={self.noise_std}, sal_sigma={self.sal_sigma}: both must be >= 0"
        elif not 0 <= self.spurious_patch * 10 <= self.canvas:
            bad = f"spurious_patch={self.spurious_patch}: ten patches must fit in a row of {self.canvas} pixels"
        if bad:
            raise ValueError(f"clutter dataset: {bad}.")


@dataclasses.dataclass(frozen=True, eq=False)
class ClutterData:
    """A generated benchmark: the :class:`~clj.data.Dataset` plus its masks.

    Attributes:
      dataset: the Dataset (``uint8 [N, canvas, canvas, 1]`` images).
      mask_train, mask_test: ``bool [N, canvas, canvas]`` object supports.
      params: the :class:`ClutterParams` used.
    """

    dataset: Any
    mask_train: np.ndarray
    mask_test: np.ndarray
    params: ClutterParams

    def saliency(self, split: str = "train") -> np.ndarray:
        """Ground-truth saliency ``float32 [N, canvas, canvas]``: the mask
        blurred with ``params.sal_sigma``, each map summing to 1."""
        m = self.mask_train if split == "train" else self.mask_test
        return blur_masks(m, self.params.sal_sigma)


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/clj/clutter`` (default ``~/.cache/clj/clutter``)."""
    from clj.cache import user_cache_dir

    return user_cache_dir("clutter")


def _interp(n_out: int, n_src: int, pos: np.ndarray, size: np.ndarray, lo: np.ndarray,
            span: np.ndarray) -> np.ndarray:
    """Bilinear resampling matrices ``float32 [n, n_out, n_src]``.

    Output pixel ``u`` of example ``k`` samples source coordinate ``lo +
    (u - pos + 0.5) * span / size - 0.5`` (pixel centres); source pixels
    outside ``[lo, lo + span)`` and the grid count as zero.
    """
    u = np.arange(n_out, dtype=np.float64)[None, :]
    c = lo[:, None] + (u - pos[:, None] + 0.5) * (span / size)[:, None] - 0.5
    i0 = np.floor(c)
    f = c - i0
    i0 = i0.astype(np.int64)
    src = np.arange(n_src)[None, None, :]
    valid = lambda i: (i >= lo[:, None, None]) & (i < (lo + span)[:, None, None])  # noqa: E731
    w = np.where((src == i0[..., None]) & valid(src), (1.0 - f)[..., None], 0.0)
    w += np.where((src == i0[..., None] + 1) & valid(src), f[..., None], 0.0)
    return w.astype(np.float32)


def _place(images: np.ndarray, canvas: int, pos: np.ndarray, size: np.ndarray, lo: np.ndarray,
           span: np.ndarray) -> np.ndarray:
    """Resizes the ``[lo, lo+span)^2`` window of each ``float32 [n, S, S]``
    image to ``size`` pixels and places it at ``pos = (row, col)`` on a zero
    canvas: ``float32 [n, canvas, canvas]``."""
    S = images.shape[-1]
    ry = _interp(canvas, S, pos[:, 0], size, lo[:, 0], span)
    rx = _interp(canvas, S, pos[:, 1], size, lo[:, 1], span)
    return np.einsum("nij,njk,nlk->nil", ry, images, rx, optimize=True)


def composite(objects: np.ndarray, labels: np.ndarray, clutter_pool: np.ndarray, params: ClutterParams,
              rng: np.random.Generator, train: bool, chunk: int = 1000, return_layers: bool = False):
    """Builds composites of ``objects`` (one per object image, in order).

    Args:
      objects: ``uint8 [n, 28, 28]`` object images.
      labels: ``int [n]`` their classes (for the spurious patch).
      clutter_pool: ``uint8 [m, 28, 28]`` images the clutter crops come from.
      params: the geometry.
      rng: the generator (consumed in a fixed order, so outputs depend only on
        its seed and the inputs).
      train: whether to add the spurious patch (if ``params.spurious_patch``).
      chunk: examples resized per batched product (memory only).
      return_layers: also return the object layer and the background.

    Returns:
      ``(images uint8 [n, canvas, canvas], masks bool [n, canvas, canvas])``,
      plus ``(object uint8, background uint8)`` layers with ``return_layers``.
    """
    p = params
    n, C = len(objects), p.canvas
    if objects.ndim != 3 or objects.shape[1:] != (28, 28) or clutter_pool.shape[1:] != (28, 28):
        raise ValueError(f"objects {objects.shape} and clutter_pool {clutter_pool.shape} must be [n, 28, 28]")
    # every draw happens once, for the whole split, in a fixed order
    side = np.rint(rng.uniform(p.obj_min, p.obj_max, n) * C).clip(1, C)
    opos = np.floor(rng.uniform(0.0, 1.0, (n, 2)) * (C - side[:, None] + 1))
    K = p.num_clutter
    cidx = rng.integers(0, len(clutter_pool), (n, K))
    coff = rng.integers(0, 28 - p.crop + 1, (n, K, 2)).astype(np.float64)
    cside = np.rint(rng.uniform(0.3, 0.6, (n, K)) * C).clip(1, None)
    cpos = np.floor(rng.uniform(-0.25, 1.0, (n, K, 2)) * C)
    cgain = rng.uniform(p.clutter_min, p.clutter_max, (n, K))
    noise_seed = int(rng.integers(0, 2 ** 63))

    obj = np.empty((n, C, C), np.uint8)
    bg = np.zeros((n, C, C), np.float32)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        k = e - s
        o = _place(objects[s:e].astype(np.float32), C, opos[s:e], side[s:e], np.zeros((k, 2)),
                   np.full(k, 28.0))
        obj[s:e] = np.clip(np.rint(o), 0, 255).astype(np.uint8)
        for j in range(K):
            layer = _place(clutter_pool[cidx[s:e, j]].astype(np.float32), C, cpos[s:e, j], cside[s:e, j],
                           coff[s:e, j], np.full(k, float(p.crop)))
            bg[s:e] = np.maximum(bg[s:e], layer * cgain[s:e, j, None, None].astype(np.float32))
    if p.noise_std > 0:
        bg += np.random.default_rng(noise_seed).normal(0.0, p.noise_std, bg.shape).astype(np.float32)
    bg = np.clip(np.rint(bg), 0, 255).astype(np.uint8)
    of = obj.astype(np.float32)
    img = np.clip(np.rint(of + (1.0 - of / 255.0) * bg.astype(np.float32)), 0, 255).astype(np.uint8)
    mask = obj > 0
    if train and p.spurious_patch > 0:
        q = p.spurious_patch
        cols = (np.asarray(labels, np.int64) % 10) * q
        for c in range(10):  # ten classes: one vectorised write per class
            sel = cols == c * q
            img[sel, :q, c * q:(c + 1) * q] = 255
    if return_layers:
        return img, mask, obj, bg
    return img, mask


def blur_masks(masks: np.ndarray, sigma: float) -> np.ndarray:
    """``float32 [N, H, W]`` unit-sum saliency maps from ``bool [N, H, W]``
    masks: separable Gaussian blur (std ``sigma`` px, radius ``3 sigma``,
    zero outside the image); an empty mask gives the uniform map."""
    m = masks.astype(np.float32)
    if sigma > 0:
        r = max(1, int(np.ceil(3 * sigma)))
        k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2).astype(np.float32)
        k /= k.sum()
        H, W = m.shape[1:]
        ky = np.zeros((H, H), np.float32)
        kx = np.zeros((W, W), np.float32)
        for d in range(-r, r + 1):
            ky += k[d + r] * np.eye(H, k=d, dtype=np.float32)
            kx += k[d + r] * np.eye(W, k=d, dtype=np.float32)
        m = np.einsum("ij,njk,kl->nil", ky, m, kx, optimize=True)
    s = m.sum(axis=(1, 2), keepdims=True)
    uniform = np.full_like(m, 1.0 / (m.shape[1] * m.shape[2]))
    return np.where(s > 0, m / np.where(s > 0, s, 1.0), uniform).astype(np.float32)


def _key(name: str, params: ClutterParams, seed: int) -> str:
    blob = json.dumps({"v": _VERSION, "name": name, "seed": int(seed), **dataclasses.asdict(params)},
                      sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def load_clutter(name: str = "clutter_mnist", data_dir: str | os.PathLike | None = None, *, seed: int = 0,
                 cache: bool = True, **kwargs: Any) -> ClutterData:
    """Generates (or reads from the cache) a cluttered-object benchmark.

    Args:
      name: ``"clutter_mnist"`` (MNIST digits on Fashion-MNIST clutter) or
        ``"clutter_fashion_mnist"`` (Fashion-MNIST items on MNIST clutter).
      data_dir: where the object/clutter datasets are (as for
        :func:`clj.data.load_dataset`; None = their default locations).
      seed: generator seed; the same seed and parameters give the same arrays.
      cache: read/write ``cache_dir()/<name>-<hash>.npz``.
      **kwargs: fields of :class:`ClutterParams`.

    Returns:
      :class:`ClutterData` whose ``dataset`` has ``num_train`` / ``num_test``
      examples of the object dataset's first images of each split (in order)
      with their labels, ``uint8 [N, canvas, canvas, 1]``.

    Raises:
      ValueError: unknown ``name``, unknown option, bad parameter value, or
        more examples asked than the object dataset's split holds.
      FileNotFoundError: the source datasets are missing (their message).
    """
    if name not in CLUTTER_DATASETS:
        raise ValueError(f"unknown clutter dataset {name!r}; valid: {', '.join(CLUTTER_DATASETS)}")
    fields = {f.name for f in dataclasses.fields(ClutterParams)}
    bad = sorted(set(kwargs) - fields)
    if bad:
        raise TypeError(f"dataset {name!r} got unexpected option(s) {bad}; accepted: {sorted(fields)}")
    params = ClutterParams(**kwargs)
    params.check()
    path = cache_dir() / f"{name}-{_key(name, params, seed)}.npz"
    if cache and path.is_file():
        z = np.load(path)
        ds = make_dataset(name, z["x_train"][..., None], z["y_train"], z["x_test"][..., None], z["y_test"],
                          num_classes=10)
        return ClutterData(ds, z["m_train"], z["m_test"], params)
    obj_name, clut_name = CLUTTER_DATASETS[name]
    objs = load_source(obj_name, data_dir)
    clut = load_source(clut_name, data_dir)
    for split, n, have in (("train", params.num_train, objs.num_train), ("test", params.num_test, objs.num_test)):
        if n > have:
            raise ValueError(f"clutter dataset {name!r}: num_{split}={n} exceeds the {have} {split} images "
                             f"of {obj_name}.")
    out = {}
    for split, n, x, y, pool in (("train", params.num_train, objs.x_train, objs.y_train, clut.x_train),
                                 ("test", params.num_test, objs.x_test, objs.y_test, clut.x_test)):
        rng = np.random.default_rng([int(seed), 0 if split == "train" else 1])
        img, mask = composite(x[:n, ..., 0], y[:n], pool[..., 0], params, rng, train=split == "train")
        out[f"x_{split}"], out[f"y_{split}"], out[f"m_{split}"] = img, y[:n].astype(np.int32), mask
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
        np.savez(tmp, **out)
        os.replace(tmp, path)
    ds = make_dataset(name, out["x_train"][..., None], out["y_train"], out["x_test"][..., None], out["y_test"],
                      num_classes=10)
    return ClutterData(ds, out["m_train"], out["m_test"], params)
