"""The writer of clj's on-disk dataset format (:mod:`clj.data.record_format`):
:class:`DatasetWriter` packs examples into array_record shards and publishes
the folder with its ``metadata.json`` atomically.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from clj.data.dataset import channel_histograms, histogram_stats
from clj.data.record_format import (FORMAT, FORMAT_VERSION, FORMAT_VERSION_EXTRAS, LABEL_BYTES,
                                    METADATA_FILE, SPLITS, WRITER_OPTIONS, encode_records)

__all__ = ["DatasetWriter"]


class DatasetWriter:
    """Writes one dataset in clj's format, atomically.

    Records go to ``<final_dir>.incomplete`` first; :meth:`close` writes
    ``metadata.json`` and renames the folder to ``final_dir``, so a crashed
    preparation never looks prepared.

    Args:
      final_dir: target folder (usually
        :func:`~clj.data.record_format.prepared_dir`).
      name: dataset name stored in the metadata.
      image_shape: ``(H, W, C)`` of every image.
      num_classes: number of classes; labels must lie in ``[0, num_classes)``.
      class_names: optional list of ``num_classes`` names.
      shard_bytes: target bytes per shard (default 256 MiB).
      overwrite: replace an existing ``final_dir``; otherwise it is an error.
      source: free-form description of the source, stored in the metadata.
      extras: per-example uint8 arrays stored after the image in every record
        (format version 2), as ``{name: shape}`` in record order, e.g.
        ``{"saliency": (288, 384, 1)}``; every :meth:`write` must then give
        them all.

    Raises:
      FileExistsError: ``final_dir`` exists and ``overwrite`` is False.
      ValueError: bad shape, class count, class names or extra shapes.
    """

    def __init__(self, final_dir: str | os.PathLike, name: str,
                 image_shape: Sequence[int], num_classes: int,
                 class_names: Sequence[str] | None = None, *,
                 shard_bytes: int = 256 << 20, overwrite: bool = False,
                 source: dict[str, Any] | None = None,
                 extras: dict[str, Sequence[int]] | None = None) -> None:
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
        self.extras = {str(k): tuple(int(d) for d in v) for k, v in (extras or {}).items()}
        for k, v in self.extras.items():
            if not v or min(v) < 1:
                raise ValueError(f"extra {k!r}: shape must be positive ints, got {v}")
        self.record_len = (LABEL_BYTES + int(np.prod(self.image_shape))
                           + sum(int(np.prod(v)) for v in self.extras.values()))
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

    def write(self, split: str, images: np.ndarray, labels: np.ndarray,
              extras: dict[str, np.ndarray] | None = None) -> None:
        """Appends examples to ``split`` (``"train"`` or ``"test"``), in order.

        Args:
          images: ``uint8 [n, H, W, C]`` with the writer's image shape.
          labels: integer ``[n]`` in ``[0, num_classes)``.
          extras: ``{name: uint8 [n, *shape]}`` for every extra the writer was
            made with (row ``i`` belongs to image ``i``).

        Raises:
          ValueError: unknown split, wrong shape/dtype, labels out of range,
            missing or misshapen extras, or a split written again after
            another one.
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
        extras = extras or {}
        if set(extras) != set(self.extras):
            raise ValueError(f"{self.name}: extras {sorted(extras)} given; the writer stores "
                             f"{sorted(self.extras)}")
        ordered = []
        for k, shape in self.extras.items():
            e = np.asarray(extras[k])
            if e.dtype != np.uint8 or e.shape != (len(images), *shape):
                raise ValueError(f"{self.name}: extra {k!r} must be uint8 "
                                 f"[{len(images)}, {', '.join(map(str, shape))}], got "
                                 f"{e.dtype} {e.shape}")
            ordered.append(e)
        if split not in self._splits:
            if self._splits and list(self._splits)[-1] != split:
                self._close_shard()
            self._splits[split] = {"num_examples": 0, "shards": []}
        elif list(self._splits)[-1] != split:
            raise ValueError(f"split {split!r} must be written in one go")
        info = self._splits[split]
        rows = encode_records(images, labels, ordered)
        if split == "train":
            self._hist += channel_histograms(images)
        for row in rows:
            if self._writer is None or (info["shards"][-1]["num_examples"]
                                        >= self.records_per_shard):
                self._close_shard()
                self._open_shard(split)
            self._writer.write(row.tobytes())
            info["shards"][-1]["num_examples"] += 1
        info["num_examples"] += len(rows)

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
        mean, std = histogram_stats(self._hist)
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION_EXTRAS if self.extras else FORMAT_VERSION,
            "name": self.name,
            "image_shape": list(self.image_shape),
            "dtype": "uint8",
            "label_dtype": "int32",
            "record_layout": "int32 little-endian label, then H*W*C uint8 image "
                             "bytes in H, W, C order"
                             + (", then each extra's uint8 bytes (row-major), in the "
                                "order of extras" if self.extras else ""),
            "num_classes": self.num_classes,
            "class_names": self.class_names,
            "splits": self._splits,
            "mean": list(mean),
            "std": list(std),
            "source": self.source,
        }
        if self.extras:
            meta["extras"] = [{"name": k, "shape": list(v), "dtype": "uint8"}
                              for k, v in self.extras.items()]
        (self.tmp_dir / METADATA_FILE).write_text(json.dumps(meta, indent=1) + "\n")
        if self.final_dir.exists():
            shutil.rmtree(self.final_dir)
        os.replace(self.tmp_dir, self.final_dir)
        return self.final_dir

    def abort(self) -> None:
        """Removes the incomplete folder."""
        self._close_shard()
        shutil.rmtree(self.tmp_dir, ignore_errors=True)
