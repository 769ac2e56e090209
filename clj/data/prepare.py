"""Prepare a dataset in clj's on-disk format, from the files users already have.

Usage::

    python -m clj.data.prepare NAME --source DIR --data_dir DIR [--size N]
        [--workers N] [--name NAME] [--split SPLIT] [--overwrite]

writes ``<data_dir>/clj/<name>/`` (array_record shards + ``metadata.json``, see
:mod:`clj.data.records`), which ``load_dataset(name, data_dir)`` and the
streaming reader (:mod:`clj.data.stream`) then read. No TensorFlow, no network.

Sources (``NAME``):

``cifar10``, ``cifar100``
    The python-pickle archives: ``cifar-10-batches-py/`` (``data_batch_1`` ..
    ``data_batch_5``, ``test_batch``, ``batches.meta``) or
    ``cifar-100-python/`` (``train``, ``test``, ``meta``; fine labels), or their
    ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``. ``--source`` is
    the folder itself, a folder holding it or the archive, or the archive.
``mnist``, ``fashion_mnist``, ``emnist``
    IDX files (``train-images-idx3-ubyte[.gz]`` ...; for EMNIST
    ``emnist-<split>-train-images-idx3-ubyte[.gz]`` ..., ``--split``).
``svhn_cropped``
    ``train_32x32.mat`` and ``test_32x32.mat`` (label 10 stands for digit 0).
``imagefolder``
    A class-per-folder tree: ``train/<class>/.../<image>`` and an evaluation
    split in ``val/`` (or ``test/``), either class-per-folder or Tiny-ImageNet's
    ``val/images/*`` + ``val/val_annotations.txt``. Every image is converted to
    RGB, resized so its shorter side is ``--size`` (bilinear, antialiased),
    centre-cropped to ``size x size`` and stored as uint8; decoding runs in
    ``--workers`` processes. Stored under ``--name`` (default: the source
    folder's name). Classes are the sorted ``train/`` sub-folder names.

This module holds the command line and the driver (:func:`prepare`) that
writes the records (:class:`clj.data.records.DatasetWriter`); the readers of
the layouts above are :mod:`clj.data.source_layouts` (CIFAR, IDX, SVHN: whole
splits as arrays) and :mod:`clj.data.imagefolder` (image folders, decoded in
worker processes).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from clj.data import idx, records
from clj.data.imagefolder import (IMAGE_EXTENSIONS, decode_stream, list_imagefolder,
                                  resize_shorter_center_crop)
from clj.data.source_layouts import (FASHION_MNIST_CLASSES, ArraySplits, SourceLayoutError,
                                     load_cifar, load_idx_source, load_svhn)

__all__ = [
    "PREPARERS",
    "IMAGE_EXTENSIONS",
    "prepare",
    "prepare_command",
    "resize_shorter_center_crop",
    "main",
    # re-exported from clj.data.source_layouts / clj.data.imagefolder
    "ArraySplits",
    "FASHION_MNIST_CLASSES",
    "SourceLayoutError",
    "list_imagefolder",
]


def prepare_command(name: str, data_dir: str | os.PathLike | None = None,
                    source: str | None = None) -> str:
    """The exact ``python -m clj.data.prepare`` command for a dataset name.

    Args:
      name: a clj dataset name (``cifar10``, ``cifar100``, ``mnist``,
        ``fashion_mnist``, ``emnist[/split]``, ``svhn_cropped``,
        ``tiny_imagenet``, or any other name, prepared as an image folder).
      data_dir: target data directory (placeholder ``<data_dir>`` if None).
      source: what to pass as ``--source`` (a descriptive placeholder if None).

    Returns:
      A one-line shell command.
    """
    dd = str(data_dir) if data_dir is not None else "<data_dir>"
    base, _, split = name.partition("/")
    placeholders = {
        "cifar10": "<dir holding cifar-10-batches-py/ or cifar-10-python.tar.gz>",
        "cifar100": "<dir holding cifar-100-python/ or cifar-100-python.tar.gz>",
        "mnist": "<dir with the MNIST IDX files>",
        "fashion_mnist": "<dir with the Fashion-MNIST IDX files>",
        "emnist": "<dir with the EMNIST IDX files (gzip.zip extracted)>",
        "svhn_cropped": "<dir with train_32x32.mat and test_32x32.mat>",
        "tiny_imagenet": "<tiny-imagenet-200 dir>",
    }
    src = source or placeholders.get(base, "<dir with train/<class>/* and val/<class>/*>")
    if base in ("cifar10", "cifar100", "mnist", "fashion_mnist", "svhn_cropped"):
        return f"python -m clj.data.prepare {base} --source {src} --data_dir {dd}"
    if base == "emnist":
        return (f"python -m clj.data.prepare emnist --split {split or 'balanced'} "
                f"--source {src} --data_dir {dd}")
    size = 64 if base == "tiny_imagenet" else 224
    return (f"python -m clj.data.prepare imagefolder --name {name} --size {size} "
            f"--source {src} --data_dir {dd}")


# --------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------

PREPARERS = ("cifar10", "cifar100", "mnist", "fashion_mnist", "emnist", "svhn_cropped",
             "imagefolder")
"""Valid ``NAME`` arguments."""


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled,
                dynamic_ncols=True, mininterval=1.0)


def prepare(name: str, source: str | os.PathLike, data_dir: str | os.PathLike, *,
            size: int | None = None, workers: int | None = None,
            dataset_name: str | None = None, split: str = "balanced",
            overwrite: bool = False, progress: bool = True,
            batch_size: int = 1024) -> Path:
    """Converts a source dataset into clj's format under ``data_dir``.

    Args:
      name: one of :data:`PREPARERS`.
      source: file or folder in the layout the source expects (module doc).
      data_dir: output root; the dataset goes to ``<data_dir>/clj/<stored name>``.
      size: output side for ``imagefolder`` (required there, ignored elsewhere).
      workers: decoding processes for ``imagefolder`` (default: CPU count;
        ``<= 1`` decodes in this process).
      dataset_name: stored name for ``imagefolder`` (default: the source
        folder's name); the other sources store ``name`` (``emnist/<split>``).
      split: EMNIST split (see ``idx.EMNIST_SPLITS``).
      overwrite: replace an existing prepared dataset.
      progress: show a tqdm progress bar.
      batch_size: images decoded per write.

    Returns:
      The prepared folder.

    Raises:
      ValueError: unknown ``name``, bad ``size``/``workers``, undecodable image.
      SourceLayoutError (a FileNotFoundError): the source is not where or how
        it was expected; the message names the expected layout.
      FileExistsError: already prepared and ``overwrite`` is False.
    """
    if name not in PREPARERS:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(PREPARERS)}")
    src = Path(source).expanduser()
    if not src.exists():
        raise SourceLayoutError(f"--source {src} does not exist")
    if name == "imagefolder":
        if size is None or int(size) < 1:
            raise ValueError(f"imagefolder needs --size N >= 1 (output side in pixels), "
                             f"got {size}")
        if workers is not None and int(workers) < 0:
            raise ValueError(f"--workers must be >= 0, got {workers}")
        return _prepare_imagefolder(src, Path(data_dir), int(size),
                                    os.cpu_count() or 1 if workers is None else int(workers),
                                    dataset_name or _default_name(src), overwrite,
                                    progress, batch_size)
    stored = name
    if name in ("cifar10", "cifar100"):
        arrays, num_classes, class_names = load_cifar(name, src)
    elif name == "svhn_cropped":
        arrays, num_classes, class_names = load_svhn(src)
    else:
        arrays, num_classes, class_names, stored = load_idx_source(name, src, split)
    x_tr, y_tr, x_te, y_te = arrays
    if x_tr.ndim == 3:
        x_tr, x_te = x_tr[..., None], x_te[..., None]
    writer = records.DatasetWriter(
        records.prepared_dir(data_dir, stored), stored, x_tr.shape[1:], num_classes,
        class_names, overwrite=overwrite, source={"kind": name, "path": os.fspath(src)})
    try:
        with _progress(len(y_tr) + len(y_te), f"prepare {stored}", progress) as bar:
            for split_name, x, y in (("train", x_tr, y_tr), ("test", x_te, y_te)):
                for lo in range(0, len(y), 10 * batch_size):
                    hi = min(len(y), lo + 10 * batch_size)
                    writer.write(split_name, x[lo:hi], y[lo:hi])
                    bar.update(hi - lo)
        return writer.close()
    except BaseException:
        writer.abort()
        raise


def _default_name(src: Path) -> str:
    return re.sub(r"[^0-9A-Za-z_.-]+", "_", src.resolve().name).strip("_") or "imagefolder"


def _prepare_imagefolder(src: Path, data_dir: Path, size: int, workers: int, name: str,
                         overwrite: bool, progress: bool, batch_size: int) -> Path:
    classes, train_items, eval_items, eval_sub = list_imagefolder(src)
    writer = records.DatasetWriter(
        records.prepared_dir(data_dir, name), name, (size, size, 3), len(classes), classes,
        overwrite=overwrite,
        source={"kind": "imagefolder", "path": os.fspath(src), "size": size,
                "resize": "shorter side to size (bilinear, antialiased), centre crop",
                "test_folder": eval_sub})
    try:
        with _progress(len(train_items) + len(eval_items), f"prepare {name}",
                       progress) as bar:
            for split_name, items in (("train", train_items), ("test", eval_items)):
                labels = np.array([lab for _, lab in items], np.int64)
                stream = decode_stream([p for p, _ in items], size, workers)
                buf = np.empty((min(batch_size, len(items)), size, size, 3), np.uint8)
                lo = 0
                for i, img in enumerate(stream):
                    buf[i - lo] = img
                    if i - lo + 1 == len(buf) or i + 1 == len(items):
                        writer.write(split_name, buf[: i - lo + 1], labels[lo: i + 1])
                        bar.update(i - lo + 1)
                        lo = i + 1
        return writer.close()
    except BaseException:
        writer.abort()
        raise


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (``python -m clj.data.prepare``)."""
    p = argparse.ArgumentParser(
        prog="python -m clj.data.prepare",
        description="Write a dataset in clj's on-disk format (array_record shards + "
                    "metadata.json under <data_dir>/clj/<name>/). No TensorFlow needed.")
    p.add_argument("name", choices=PREPARERS, help="source kind")
    p.add_argument("--source", required=True, help="source file or folder")
    p.add_argument("--data_dir", required=True, help="output data directory")
    p.add_argument("--size", type=int, default=None,
                   help="imagefolder: output side (shorter side resize + centre crop)")
    p.add_argument("--workers", type=int, default=None,
                   help="imagefolder: decoding processes (default: CPU count)")
    p.add_argument("--name", dest="dataset_name", default=None,
                   help="imagefolder: stored dataset name (default: source folder name)")
    p.add_argument("--split", default="balanced",
                   help=f"emnist split: {', '.join(idx.EMNIST_SPLITS)}")
    p.add_argument("--overwrite", action="store_true", help="replace a prepared dataset")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    try:
        out = prepare(args.name, args.source, args.data_dir, size=args.size,
                      workers=args.workers, dataset_name=args.dataset_name,
                      split=args.split, overwrite=args.overwrite,
                      progress=not args.no_progress)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    with records.PreparedDataset(out) as ds:
        counts = ", ".join(f"{s} {ds.num_examples(s)}" for s in ds.splits)
        print(f"prepared {ds.name!r} in {out}: {counts}, images {ds.image_shape} uint8, "
              f"{ds.num_classes} classes. Load with load_dataset({ds.name.split('/')[0]!r}"
              f"{', split=' + repr(ds.name.split('/')[1]) if '/' in ds.name else ''}, "
              f"data_dir={str(args.data_dir)!r}) or --config.data_dir={args.data_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
