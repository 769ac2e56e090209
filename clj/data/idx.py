"""IDX files (the MNIST file format): reading one, finding the four files
of a train/test set in a folder, loading a set (decoded once into the
cache of :func:`clj.data.dataset.cached_decode` when compressed), and
EMNIST's conventions (its splits, its transposed images).
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from clj.data.dataset import cached_decode

__all__ = ["EMNIST_SPLITS", "IDX_DTYPES", "decode_idx_set", "emnist_fix", "find_idx_set", "load_idx_set",
           "read_idx"]

# IDX type code -> big-endian numpy dtype.
IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (the MNIST file format), plain or gzip-compressed.

    The header is two zero bytes, a type code (``0x08`` uint8, ``0x09`` int8,
    ``0x0B`` int16, ``0x0C`` int32, ``0x0D`` float32, ``0x0E`` float64), the
    number of dimensions ``D``, then ``D`` big-endian uint32 sizes; the data
    follow in C order, big-endian. Compression is detected from the content
    (gzip magic bytes), not from the file name.

    Args:
      path: file to read.

    Returns:
      Array of shape ``dims`` in native byte order; ``uint8`` for the usual
      image (``[N, H, W]``) and label (``[N]``) files.

    Raises:
      FileNotFoundError: if ``path`` does not exist.
      ValueError: if the magic number is invalid (non-zero leading bytes or an
        unknown type code), or the data size does not match the header.
    """
    path = Path(path)
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path}: corrupt gzip data ({e})") from e
    if len(raw) < 4:
        raise ValueError(f"{path}: too short to be an IDX file ({len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise ValueError(
            f"{path}: bad IDX magic number 0x{magic:08X}; expected 0x0000TTDD with "
            f"type code TT in {{{', '.join(f'0x{k:02X}' for k in IDX_DTYPES)}}} "
            f"and DD the number of dimensions")
    dtype = IDX_DTYPES[raw[2]]
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header ({ndim} dims declared)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    actual = len(raw) - header
    if actual != expected:
        raise ValueError(f"{path}: IDX header declares shape {dims} of {dtype} "
                         f"({expected} bytes) but the file holds {actual} data bytes")
    arr = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def _idx_candidates(directory: Path, stem: str, kind: str) -> list[Path]:
    """Possible file names for e.g. stem='train-images', kind='idx3'."""
    names = [f"{stem}-{kind}-ubyte", f"{stem}.{kind}-ubyte"]
    return [directory / (n + ext) for n in names for ext in ("", ".gz")]


def find_idx_set(directories: Sequence[Path], prefix: str = "") -> dict[str, Path] | None:
    """Finds the four IDX files of a train/test set in the first directory
    holding all of them. Keys: x_train, y_train, x_test, y_test.

    The names are MNIST's (``train-images-idx3-ubyte``, ``t10k-labels...``)
    or, with a ``prefix`` (EMNIST's ``emnist-<split>-``), ``<prefix>train-*``
    and ``<prefix>test-*``; a ``.`` may stand for the ``-`` before
    ``idx``, and each may be gzip'd (``.gz``).  None when no directory holds
    all four."""
    wanted = {
        "x_train": (f"{prefix}train-images", "idx3"),
        "y_train": (f"{prefix}train-labels", "idx1"),
        "x_test": (f"{prefix}t10k-images" if not prefix else f"{prefix}test-images", "idx3"),
        "y_test": (f"{prefix}t10k-labels" if not prefix else f"{prefix}test-labels", "idx1"),
    }
    for d in directories:
        if not d.is_dir():
            continue
        found: dict[str, Path] = {}
        for key, (stem, kind) in wanted.items():
            for cand in _idx_candidates(d, stem, kind):
                if cand.is_file():
                    found[key] = cand
                    break
        if len(found) == 4:
            return found
    return None


def load_idx_set(files: dict[str, Path]) -> tuple[np.ndarray, ...]:
    """The arrays of an IDX set (:func:`find_idx_set`'s files), through the
    decoded-array cache when any file is gzip'd (see :func:`decode_idx_set`).

    Returns:
      ``(x_train [N, H, W], y_train [N], x_test [M, H, W], y_test [M])`` as
      stored (usually uint8).

    Raises:
      ValueError: a malformed file, or images and labels that do not pair.
    """
    if any(str(p).endswith(".gz") for p in files.values()):
        keys = ("x_train", "y_train", "x_test", "y_test")
        return cached_decode("idx", [files[k] for k in keys], lambda: decode_idx_set(files))
    return decode_idx_set(files)


def decode_idx_set(files: dict[str, Path]) -> tuple[np.ndarray, ...]:
    """Reads the four files of an IDX set (keys ``x_train``, ``y_train``,
    ``x_test``, ``y_test``) with :func:`read_idx`; returns their arrays in
    that order.

    Raises:
      ValueError: a malformed file, images not ``[N, H, W]``, labels not
        ``[N]``, or counts that differ.
    """
    arrays = {k: read_idx(p) for k, p in files.items()}
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(
                f"IDX {split} set has images of shape {x.shape} ({files[f'x_{split}']}) "
                f"and labels of shape {y.shape} ({files[f'y_{split}']}); expected "
                f"[N, H, W] and [N]")
    return arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"]


EMNIST_SPLITS: dict[str, int] = {
    "balanced": 47,
    "letters": 26,
    "digits": 10,
    "byclass": 62,
    "bymerge": 47,
    "mnist": 10,
}
"""EMNIST split name -> number of classes."""


def emnist_fix(split: str, arrays: tuple[np.ndarray, ...]
               ) -> tuple[tuple[np.ndarray, ...], int]:
    """EMNIST IDX arrays as stored -> upright images, labels from 0.

    EMNIST stores images transposed (column-major): H and W are swapped back;
    ``letters`` labels 1..26 become 0..25. Returns (arrays, num_classes).
    """
    x_tr, y_tr, x_te, y_te = arrays
    x_tr = np.ascontiguousarray(x_tr.transpose(0, 2, 1))
    x_te = np.ascontiguousarray(x_te.transpose(0, 2, 1))
    y_tr = y_tr.astype(np.int32)
    y_te = y_te.astype(np.int32)
    if split == "letters":  # labels 1..26 -> 0..25
        y_tr = y_tr - 1
        y_te = y_te - 1
    return (x_tr, y_tr, x_te, y_te), EMNIST_SPLITS[split]
