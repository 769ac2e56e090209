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

Nothing here imports TensorFlow.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "LABEL_BYTES",
    "PreparedDataset",
    "DatasetWriter",
    "encode_records",
    "decode_records",
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


# --------------------------------------------------------------------------
# Writer
# --------------------------------------------------------------------------


class DatasetWriter:
    """Writes one dataset in clj's format, atomically.

    Records go to ``<final_dir>.incomplete`` first; :meth:`close` writes
    ``metadata.json`` and renames the folder to ``final_dir``, so a crashed
    preparation never looks prepared.

    Args:
      final_dir: target folder (usually :func:`prepared_dir`).
      name: dataset name stored in the metadata.
      image_shape: ``(H, W, C)`` of every image.
      num_classes: number of classes; labels must lie in ``[0, num_classes)``.
      class_names: optional list of ``num_classes`` names.
      shard_bytes: target bytes per shard (default 256 MiB).
      overwrite: replace an existing ``final_dir``; otherwise it is an error.
      source: free-form description of the source, stored in the metadata.

    Raises:
      FileExistsError: ``final_dir`` exists and ``overwrite`` is False.
      ValueError: bad shape, class count or class names.
    """

    def __init__(self, final_dir: str | os.PathLike, name: str,
                 image_shape: Sequence[int], num_classes: int,
                 class_names: Sequence[str] | None = None, *,
                 shard_bytes: int = 256 << 20, overwrite: bool = False,
                 source: dict[str, Any] | None = None) -> None:
        from array_record.python import array_record_module

        self._module = array_record_module
        self.final_dir = Path(final_dir)
        self.image_shape = tuple(int(d) for d in image_shape)
        if len(self.image_shape) != 3 or min(self.image_shape) < 1:
            raise ValueError(f"image_shape must be (H, W, C) of positive ints, got "
                             f"{tuple(image_shape)}")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes")
        if self.final_dir.exists() and not overwrite:
            raise FileExistsError(
                f"{self.final_dir} already exists; pass --overwrite to replace it")
        self.name = name
        self.num_classes = int(num_classes)
        self.class_names = list(class_names) if class_names is not None else None
        self.source = source or {}
        self.record_len = LABEL_BYTES + int(np.prod(self.image_shape))
        self.records_per_shard = max(1, shard_bytes // self.record_len)
        self.tmp_dir = self.final_dir.with_name(self.final_dir.name + ".incomplete")
        if self.tmp_dir.exists():
            shutil.rmtree(self.tmp_dir)
        self.tmp_dir.mkdir(parents=True)
        self._splits: dict[str, dict[str, Any]] = {}
        self._writer: Any = None
        self._hist = np.zeros((self.image_shape[2], 256), np.int64)
        self._overwrite = overwrite

    def _open_shard(self, split: str) -> None:
        info = self._splits[split]
        fname = f"{split}.array_record-{len(info['shards']):05d}"
        self._writer = self._module.ArrayRecordWriter(
            os.fspath(self.tmp_dir / fname), WRITER_OPTIONS)
        info["shards"].append({"file": fname, "num_examples": 0})

    def _close_shard(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def write(self, split: str, images: np.ndarray, labels: np.ndarray) -> None:
        """Appends examples to ``split`` (``"train"`` or ``"test"``), in order.

        Args:
          images: ``uint8 [n, H, W, C]`` with the writer's image shape.
          labels: integer ``[n]`` in ``[0, num_classes)``.

        Raises:
          ValueError: unknown split, wrong shape/dtype, labels out of range, or
            a split written again after another one.
        """
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        images = np.asarray(images)
        labels = np.asarray(labels)
        if images.dtype != np.uint8 or images.shape[1:] != self.image_shape:
            raise ValueError(f"{self.name}: images must be uint8 [n, "
                             f"{', '.join(map(str, self.image_shape))}], got "
                             f"{images.dtype} {images.shape}")
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise ValueError(f"{self.name}: {split} labels outside [0, "
                             f"{self.num_classes}): min {labels.min()}, "
                             f"max {labels.max()}")
        if split not in self._splits:
            if self._splits and list(self._splits)[-1] != split:
                self._close_shard()
            self._splits[split] = {"num_examples": 0, "shards": []}
        elif list(self._splits)[-1] != split:
            raise ValueError(f"split {split!r} must be written in one go")
        info = self._splits[split]
        rows = encode_records(images, labels)
        if split == "train":
            for c in range(self.image_shape[2]):
                self._hist[c] += np.bincount(images[..., c].ravel(), minlength=256)
        for row in rows:
            if self._writer is None or (info["shards"][-1]["num_examples"]
                                        >= self.records_per_shard):
                self._close_shard()
                self._open_shard(split)
            self._writer.write(row.tobytes())
            info["shards"][-1]["num_examples"] += 1
        info["num_examples"] += len(rows)

    def _stats(self) -> tuple[list[float], list[float]]:
        values = np.arange(256, dtype=np.float64) / 255.0
        means, stds = [], []
        for hist in self._hist.astype(np.float64):
            n = hist.sum()
            m = float((hist * values).sum() / n) if n else 0.0
            var = float((hist * values ** 2).sum() / n) - m * m if n else 0.0
            means.append(m)
            stds.append(math.sqrt(max(var, 0.0)))
        return means, stds

    def close(self) -> Path:
        """Finishes the shards, writes ``metadata.json`` and publishes the folder.

        Returns:
          The final directory.

        Raises:
          ValueError: the train or test split is missing or empty.
        """
        self._close_shard()
        for split in SPLITS:
            if not self._splits.get(split, {}).get("num_examples"):
                raise ValueError(f"{self.name}: split {split!r} is empty")
        for info in self._splits.values():
            n = len(info["shards"])
            for i, shard in enumerate(info["shards"]):
                new = f"{shard['file'][:-5]}{i:05d}-of-{n:05d}"
                os.replace(self.tmp_dir / shard["file"], self.tmp_dir / new)
                shard["file"] = new
        mean, std = self._stats()
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "image_shape": list(self.image_shape),
            "dtype": "uint8",
            "label_dtype": "int32",
            "record_layout": "int32 little-endian label, then H*W*C uint8 image "
                             "bytes in H, W, C order",
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "splits": self._splits,
            "mean": mean,
            "std": std,
            "source": self.source,
        }
        (self.tmp_dir / METADATA_FILE).write_text(json.dumps(meta, indent=1) + "\n")
        if self.final_dir.exists():
            shutil.rmtree(self.final_dir)
        os.replace(self.tmp_dir, self.final_dir)
        return self.final_dir

    def abort(self) -> None:
        """Removes the incomplete folder."""
        self._close_shard()
        shutil.rmtree(self.tmp_dir, ignore_errors=True)


# --------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------


def _split_even(n: int, parts: int) -> list[tuple[int, int]]:
    parts = max(1, min(parts, n))
    bounds = np.linspace(0, n, parts + 1).astype(np.int64)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


class PreparedDataset:
    """Random-access reader of a dataset in clj's format.

    Reads go through grain's :class:`grain.python.ArrayRecordDataSource` (one
    per split), split over ``num_threads`` threads (array_record reads run
    without the GIL), and are decoded per batch with one ``np.frombuffer``.

    Args:
      path: the prepared folder (holding ``metadata.json``).
      num_threads: reader threads per :meth:`read` call.

    Attributes:
      metadata: the parsed ``metadata.json``.
      name, image_shape ``(H, W, C)``, num_classes, class_names, mean, std.

    Raises:
      FileNotFoundError: no ``metadata.json`` or a listed shard is missing.
      ValueError: not clj's format, or a format version this code cannot read.
    """

    def __init__(self, path: str | os.PathLike, num_threads: int = 4) -> None:
        self.path = Path(path).expanduser()
        meta_file = self.path / METADATA_FILE
        if not meta_file.is_file():
            raise FileNotFoundError(f"{self.path} is not a prepared clj dataset: no "
                                    f"{METADATA_FILE} (prepare one with `python -m "
                                    f"clj.data.prepare NAME --source DIR --data_dir DIR`)")
        meta = json.loads(meta_file.read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"{meta_file}: format {meta.get('format')!r} is not {FORMAT!r}")
        if meta.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"{meta_file}: format_version {meta.get('format_version')!r}; "
                             f"this clj reads version {FORMAT_VERSION}: prepare the data "
                             f"again with `python -m clj.data.prepare ... --overwrite`")
        self.metadata = meta
        self.name: str = meta["name"]
        self.image_shape: tuple[int, int, int] = tuple(meta["image_shape"])  # type: ignore
        self.num_classes: int = int(meta["num_classes"])
        self.class_names: list[str] | None = meta.get("class_names")
        self.mean: tuple[float, ...] = tuple(meta["mean"])
        self.std: tuple[float, ...] = tuple(meta["std"])
        self.num_threads = max(1, int(num_threads))
        self.record_len = LABEL_BYTES + int(np.prod(self.image_shape))
        self._sources: dict[str, Any] = {}
        for split, info in meta["splits"].items():
            for shard in info["shards"]:
                if not (self.path / shard["file"]).is_file():
                    raise FileNotFoundError(f"{self.name}: shard {self.path / shard['file']} "
                                            f"listed in {meta_file} is missing")
        self._pool: ThreadPoolExecutor | None = None

    # ------------------------------------------------------------ info
    @property
    def splits(self) -> tuple[str, ...]:
        """Names of the stored splits."""
        return tuple(self.metadata["splits"])

    def num_examples(self, split: str) -> int:
        """Number of examples of ``split``."""
        self._check_split(split)
        return int(self.metadata["splits"][split]["num_examples"])

    def _check_split(self, split: str) -> None:
        if split not in self.metadata["splits"]:
            raise ValueError(f"{self.name}: unknown split {split!r}; stored: "
                             f"{', '.join(self.metadata['splits'])}")

    def source(self, split: str) -> Any:
        """Random-access source of ``split`` (records as bytes, ``__getitems__``).

        grain's ``ArrayRecordDataSource`` when grain is installed, else
        array_record's (the class grain's extends).
        """
        self._check_split(split)
        if split not in self._sources:
            try:  # grain's source (array_record's, with grain's read statistics)
                from grain.python import ArrayRecordDataSource
            except ImportError:  # grain not installed: array_record's own
                from array_record.python.array_record_data_source import (
                    ArrayRecordDataSource)

            files = [os.fspath(self.path / s["file"])
                     for s in self.metadata["splits"][split]["shards"]]
            self._sources[split] = ArrayRecordDataSource(files)
        return self._sources[split]

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.num_threads,
                                            thread_name_prefix="clj-records")
        return self._pool

    # ------------------------------------------------------------ reads
    def read(self, split: str, indices: np.ndarray,
             images_out: np.ndarray | None = None,
             labels_out: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Reads the examples at ``indices``, in that order.

        Args:
          split: ``"train"`` or ``"test"``.
          indices: integer array of any shape ``I`` with values in
            ``[0, num_examples(split))``.
          images_out: optional ``uint8 [*I, H, W, C]`` array to fill.
          labels_out: optional ``int32 [*I]`` array to fill.

        Returns:
          ``(images uint8 [*I, H, W, C], labels int32 [*I])``, equal to
          ``(X[indices], Y[indices])`` for the split's arrays ``X``, ``Y``.

        Each distinct index is read once, in file order, whatever the order
        or repetitions in ``indices``.

        Raises:
          IndexError: an index out of range (message names the bad value).
        """
        indices = np.asarray(indices)
        n = self.num_examples(split)
        if indices.size and (indices.min() < 0 or indices.max() >= n):
            bad = indices.min() if indices.min() < 0 else indices.max()
            raise IndexError(f"{self.name}/{split}: index {int(bad)} outside [0, {n})")
        shape = indices.shape
        if images_out is None:
            images_out = np.empty((*shape, *self.image_shape), np.uint8)
        if labels_out is None:
            labels_out = np.empty(shape, np.int32)
        # Read each distinct record once, in file order (reads close together
        # on disk are faster), then put them in the requested order.
        uniq, inverse = np.unique(indices.reshape(-1), return_inverse=True)
        keys = uniq.tolist()
        xs = np.empty((len(keys), *self.image_shape), np.uint8)
        ys = np.empty((len(keys),), np.int32)
        src = self.source(split)

        def work(lo: int, hi: int) -> None:
            decode_records(src.__getitems__(keys[lo:hi]), self.image_shape,
                           xs[lo:hi], ys[lo:hi])

        parts = _split_even(len(keys), self.num_threads)
        if len(parts) <= 1:
            for lo, hi in parts:
                work(lo, hi)
        else:
            for f in [self._executor().submit(work, lo, hi) for lo, hi in parts]:
                f.result()
        inverse = inverse.reshape(-1)
        images_out.reshape(-1, *self.image_shape)[...] = xs[inverse]
        labels_out.reshape(-1)[...] = ys[inverse]
        return images_out, labels_out

    def read_all(self, split: str, batch_size: int = 8192) -> tuple[np.ndarray, np.ndarray]:
        """Reads a whole split in stored order into preallocated arrays.

        Reads contiguous ranges of each shard (``batch_size`` records at a time)
        straight into one ``uint8 [N, H, W, C]`` array: the host never holds a
        second copy of the split.

        Returns:
          ``(images uint8 [N, H, W, C], labels int32 [N])``.
        """
        from array_record.python import array_record_module

        n = self.num_examples(split)
        images = np.empty((n, *self.image_shape), np.uint8)
        labels = np.empty((n,), np.int32)
        jobs = []
        offset = 0
        for shard in self.metadata["splits"][split]["shards"]:
            m = int(shard["num_examples"])
            jobs.append((self.path / shard["file"], offset, m))
            offset += m

        def read_shard(path: Path, start: int, m: int) -> None:
            reader = array_record_module.ArrayRecordReader(
                os.fspath(path), "readahead_buffer_size:16777216")
            try:
                if reader.num_records() != m:
                    raise ValueError(f"{path}: {reader.num_records()} records, metadata "
                                     f"says {m}")
                for lo in range(0, m, batch_size):
                    hi = min(m, lo + batch_size)
                    decode_records(reader.read(lo, hi), self.image_shape,
                                   images[start + lo: start + hi],
                                   labels[start + lo: start + hi])
            finally:
                reader.close()

        if len(jobs) == 1:
            read_shard(*jobs[0])
        else:
            for f in [self._executor().submit(read_shard, *j) for j in jobs]:
                f.result()
        return images, labels

    def close(self) -> None:
        """Closes the file readers and the thread pool."""
        for src in self._sources.values():
            src.__exit__(None, None, None)
        self._sources.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self) -> "PreparedDataset":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        counts = ", ".join(f"{s}={self.num_examples(s)}" for s in self.splits)
        return (f"PreparedDataset({self.name!r}, {counts}, image_shape="
                f"{self.image_shape}, num_classes={self.num_classes}, path={self.path})")
