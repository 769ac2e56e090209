"""Streaming input: read batches of a prepared dataset from disk, ahead of use.

The training loop builds, exactly as for the on-device path, an index array
``idx`` of shape ``[S, n_chunks, K, B]`` (seeds, chunks, steps per chunk,
batch) holding example indices of the train split. :class:`ChunkStream`
yields, for ``c = start_chunk .. n_chunks - 1`` in order::

    images[c] = X[idx[:, c]]   # uint8 [S, K, B, H, W, C]
    labels[c] = Y[idx[:, c]]   # int32 [S, K, B]

(``X``, ``Y`` the split's arrays as :func:`clj.data.load_dataset` returns
them), so a run fed from the stream sees bit for bit the batches of the
on-device path. Records are read by random access through grain's
``ArrayRecordDataSource`` in reader threads; a background thread keeps up to
``prefetch`` chunks ready, so in steady state the consumer does not wait.

For multi-host runs each process reads only its rows of the batch axis:
``process_index`` / ``process_count`` select ``B / process_count`` contiguous
rows ``[p * B', (p + 1) * B')``; concatenating the processes' parts along the
batch axis gives the whole batch.

:class:`EvalStream` does the same for evaluation batches ``[nb, E]``.

Usage (shutdown is :meth:`close`, or the ``with`` block)::

    ds = open_prepared("cifar100", data_dir)
    with ChunkStream(ds, idx, prefetch=2) as stream:
        for c, (x, y) in enumerate(stream, start=stream.start_chunk):
            ...  # device_put(x, sharding), run the compiled chunk
"""

from __future__ import annotations

import os
import queue
import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from clj.data.records import PreparedDataset, find_prepared

__all__ = ["ChunkStream", "EvalStream", "open_prepared", "read_batches"]


def open_prepared(name: str, data_dir: str | os.PathLike, *,
                  num_threads: int = 4) -> PreparedDataset:
    """Opens dataset ``name`` prepared in clj's format under ``data_dir``.

    Args:
      name: stored name (``"cifar100"``, ``"emnist/letters"``, ``"imagenet100"``;
        a ``"clj:"`` prefix is accepted).
      data_dir: the ``--data_dir`` given to ``python -m clj.data.prepare``, or
        the prepared folder itself.
      num_threads: reader threads per read.

    Returns:
      An open :class:`clj.data.records.PreparedDataset` (close it when done).

    Raises:
      FileNotFoundError: not prepared there; the message gives the exact
        ``python -m clj.data.prepare ...`` command.
    """
    stored = name[len("clj:"):] if name.startswith("clj:") else name
    path = find_prepared(data_dir, stored)
    if path is None:
        from clj.data.prepare import prepare_command
        from clj.data.records import prepared_dir

        raise FileNotFoundError(
            f"dataset {stored!r} is not prepared in clj's format (no "
            f"{prepared_dir(data_dir, stored) / 'metadata.json'}); streaming reads only "
            f"that format. Prepare it with `{prepare_command(stored, data_dir)}`")
    return PreparedDataset(path, num_threads=num_threads)


def _process_rows(b: int, process_index: int, process_count: int) -> slice:
    if process_count < 1 or not 0 <= process_index < process_count:
        raise ValueError(f"process_index={process_index} must be in [0, process_count="
                         f"{process_count})")
    if b % process_count:
        raise ValueError(f"the batch axis ({b}) must be divisible by process_count="
                         f"{process_count}")
    per = b // process_count
    return slice(process_index * per, (process_index + 1) * per)


class _Prefetcher:
    """Reads items ``start..n-1`` in a background thread, ``prefetch`` ahead."""

    _DONE = object()

    def __init__(self, dataset: PreparedDataset | str | os.PathLike, split: str,
                 indices: np.ndarray, n: int, start: int, prefetch: int,
                 num_threads: int | None, labels: np.ndarray | None = None, extras: tuple = ()) -> None:
        if prefetch < 1:
            raise ValueError(f"prefetch must be >= 1 (chunks read ahead), got {prefetch}")
        if not 0 <= start <= n:
            raise ValueError(f"start={start} must be in [0, {n}]")
        if isinstance(dataset, PreparedDataset):
            self.dataset, self._owns = dataset, False
        else:
            self.dataset = PreparedDataset(Path(dataset), num_threads=num_threads or 4)
            self._owns = True
        n_split = self.dataset.num_examples(split)
        if indices.size and (indices.min() < 0 or indices.max() >= n_split):
            bad = int(indices.min() if indices.min() < 0 else indices.max())
            raise IndexError(f"{self.dataset.name}/{split}: index {bad} outside "
                             f"[0, {n_split})")
        if labels is not None:
            labels = np.asarray(labels)
            if labels.ndim != 1 or labels.shape[0] != n_split:
                raise ValueError(f"labels must be a 1-D array of the {n_split} labels of "
                                 f"{self.dataset.name}/{split}, got shape {labels.shape}")
            labels = labels.astype(np.int32)
        self.labels = labels
        missing = [e for e in extras if e not in self.dataset.extras]
        if missing:
            raise ValueError(f"{self.dataset.name}: no extra {missing[0]!r}; stored extras: "
                             f"{', '.join(self.dataset.extras) or 'none'}")
        self.extras = tuple(extras)
        self.split = split
        self.num_items = n
        self.start = start
        self._queue: queue.Queue = queue.Queue(maxsize=prefetch)
        self._stop = threading.Event()
        self._iterated = False
        self._thread = threading.Thread(target=self._run, name="clj-stream", daemon=True)
        self._thread.start()

    def _item_indices(self, i: int) -> np.ndarray:  # overridden
        raise NotImplementedError

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for i in range(self.start, self.num_items):
                if self._stop.is_set():
                    return
                ix = self._item_indices(i)
                ex = {e: np.empty((*ix.shape, *self.dataset.extras[e]), np.uint8) for e in self.extras}
                x, y = self.dataset.read(self.split, ix, extras_out=ex or None)
                if ex:  # the images and their stored extras, row for row
                    x = {"image": x, **ex}
                if self.labels is not None:  # the scenario's labels (its class order), not the stored ones
                    y = self.labels[ix]
                if not self._put((x, y)):
                    return
        except BaseException as e:  # handed to the consumer
            self._put(e)
            return
        self._put(self._DONE)

    def __len__(self) -> int:
        """Number of items this stream yields (``n - start``)."""
        return self.num_items - self.start

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if self._iterated:
            raise RuntimeError("a stream can be iterated once; make a new one")
        self._iterated = True
        return self._iterate()

    def _iterate(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for _ in range(len(self)):
            item = self._queue.get()
            if isinstance(item, BaseException):
                self.close()
                raise item
            if item is self._DONE:  # pragma: no cover - defensive
                break
            yield item

    def close(self) -> None:
        """Stops the reader thread, waits for it, and closes an owned dataset."""
        self._stop.set()
        self._thread.join()
        if self._owns:
            self.dataset.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class ChunkStream(_Prefetcher):
    """Chunks of training batches read from disk, one or more chunks ahead.

    Args:
      dataset: an open :class:`~clj.data.records.PreparedDataset` (not closed by
        the stream), or the path of a prepared folder (opened and closed here).
      indices: integer array ``[S, n_chunks, K, B]`` of example indices into
        ``split`` (seeds, chunks, steps per chunk, batch), as the on-device
        path would gather them.
      split: ``"train"`` (default) or ``"test"``.
      prefetch: chunks kept ready ahead of the consumer (>= 1; 2 double-buffers
        behind the chunk being consumed).
      process_index, process_count: read only rows
        ``[p * B / P, (p + 1) * B / P)`` of the batch axis (multi-host; ``B``
        must be divisible by ``P``). Defaults: the whole batch.
      start_chunk: first chunk to yield (e.g. resuming mid-task).
      num_threads: reader threads when ``dataset`` is a path.
      labels: optional integer array ``[N]``, the labels of every example of
        ``split`` as the run uses them (a scenario's ``y_train`` /
        ``y_test``, relabelled by its class order); the yielded labels are
        then ``labels[indices]`` instead of the labels stored on disk, so a
        streamed run sees exactly the on-device run's labels.
      extras: names of stored per-image extras (``"saliency"``) read with
        the images; each yielded ``images`` is then a dict ``{"image": images,
        name: uint8 [S, K, B', *shape], ...}``.

    Iteration (once) yields ``n_chunks - start_chunk`` pairs, in chunk order:
      ``images uint8 [S, K, B', H, W, C]`` and ``labels int32 [S, K, B']``
      with ``B' = B / process_count``; each pair is a fresh array (safe to hand
      to an asynchronous ``jax.device_put``). Reading starts in a background
      thread at construction, so the first chunk loads while the loop compiles.

    Raises:
      ValueError: ``indices`` not 4-D, bad ``prefetch``/``start_chunk``/process
        split, an extra the records do not store. IndexError: an index outside
        the split. Read errors are raised by the iteration that would have
        returned the chunk.
    """

    def __init__(self, dataset: PreparedDataset | str | os.PathLike, indices: np.ndarray,
                 *, split: str = "train", prefetch: int = 2, process_index: int = 0,
                 process_count: int = 1, start_chunk: int = 0,
                 num_threads: int | None = None, labels: np.ndarray | None = None, extras: tuple = ()) -> None:
        indices = np.asarray(indices)
        if indices.ndim != 4 or not np.issubdtype(indices.dtype, np.integer):
            raise ValueError(f"indices must be an integer array [S, n_chunks, K, B], got "
                             f"{indices.dtype} {indices.shape}")
        self.rows = _process_rows(indices.shape[3], process_index, process_count)
        self.indices = indices[..., self.rows]
        self.start_chunk = int(start_chunk)
        super().__init__(dataset, split, self.indices, indices.shape[1], self.start_chunk,
                         prefetch, num_threads, labels, extras)

    def _item_indices(self, i: int) -> np.ndarray:
        return self.indices[:, i]


class EvalStream(_Prefetcher):
    """Evaluation batches read from disk, ``prefetch`` batches ahead.

    Args:
      dataset: open :class:`~clj.data.records.PreparedDataset` or a path.
      indices: integer array ``[nb, E]`` of example indices into ``split``.
      split: ``"test"`` (default) or ``"train"``.
      prefetch, process_index, process_count, num_threads, labels: as for
        :class:`ChunkStream` (the process split is over ``E``).

    Iteration (once) yields ``nb`` pairs ``images uint8 [E', H, W, C]``,
    ``labels int32 [E']`` (``E' = E / process_count``), in batch order.
    """

    def __init__(self, dataset: PreparedDataset | str | os.PathLike, indices: np.ndarray,
                 *, split: str = "test", prefetch: int = 2, process_index: int = 0,
                 process_count: int = 1, num_threads: int | None = None,
                 labels: np.ndarray | None = None) -> None:
        indices = np.asarray(indices)
        if indices.ndim != 2 or not np.issubdtype(indices.dtype, np.integer):
            raise ValueError(f"indices must be an integer array [nb, E], got "
                             f"{indices.dtype} {indices.shape}")
        self.rows = _process_rows(indices.shape[1], process_index, process_count)
        self.indices = indices[:, self.rows]
        super().__init__(dataset, split, self.indices, indices.shape[0], 0, prefetch,
                         num_threads, labels)

    def _item_indices(self, i: int) -> np.ndarray:
        return self.indices[i]


def read_batches(dataset: PreparedDataset, indices: np.ndarray, split: str = "test"
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Reads evaluation batches in one call (no background thread).

    Args:
      dataset: an open :class:`~clj.data.records.PreparedDataset`.
      indices: integer array ``[nb, E]`` (any shape works) into ``split``.
      split: split to read.

    Returns:
      ``images uint8 [nb, E, H, W, C]``, ``labels int32 [nb, E]``.
    """
    return dataset.read(split, np.asarray(indices))
