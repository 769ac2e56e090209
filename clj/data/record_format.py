"""clj's on-disk dataset format: array_record shards plus a JSON of metadata.

A prepared dataset lives in ``<data_dir>/clj/<name>/``::

    metadata.json                      # see below
    train.array_record-00000-of-00003  # shards of the train split
    ...
    test.array_record-00000-of-00001   # shards of the test split

Every record is one example, with a fixed length for the whole dataset:

    bytes 0..3   label, int32 little-endian
    bytes 4..    image, H*W*C uint8 in H, W, C order (row-major)
    then         each per-example extra array (format version 2 only), uint8
                 in its row-major order, in the order ``metadata.json`` lists them

so a batch of records decodes with one ``np.frombuffer`` (no per-record Python
decode). Shards are written with ``group_size:1`` (each record its own chunk,
zstd-compressed), the layout grain's :class:`ArrayRecordDataSource` needs for
fast random access.

``metadata.json`` holds ``format`` (``"clj-records"``), ``format_version``
(:data:`FORMAT_VERSION`), ``name``, ``image_shape`` ``[H, W, C]``, ``dtype``
(``"uint8"``), ``label_dtype`` (``"int32"``), ``num_classes``, ``class_names``,
``splits`` (per split: ``num_examples`` and the list of ``shards``, each with
``file`` and ``num_examples``), ``mean``/``std`` (per channel, of the train
images divided by 255) and ``source`` (what it was prepared from).

Version 2 (:data:`FORMAT_VERSION_EXTRAS`) is version 1 plus ``extras``: a
list of ``{"name", "shape", "dtype": "uint8"}``, per-example arrays stored
after the image in every record (e.g. SER's saliency maps, ``uint8 [H, W,
1]``, aligned with their image). Datasets without extras are written as
version 1, so older readers keep reading them; a version-1 reader refuses a
version-2 dataset instead of misreading its records.

This module holds the format itself: its constants, the record encoding
(:func:`encode_records`, :func:`decode_records`) and where a prepared dataset
lives (:func:`prepared_dir`, :func:`find_prepared`). The writer is
:mod:`clj.data.record_writer`, the reader :mod:`clj.data.records` (which
re-exports all of it). Nothing here imports TensorFlow.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import numpy as np

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "FORMAT_VERSION_EXTRAS",
    "READABLE_VERSIONS",
    "LABEL_BYTES",
    "METADATA_FILE",
    "SPLITS",
    "WRITER_OPTIONS",
    "decode_records",
    "encode_records",
    "find_prepared",
    "prepared_dir",
]

FORMAT = "clj-records"
FORMAT_VERSION = 1
FORMAT_VERSION_EXTRAS = 2
"""Version of a dataset whose records carry per-example extra arrays."""
READABLE_VERSIONS = (FORMAT_VERSION, FORMAT_VERSION_EXTRAS)
LABEL_BYTES = 4
METADATA_FILE = "metadata.json"
WRITER_OPTIONS = "group_size:1"
SPLITS = ("train", "test")


# --------------------------------------------------------------------------
# Record encoding
# --------------------------------------------------------------------------


def encode_records(images: np.ndarray, labels: np.ndarray,
                   extras: Sequence[np.ndarray] = ()) -> np.ndarray:
    """Packs examples into fixed-length records.

    Args:
      images: ``uint8 [n, H, W, C]``.
      labels: integer ``[n]`` (must fit in int32).
      extras: per-example ``uint8 [n, ...]`` arrays stored after the image,
        in this order (format version 2).

    Returns:
      ``uint8 [n, 4 + H*W*C + sum of the extras' sizes]``: row ``i`` is the
      bytes of record ``i`` (label as int32 little-endian, the image in H, W,
      C order, then each extra row-major).

    Raises:
      ValueError: wrong dtype/rank, or length mismatch.
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.dtype != np.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 [n, H, W, C], got {images.dtype} "
                         f"{images.shape}")
    if labels.ndim != 1 or len(labels) != len(images):
        raise ValueError(f"labels must be [n] with n={len(images)}, got {labels.shape}")
    n = len(images)
    extras = [np.asarray(e) for e in extras]
    for e in extras:
        if e.dtype != np.uint8 or len(e) != n:
            raise ValueError(f"extras must be uint8 [n={n}, ...], got {e.dtype} {e.shape}")
    img = int(np.prod(images.shape[1:]))
    width = LABEL_BYTES + img + sum(int(np.prod(e.shape[1:])) for e in extras)
    rows = np.empty((n, width), np.uint8)
    rows[:, :LABEL_BYTES] = labels.astype("<i4").view(np.uint8).reshape(n, LABEL_BYTES)
    rows[:, LABEL_BYTES:LABEL_BYTES + img] = images.reshape(n, -1)
    at = LABEL_BYTES + img
    for e in extras:
        k = int(np.prod(e.shape[1:]))
        rows[:, at:at + k] = e.reshape(n, -1)
        at += k
    return rows


def decode_records(records: Sequence[bytes], image_shape: Sequence[int],
                   images_out: np.ndarray | None = None,
                   labels_out: np.ndarray | None = None, *,
                   extra_shapes: Sequence[Sequence[int]] = (),
                   extras_out: Sequence[np.ndarray | None] | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Unpacks fixed-length records into images and labels in one pass.

    Args:
      records: ``n`` byte strings, each ``4 + H*W*C`` (+ the extras' sizes)
        long.
      image_shape: ``(H, W, C)``.
      images_out: optional ``uint8 [n, H, W, C]`` array to fill (e.g. a slice of
        a preallocated array); a new one is made if None.
      labels_out: optional ``int32 [n]`` array to fill.
      extra_shapes: per-example shapes of the extra arrays stored after the
        image (the dataset's ``extras``, in order; format version 2).
      extras_out: optional ``uint8 [n, *shape]`` arrays, one per extra shape
        (None entries are skipped), filled with the extras.

    Returns:
      ``(images uint8 [n, H, W, C], labels int32 [n])`` (the ``*_out`` arrays
      when given); the extras go to ``extras_out`` only.

    Raises:
      ValueError: a record of the wrong length.
    """
    h, w, c = (int(d) for d in image_shape)
    sizes = [int(np.prod(s)) for s in extra_shapes]
    rec_len = LABEL_BYTES + h * w * c + sum(sizes)
    n = len(records)
    buf = b"".join(records)
    if len(buf) != n * rec_len:
        bad = next(i for i, r in enumerate(records) if len(r) != rec_len)
        raise ValueError(f"record {bad} has {len(records[bad])} bytes; expected "
                         f"{rec_len} (4 label bytes + {h}x{w}x{c} image"
                         + (f" + extras of {sum(sizes)} bytes" if sizes else "") + ")")
    rows = np.frombuffer(buf, np.uint8).reshape(n, rec_len)
    if images_out is None:
        images_out = np.empty((n, h, w, c), np.uint8)
    if labels_out is None:
        labels_out = np.empty((n,), np.int32)
    at = LABEL_BYTES + h * w * c
    images_out.reshape(n, -1)[...] = rows[:, LABEL_BYTES:at]
    labels_out[...] = rows[:, :LABEL_BYTES].copy().view("<i4").reshape(n)
    for k, size in enumerate(sizes):
        if extras_out is not None and extras_out[k] is not None:
            extras_out[k].reshape(n, -1)[...] = rows[:, at:at + size]
        at += size
    return images_out, labels_out


# --------------------------------------------------------------------------
# Locations
# --------------------------------------------------------------------------


def prepared_dir(data_dir: str | os.PathLike, name: str) -> Path:
    """``<data_dir>/clj/<name>``: where ``name`` is (or will be) prepared.

    ``name`` may contain ``/`` (e.g. ``"emnist/letters"``), stored as
    ``emnist-letters``.
    """
    return Path(data_dir).expanduser() / "clj" / name.replace("/", "-")


def find_prepared(data_dir: str | os.PathLike | None, name: str) -> Path | None:
    """Directory holding a prepared ``name`` under ``data_dir``, or None.

    Looks at ``<data_dir>/clj/<name>/metadata.json``, then at ``data_dir``
    itself if its ``metadata.json`` names ``name``.
    """
    if data_dir is None:
        return None
    cand = prepared_dir(data_dir, name)
    if (cand / METADATA_FILE).is_file():
        return cand
    own = Path(data_dir).expanduser() / METADATA_FILE
    if own.is_file():
        try:
            meta = json.loads(own.read_text())
        except (OSError, ValueError):
            return None
        if meta.get("format") == FORMAT and meta.get("name") == name:
            return own.parent
    return None
