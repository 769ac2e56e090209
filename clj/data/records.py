"""clj's on-disk dataset format (array_record shards plus a JSON of
metadata): :class:`PreparedDataset`, its reader, and every public name of the
format in one place.

The format (record layout, ``metadata.json``, locations) is described and
implemented in :mod:`clj.data.record_format`; the writer is
:class:`~clj.data.record_writer.DatasetWriter`. Both are re-exported here, so
``from clj.data.records import DatasetWriter, prepared_dir`` keeps working.

Nothing here imports TensorFlow.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from clj.data.record_format import (FORMAT, FORMAT_VERSION, FORMAT_VERSION_EXTRAS, LABEL_BYTES,
                                    METADATA_FILE, READABLE_VERSIONS, SPLITS, WRITER_OPTIONS,
                                    decode_records, encode_records, find_prepared, prepared_dir)
from clj.data.record_writer import DatasetWriter

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "FORMAT_VERSION_EXTRAS",
    "LABEL_BYTES",
    "PreparedDataset",
    "DatasetWriter",
    "encode_records",
    "decode_records",
    "find_prepared",
    "prepared_dir",
    "METADATA_FILE",
    "SPLITS",
    "WRITER_OPTIONS",
]


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
      extras: ``{name: shape}`` of the per-example arrays stored after the
        image (format version 2; empty otherwise), e.g. ``{"saliency":
        (288, 384, 1)}``; read them with :meth:`read_extra` or the
        ``extras_out`` of :meth:`read` / :meth:`read_all`.

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
        if meta.get("format_version") not in READABLE_VERSIONS:
            raise ValueError(f"{meta_file}: format_version {meta.get('format_version')!r}; "
                             f"this clj reads versions "
                             f"{', '.join(map(str, READABLE_VERSIONS))}: prepare the data "
                             f"again with `python -m clj.data.prepare ... --overwrite`")
        self.metadata = meta
        self.name: str = meta["name"]
        self.image_shape: tuple[int, int, int] = tuple(meta["image_shape"])  # type: ignore
        self.num_classes: int = int(meta["num_classes"])
        self.class_names: list[str] | None = meta.get("class_names")
        self.mean: tuple[float, ...] = tuple(meta["mean"])
        self.std: tuple[float, ...] = tuple(meta["std"])
        self.num_threads = max(1, int(num_threads))
        self.extras: dict[str, tuple[int, ...]] = {
            str(e["name"]): tuple(int(d) for d in e["shape"]) for e in meta.get("extras", ())}
        self.record_len = (LABEL_BYTES + int(np.prod(self.image_shape))
                           + sum(int(np.prod(v)) for v in self.extras.values()))
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
    def _extra_targets(self, extras_out: dict[str, np.ndarray] | None, lead: tuple[int, ...]
                       ) -> list[np.ndarray | None]:
        extras_out = extras_out or {}
        unknown = sorted(set(extras_out) - set(self.extras))
        if unknown:
            raise ValueError(f"{self.name}: no extra {unknown[0]!r}; stored extras: "
                             f"{', '.join(self.extras) or 'none'}")
        out: list[np.ndarray | None] = []
        for k, shape in self.extras.items():
            a = extras_out.get(k)
            if a is not None and (a.dtype != np.uint8 or a.shape != (*lead, *shape)):
                raise ValueError(f"{self.name}: extras_out[{k!r}] must be uint8 "
                                 f"{(*lead, *shape)}, got {a.dtype} {a.shape}")
            out.append(a)
        return out

    def read(self, split: str, indices: np.ndarray,
             images_out: np.ndarray | None = None,
             labels_out: np.ndarray | None = None, *,
             extras_out: dict[str, np.ndarray] | None = None
             ) -> tuple[np.ndarray, np.ndarray]:
        """Reads the examples at ``indices``, in that order.

        Args:
          split: ``"train"`` or ``"test"``.
          indices: integer array of any shape ``I`` with values in
            ``[0, num_examples(split))``.
          images_out: optional ``uint8 [*I, H, W, C]`` array to fill.
          labels_out: optional ``int32 [*I]`` array to fill.
          extras_out: optional ``{name: uint8 [*I, *shape]}`` arrays, filled
            with those stored extras of the same examples (see
            :attr:`extras`).

        Returns:
          ``(images uint8 [*I, H, W, C], labels int32 [*I])``, equal to
          ``(X[indices], Y[indices])`` for the split's arrays ``X``, ``Y``.

        Each distinct index is read once, in file order, whatever the order
        or repetitions in ``indices``.

        Raises:
          IndexError: an index out of range (message names the bad value).
          ValueError: an unknown or misshapen entry of ``extras_out``.
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
        targets = self._extra_targets(extras_out, shape)
        # Read each distinct record once, in file order (reads close together
        # on disk are faster), then put them in the requested order.
        uniq, inverse = np.unique(indices.reshape(-1), return_inverse=True)
        keys = uniq.tolist()
        xs = np.empty((len(keys), *self.image_shape), np.uint8)
        ys = np.empty((len(keys),), np.int32)
        es = [None if t is None else np.empty((len(keys), *sh), np.uint8)
              for t, sh in zip(targets, self.extras.values())]
        src = self.source(split)
        shapes = list(self.extras.values())

        def work(lo: int, hi: int) -> None:
            decode_records(src.__getitems__(keys[lo:hi]), self.image_shape,
                           xs[lo:hi], ys[lo:hi], extra_shapes=shapes,
                           extras_out=[None if e is None else e[lo:hi] for e in es])

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
        for t, e, sh in zip(targets, es, shapes):
            if t is not None and e is not None:
                t.reshape(-1, *sh)[...] = e[inverse]
        return images_out, labels_out

    def read_all(self, split: str, batch_size: int = 8192, *,
                 extras_out: dict[str, np.ndarray] | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
        """Reads a whole split in stored order into preallocated arrays.

        Reads contiguous ranges of each shard (``batch_size`` records at a time)
        straight into one ``uint8 [N, H, W, C]`` array: the host never holds a
        second copy of the split.

        Args:
          split: the split to read.
          batch_size: records decoded per read.
          extras_out: optional ``{name: uint8 [N, *shape]}`` arrays filled
            with those stored extras (see :attr:`extras`).

        Returns:
          ``(images uint8 [N, H, W, C], labels int32 [N])``.

        Raises:
          ValueError: an unknown or misshapen entry of ``extras_out``; a
            shard holding another number of records than the metadata says.
        """
        from array_record.python import array_record_module

        n = self.num_examples(split)
        images = np.empty((n, *self.image_shape), np.uint8)
        labels = np.empty((n,), np.int32)
        targets = self._extra_targets(extras_out, (n,))
        shapes = list(self.extras.values())
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
                                   labels[start + lo: start + hi], extra_shapes=shapes,
                                   extras_out=[None if t is None else
                                               t[start + lo: start + hi] for t in targets])
            finally:
                reader.close()

        if len(jobs) == 1:
            read_shard(*jobs[0])
        else:
            for f in [self._executor().submit(read_shard, *j) for j in jobs]:
                f.result()
        return images, labels

    def read_extra(self, split: str, name: str, indices: np.ndarray | None = None
                   ) -> np.ndarray:
        """The stored extra ``name`` of ``split``'s examples.

        Args:
          split: the split.
          name: one of :attr:`extras` (e.g. ``"saliency"``).
          indices: integer array of any shape ``I``, or None for the whole
            split in stored order.

        Returns:
          ``uint8 [*I, *shape]`` (``[N, *shape]`` when ``indices`` is None),
          row for row aligned with :meth:`read` / :meth:`read_all`'s images.

        Raises:
          ValueError: ``name`` is not stored (the message lists what is).
          IndexError: an index out of range.
        """
        if name not in self.extras:
            raise ValueError(f"{self.name}: no extra {name!r}; stored extras: "
                             f"{', '.join(self.extras) or 'none'}")
        shape = self.extras[name]
        if indices is None:
            out = np.empty((self.num_examples(split), *shape), np.uint8)
            self.read_all(split, extras_out={name: out})
            return out
        indices = np.asarray(indices)
        out = np.empty((*indices.shape, *shape), np.uint8)
        self.read(split, indices, extras_out={name: out})
        return out

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
