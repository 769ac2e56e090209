"""clj's on-disk dataset format: array_record shards plus a JSON of metadata.

A prepared dataset lives in ``<data_dir>/clj/<name>/``::

    metadata.json                      # see below
    train.array_record-00000-of-00003  # shards of the train split
    ...
    test.array_record-00000-of-00001   # shards of the test split

Every record is one example, with a fixed length for the whole dataset:

    bytes 0..3   label, int32 little-endian
    bytes 4..    image, H*W*C uint8 in H, W, C order (row-major)

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
LABEL_BYTES = 4
METADATA_FILE = "metadata.json"
WRITER_OPTIONS = "group_size:1"
SPLITS = ("train", "test")


# --------------------------------------------------------------------------
# Record encoding
# --------------------------------------------------------------------------


def encode_records(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Packs examples into fixed-length records.

    Args:
      images: ``uint8 [n, H, W, C]``.
      labels: integer ``[n]`` (must fit in int32).

    Returns:
      ``uint8 [n, 4 + H*W*C]``: row ``i`` is the bytes of record ``i`` (label
      as int32 little-endian, then the image in H, W, C order).

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
    rows = np.empty((n, LABEL_BYTES + images[0].size if n else LABEL_BYTES), np.uint8)
    rows[:, :LABEL_BYTES] = labels.astype("<i4").view(np.uint8).reshape(n, LABEL_BYTES)
    rows[:, LABEL_BYTES:] = images.reshape(n, -1)
    return rows


def decode_records(records: Sequence[bytes], image_shape: Sequence[int],
                   images_out: np.ndarray | None = None,
                   labels_out: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Unpacks fixed-length records into images and labels in one pass.

    Args:
      records: ``n`` byte strings, each ``4 + H*W*C`` long.
      image_shape: ``(H, W, C)``.
      images_out: optional ``uint8 [n, H, W, C]`` array to fill (e.g. a slice of
        a preallocated array); a new one is made if None.
      labels_out: optional ``int32 [n]`` array to fill.

    Returns:
      ``(images uint8 [n, H, W, C], labels int32 [n])`` (the ``*_out`` arrays
      when given).

    Raises:
      ValueError: a record of the wrong length.
    """
    h, w, c = (int(d) for d in image_shape)
    rec_len = LABEL_BYTES + h * w * c
    n = len(records)
    buf = b"".join(records)
    if len(buf) != n * rec_len:
        bad = next(i for i, r in enumerate(records) if len(r) != rec_len)
        raise ValueError(f"record {bad} has {len(records[bad])} bytes; expected "
                         f"{rec_len} (4 label bytes + {h}x{w}x{c} image)")
    rows = np.frombuffer(buf, np.uint8).reshape(n, rec_len)
    if images_out is None:
        images_out = np.empty((n, h, w, c), np.uint8)
    if labels_out is None:
        labels_out = np.empty((n,), np.int32)
    images_out.reshape(n, -1)[...] = rows[:, LABEL_BYTES:]
    labels_out[...] = rows[:, :LABEL_BYTES].copy().view("<i4").reshape(n)
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
