"""Prepare a dataset in clj's on-disk format, from the files users already have.

Usage::

    python -m clj.data.prepare NAME --source DIR --data_dir DIR [--size N]
        [--workers N] [--name NAME] [--split SPLIT] [--classes FILE] [--overwrite]

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
``tiny_imagenet``
    ``tiny-imagenet-200/``: ``wnids.txt``, ``train/<wnid>/images/*.JPEG``,
    ``val/images/*.JPEG`` + ``val/val_annotations.txt``; labels in
    ``wnids.txt`` order (Mammoth's); stored at 64x64 (native) by default.
``imagenet100``
    An ImageNet tree (``train/<wnid>/*.JPEG``, ``val/<wnid>/*.JPEG`` or a flat
    ``val/`` with its labels) restricted to the classes of ``--classes``
    (default: PyCIL's list, ``clj/data/lists/imagenet100_pycil.txt``), labels
    in the list's order; shorter side to ``--size`` (default 256), centre crop.
``imagenet1k``
    The whole tree; ``val/`` class-per-folder, or flat ``val/*.JPEG`` with
    ``LOC_val_solution.csv`` or the devkit's
    ``ILSVRC2012_validation_ground_truth.txt`` + ``meta.mat``; classes sorted
    (or ``--classes``); default 256.
``mini_imagenet``, ``fg_imagenet``
    SER's layout: ``images/{train,val}/<wnid>/*.JPEG`` and
    ``annotations/{train,val}/<wnid>/*.png`` (saliency maps), with SER's label
    map as ``--classes`` (``data/seq_miniimg.yml`` / ``data/seq_imagenet_FG.yml``);
    images and maps resized to 288x384 with Lanczos (SER's transform); the
    maps are stored as the extra ``saliency`` (``uint8 [H, W, 1]``) of each
    record (format version 2).

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

from clj.data import idx, imagenet, records
from clj.data.imagefolder import (IMAGE_EXTENSIONS, decode_stream, list_imagefolder,
                                  resize_shorter_center_crop)
from clj.data.source_layouts import (FASHION_MNIST_CLASSES, ArraySplits, SourceLayoutError,
                                     load_cifar, load_idx_source, load_svhn)

__all__ = [
    "PREPARERS",
    "IMAGE_EXTENSIONS",
    "parse_size",
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
        ``tiny_imagenet``, ``imagenet100``, ``imagenet1k``, ``mini_imagenet``,
        ``fg_imagenet``, or any other name, prepared as an image folder).
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
        "imagenet100": "<ImageNet dir with train/<wnid>/ and val/<wnid>/>",
        "imagenet1k": "<ImageNet dir with train/<wnid>/ and val/>",
        "mini_imagenet": "<seqMINIIMG dir with images/ and annotations/>",
        "fg_imagenet": "<ImageNet100 dir of SER with images/ and annotations/>",
    }
    src = source or placeholders.get(base, "<dir with train/<class>/* and val/<class>/*>")
    if base in ("cifar10", "cifar100", "mnist", "fashion_mnist", "svhn_cropped",
                "tiny_imagenet", "imagenet100", "imagenet1k"):
        return f"python -m clj.data.prepare {base} --source {src} --data_dir {dd}"
    if base in ("mini_imagenet", "fg_imagenet"):
        yml = "seq_miniimg.yml" if base == "mini_imagenet" else "seq_imagenet_FG.yml"
        return (f"python -m clj.data.prepare {base} --source {src} "
                f"--classes <SER's data/{yml}> --data_dir {dd}")
    if base == "emnist":
        return (f"python -m clj.data.prepare emnist --split {split or 'balanced'} "
                f"--source {src} --data_dir {dd}")
    size = 224
    return (f"python -m clj.data.prepare imagefolder --name {name} --size {size} "
            f"--source {src} --data_dir {dd}")


# --------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------

PREPARERS = ("cifar10", "cifar100", "mnist", "fashion_mnist", "emnist", "svhn_cropped",
             "imagefolder") + imagenet.IMAGENET_KINDS
"""Valid ``NAME`` arguments."""


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled,
                dynamic_ncols=True, mininterval=1.0)


def parse_size(name: str, size: int | str | Sequence[int] | None) -> tuple[int, int]:
    """The stored ``(H, W)`` of an image preparer from ``--size``.

    Args:
      name: ``imagefolder`` or one of the ImageNet-family preparers.
      size: ``None`` (the kind's default, :data:`clj.data.imagenet.DEFAULT_SIZES`;
        ``imagefolder`` has none), an int or ``"N"`` (square, shorter side to
        ``N``), or ``"HxW"`` / ``(H, W)`` (only ``mini_imagenet`` /
        ``fg_imagenet``, which resize without keeping the aspect ratio).

    Raises:
      ValueError: a missing, malformed or non-positive size, or ``HxW`` for a
        square kind.
    """
    if size is None:
        if name not in imagenet.DEFAULT_SIZES:
            raise ValueError(f"{name} needs --size N >= 1 (output side in pixels), got None")
        return imagenet.DEFAULT_SIZES[name]
    if isinstance(size, str):
        m = re.fullmatch(r"\s*(\d+)\s*(?:[xX]\s*(\d+)\s*)?", size)
        if not m:
            raise ValueError(f"--size must be N or HxW, got {size!r}")
        hw = (int(m.group(1)), int(m.group(2) or m.group(1)))
        rect = m.group(2) is not None
    elif isinstance(size, (tuple, list)):
        hw, rect = (int(size[0]), int(size[1])), True
    else:
        hw, rect = (int(size), int(size)), False
    if min(hw) < 1:
        raise ValueError(f"{name} needs --size N >= 1 (output side in pixels), got {size}")
    if rect and hw[0] != hw[1] and name not in ("mini_imagenet", "fg_imagenet"):
        raise ValueError(f"{name}: --size must be one side N (shorter side + centre crop), "
                         f"got {size!r}")
    return hw


def prepare(name: str, source: str | os.PathLike, data_dir: str | os.PathLike, *,
            size: int | str | Sequence[int] | None = None, workers: int | None = None,
            dataset_name: str | None = None, split: str = "balanced",
            classes: str | os.PathLike | None = None,
            overwrite: bool = False, progress: bool = True,
            batch_size: int = 1024) -> Path:
    """Converts a source dataset into clj's format under ``data_dir``.

    Args:
      name: one of :data:`PREPARERS`.
      source: file or folder in the layout the source expects (module doc).
      data_dir: output root; the dataset goes to ``<data_dir>/clj/<stored name>``.
      size: output side for ``imagefolder`` (required there) and the
        ImageNet family (:func:`parse_size`; default per kind); ignored
        elsewhere.
      workers: decoding processes for the image preparers (default: CPU
        count; ``<= 1`` decodes in this process).
      dataset_name: stored name for the image preparers (default: the source
        folder's name for ``imagefolder``, the preparer's name for the
        ImageNet family); the other sources store ``name`` (``emnist/<split>``).
      split: EMNIST split (see ``idx.EMNIST_SPLITS``).
      classes: class-list file (:func:`clj.data.imagenet.read_class_list`):
        the classes and their order for ``imagenet100`` (default: PyCIL's
        list) and ``imagenet1k`` (default: sorted folders); SER's label map
        for ``mini_imagenet`` / ``fg_imagenet`` (required).
      overwrite: replace an existing prepared dataset.
      progress: show a tqdm progress bar.
      batch_size: images decoded per write.

    Returns:
      The prepared folder.

    Raises:
      ValueError: unknown ``name``, bad ``size``/``workers``, a malformed
        class list, an undecodable image.
      SourceLayoutError (a FileNotFoundError): the source is not where or how
        it was expected; the message names the expected layout.
      FileExistsError: already prepared and ``overwrite`` is False.
    """
    if name not in PREPARERS:
        raise ValueError(f"unknown dataset {name!r}; valid: {', '.join(PREPARERS)}")
    src = Path(source).expanduser()
    if not src.exists():
        raise SourceLayoutError(f"--source {src} does not exist")
    if name == "imagefolder" or name in imagenet.IMAGENET_KINDS:
        hw = parse_size(name, size)
        if workers is not None and int(workers) < 0:
            raise ValueError(f"--workers must be >= 0, got {workers}")
        n_workers = os.cpu_count() or 1 if workers is None else int(workers)
        if name == "imagefolder":
            return _prepare_imagefolder(src, Path(data_dir), hw[0], n_workers,
                                        dataset_name or _default_name(src), overwrite,
                                        progress, batch_size)
        return _prepare_imagenet(name, src, Path(data_dir), hw, n_workers,
                                 dataset_name or name, classes, overwrite, progress,
                                 batch_size)
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


def _class_file(kind: str, classes: str | os.PathLike | None) -> Path | None:
    if classes is not None:
        return Path(classes).expanduser()
    if kind == "imagenet100":
        return imagenet.IMAGENET100_PYCIL
    if kind in ("mini_imagenet", "fg_imagenet"):
        yml = "seq_miniimg.yml" if kind == "mini_imagenet" else "seq_imagenet_FG.yml"
        raise ValueError(f"{kind} needs --classes FILE: SER's label map, data/{yml} of "
                         f"https://github.com/perceivelab/SER")
    return None


def _prepare_imagenet(kind: str, src: Path, data_dir: Path, hw: tuple[int, int], workers: int,
                      name: str, classes: str | os.PathLike | None, overwrite: bool,
                      progress: bool, batch_size: int) -> Path:
    class_file = _class_file(kind, classes)
    class_list = imagenet.read_class_list(class_file) if class_file is not None else None
    if kind == "tiny_imagenet":
        layout = imagenet.list_tiny_imagenet(src)
    elif kind in ("imagenet100", "imagenet1k"):
        layout = imagenet.list_imagenet(src, class_list, kind)
    else:
        assert class_list is not None
        layout = imagenet.list_ser(src, class_list, kind)
    ser = kind in ("mini_imagenet", "fg_imagenet")
    mode = "lanczos" if ser else "short"
    h, w = hw
    extras = {"saliency": (h, w, 1)} if ser else None
    info = {"kind": kind, "path": os.fspath(src), "size": [h, w],
            "resize": ("Lanczos to HxW, aspect ratio not kept (SER)" if ser else
                       "shorter side to size (bilinear, antialiased), centre crop"),
            "class_list": os.fspath(class_file) if class_file is not None else None,
            **layout.info}
    if ser:
        info["saliency"] = (layout.info["saliency"] + ", Lanczos to HxW, uint8 as decoded "
                            "(normalise to unit sum when used, as SER does)")
    writer = records.DatasetWriter(records.prepared_dir(data_dir, name), name, (h, w, 3),
                                   len(layout.classes), layout.classes, overwrite=overwrite,
                                   source=info, extras=extras)
    try:
        with _progress(len(layout.train) + len(layout.test), f"prepare {name}",
                       progress) as bar:
            for split_name, items in (("train", layout.train), ("test", layout.test)):
                labels = np.array([lab for _, lab, _ in items], np.int64)
                n_buf = min(batch_size, len(items))
                buf = np.empty((n_buf, h, w, 3), np.uint8)
                sal = np.empty((n_buf, h, w, 1), np.uint8) if ser else None
                lo = 0
                for i, (img, m) in enumerate(imagenet.decode_items(items, mode, hw, workers)):
                    buf[i - lo] = img
                    if sal is not None:
                        sal[i - lo] = m
                    if i - lo + 1 == n_buf or i + 1 == len(items):
                        k = i - lo + 1
                        writer.write(split_name, buf[:k], labels[lo: i + 1],
                                     {"saliency": sal[:k]} if sal is not None else None)
                        bar.update(k)
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
    p.add_argument("--size", default=None,
                   help="image preparers: output side N (shorter side resize + centre crop; "
                        "imagefolder needs it, tiny_imagenet 64, imagenet100/imagenet1k 256 "
                        "by default) or HxW for mini_imagenet/fg_imagenet (default 288x384)")
    p.add_argument("--workers", type=int, default=None,
                   help="image preparers: decoding processes (default: CPU count)")
    p.add_argument("--name", dest="dataset_name", default=None,
                   help="image preparers: stored dataset name (default: the preparer's "
                        "name; imagefolder: the source folder's name)")
    p.add_argument("--classes", default=None,
                   help="class list (one wnid per line) or SER's YAML label map: "
                        "imagenet100 (default: PyCIL's list), imagenet1k (default: sorted "
                        "folders), mini_imagenet/fg_imagenet (required)")
    p.add_argument("--split", default="balanced",
                   help=f"emnist split: {', '.join(idx.EMNIST_SPLITS)}")
    p.add_argument("--overwrite", action="store_true", help="replace a prepared dataset")
    p.add_argument("--no_progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    try:
        out = prepare(args.name, args.source, args.data_dir, size=args.size,
                      workers=args.workers, dataset_name=args.dataset_name,
                      split=args.split, classes=args.classes, overwrite=args.overwrite,
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
