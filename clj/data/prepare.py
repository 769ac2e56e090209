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
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import pickle
import re
import sys
import tarfile
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from clj.data import idx, records

__all__ = [
    "PREPARERS",
    "IMAGE_EXTENSIONS",
    "prepare",
    "prepare_command",
    "resize_shorter_center_crop",
    "main",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff",
                    ".ppm", ".pgm")
"""File suffixes (case-insensitive) read as images by ``imagefolder``."""

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot"]


class SourceLayoutError(FileNotFoundError):
    """The source folder does not have the expected layout."""


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
# Array sources (whole splits fit in memory)
# --------------------------------------------------------------------------

ArraySplits = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _cifar_files(kind: str, source: Path) -> Callable[[str], Any]:
    """Returns a function unpickling a member of the CIFAR archive/folder."""
    folder = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}[kind]
    archive = {"cifar10": "cifar-10-python.tar.gz", "cifar100": "cifar-100-python.tar.gz"}[kind]
    probe = "data_batch_1" if kind == "cifar10" else "train"
    for d in (source, source / folder):
        if (d / probe).is_file():
            return lambda member, d=d: _unpickle_file(d / member)
    for a in (source, source / archive):
        if a.is_file() and a.name.endswith((".tar.gz", ".tgz", ".tar")):
            return _tar_reader(a, folder)
    raise SourceLayoutError(
        f"{kind}: no {folder}/ folder (with {probe}) or {archive} found at {source}; "
        f"expected --source to be {folder}/, a folder holding it, or the {archive} "
        f"archive (the python version from https://www.cs.toronto.edu/~kriz/cifar.html)")


def _unpickle_file(path: Path) -> Any:
    if not path.is_file():
        raise SourceLayoutError(f"missing {path}")
    with open(path, "rb") as f:
        return pickle.load(f, encoding="bytes")


def _tar_reader(archive: Path, folder: str) -> Callable[[str], Any]:
    """Reads every file of ``folder/`` in the archive in one pass (a .tar.gz
    cannot seek), then unpickles members on request."""
    contents: dict[str, bytes] = {}
    with tarfile.open(archive) as tf:
        for m in tf:
            if m.isfile() and m.name.startswith(folder + "/"):
                f = tf.extractfile(m)
                assert f is not None
                contents[m.name[len(folder) + 1:]] = f.read()

    def read(member: str) -> Any:
        if member not in contents:
            raise SourceLayoutError(f"{archive} has no member {folder}/{member}; found "
                                    f"{', '.join(sorted(contents)) or 'nothing'} in {folder}/")
        return pickle.loads(contents[member], encoding="bytes")

    return read


def _cifar_batch(d: dict, label_key: bytes, what: str) -> tuple[np.ndarray, np.ndarray]:
    if b"data" not in d or label_key not in d:
        raise SourceLayoutError(f"{what}: expected keys b'data' and {label_key!r}, "
                                f"found {sorted(d)}")
    x = np.asarray(d[b"data"], dtype=np.uint8)
    if x.ndim != 2 or x.shape[1] != 3072:
        raise ValueError(f"{what}: b'data' has shape {x.shape}; expected [N, 3072]")
    x = x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # CHW rows -> NHWC
    y = np.asarray(d[label_key], dtype=np.int64)
    if len(y) != len(x):
        raise ValueError(f"{what}: {len(x)} images but {len(y)} labels")
    return x, y


def _names(meta: dict, key: bytes) -> list[str] | None:
    names = meta.get(key)
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names] if names else None


def _load_cifar(kind: str, source: Path) -> tuple[ArraySplits, int, list[str] | None]:
    read = _cifar_files(kind, source)
    if kind == "cifar10":
        parts = [_cifar_batch(read(f"data_batch_{i}"), b"labels", f"data_batch_{i}")
                 for i in range(1, 6)]
        x_tr = np.concatenate([p[0] for p in parts])
        y_tr = np.concatenate([p[1] for p in parts])
        x_te, y_te = _cifar_batch(read("test_batch"), b"labels", "test_batch")
        names = _names(read("batches.meta"), b"label_names")
        return (x_tr, y_tr, x_te, y_te), 10, names
    x_tr, y_tr = _cifar_batch(read("train"), b"fine_labels", "train")
    x_te, y_te = _cifar_batch(read("test"), b"fine_labels", "test")
    names = _names(read("meta"), b"fine_label_names")
    return (x_tr, y_tr, x_te, y_te), 100, names


def _load_idx_source(name: str, source: Path, split: str
                     ) -> tuple[ArraySplits, int, list[str] | None, str]:
    if name == "emnist":
        if split not in idx.EMNIST_SPLITS:
            raise ValueError(f"unknown EMNIST split {split!r}; valid: "
                             f"{sorted(idx.EMNIST_SPLITS)}")
        prefix = f"emnist-{split}-"
        dirs = [source, source / "emnist", source / "gzip", source / "emnist" / "gzip"]
    else:
        prefix = ""
        sub = {"mnist": ["mnist", "MNIST/raw"],
               "fashion_mnist": ["fashion_mnist", "fashion-mnist", "FashionMNIST/raw"]}[name]
        dirs = [source] + [source / s for s in sub]
    files = idx.find_idx_set(dirs, prefix=prefix)
    if files is None:
        stems = (["train-images-idx3", "train-labels-idx1", "test-images-idx3",
                  "test-labels-idx1"] if prefix else
                 ["train-images-idx3", "train-labels-idx1", "t10k-images-idx3",
                  "t10k-labels-idx1"])
        raise SourceLayoutError(
            f"{name}: no folder holds all of "
            f"{', '.join(f'{prefix}{s}-ubyte[.gz]' for s in stems)} "
            f"(looked in: {', '.join(map(str, dirs))})")
    arrays = idx.load_idx_set(files)
    if name == "emnist":
        arrays, num_classes = idx.emnist_fix(split, arrays)
        return arrays, num_classes, None, f"emnist/{split}"
    names = FASHION_MNIST_CLASSES if name == "fashion_mnist" else [str(i) for i in range(10)]
    return arrays, 10, names, name


def _load_svhn(source: Path) -> tuple[ArraySplits, int, list[str]]:
    from scipy.io import loadmat

    out = []
    for split in ("train", "test"):
        f = source / f"{split}_32x32.mat"
        if not f.is_file():
            raise SourceLayoutError(f"svhn_cropped: missing {f}; expected --source to hold "
                                    f"train_32x32.mat and test_32x32.mat")
        m = loadmat(f)
        x = np.ascontiguousarray(np.asarray(m["X"], np.uint8).transpose(3, 0, 1, 2))
        y = np.asarray(m["y"], np.int64).reshape(-1) % 10  # label 10 is digit 0
        out += [x, y]
    return tuple(out), 10, [str(i) for i in range(10)]  # type: ignore[return-value]


# --------------------------------------------------------------------------
# Image folders
# --------------------------------------------------------------------------


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file()


def _images_under(d: Path) -> list[Path]:
    return sorted(p for p in d.rglob("*") if _is_image(p))


def list_imagefolder(source: Path) -> tuple[list[str], list[tuple[Path, int]],
                                            list[tuple[Path, int]], str]:
    """Lists an image folder: classes, (file, label) of train and eval split.

    Args:
      source: root holding ``train/<class>/...`` and ``val/`` or ``test/``.

    Returns:
      ``(class_names, train_items, eval_items, eval_folder_name)``; items are
      sorted by class then path; labels index ``class_names`` (sorted
      ``train/`` sub-folder names).

    Raises:
      SourceLayoutError: missing ``train/`` or evaluation folder, classes
        without images, evaluation images of unknown classes.
    """
    train = source / "train"
    if not train.is_dir():
        raise SourceLayoutError(
            f"imagefolder: no train/ folder in {source}; expected {source}/train/<class>/"
            f"<image> and {source}/val/<class>/<image> (or test/; or Tiny-ImageNet's "
            f"val/images/ + val/val_annotations.txt)")
    classes = sorted(d.name for d in train.iterdir() if d.is_dir())
    if not classes:
        raise SourceLayoutError(f"imagefolder: {train} has no class sub-folders; expected "
                                f"{train}/<class>/<image>")
    index = {c: i for i, c in enumerate(classes)}
    train_items: list[tuple[Path, int]] = []
    for c in classes:
        files = _images_under(train / c)
        if not files:
            raise SourceLayoutError(f"imagefolder: class folder {train / c} holds no images "
                                    f"({', '.join(IMAGE_EXTENSIONS)})")
        train_items += [(p, index[c]) for p in files]

    for sub in ("val", "test"):
        d = source / sub
        if not d.is_dir():
            continue
        ann = d / "val_annotations.txt"
        if ann.is_file():  # Tiny-ImageNet: val/images/<file>, file \t wnid \t box
            items = []
            for line_no, line in enumerate(ann.read_text().splitlines(), 1):
                if not line.strip():
                    continue
                parts = line.split("\t")
                if len(parts) < 2 or parts[1] not in index:
                    raise SourceLayoutError(
                        f"imagefolder: {ann}:{line_no}: expected '<file>\\t<class>\\t...' "
                        f"with a class of train/, got {line[:80]!r}")
                p = d / "images" / parts[0]
                if not p.is_file():
                    raise SourceLayoutError(f"imagefolder: {ann}:{line_no} names {p}, "
                                            f"which does not exist")
                items.append((p, index[parts[1]]))
            return classes, train_items, sorted(items, key=lambda t: (t[1], t[0])), sub
        subdirs = sorted(x.name for x in d.iterdir() if x.is_dir())
        unknown = [s for s in subdirs if s not in index and _images_under(d / s)]
        if subdirs and not unknown and any(s in index for s in subdirs):
            items = [(p, index[s]) for s in subdirs if s in index
                     for p in _images_under(d / s)]
            if items:
                return classes, train_items, items, sub
        if unknown:
            raise SourceLayoutError(
                f"imagefolder: {d} has class folders not in train/: "
                f"{', '.join(unknown[:5])}{' ...' if len(unknown) > 5 else ''}")
        if sub == "val":
            raise SourceLayoutError(
                f"imagefolder: {d} is neither class-per-folder ({d}/<class>/<image> with "
                f"the classes of train/) nor Tiny-ImageNet's layout ({d}/images/ + "
                f"{d}/val_annotations.txt)")
    raise SourceLayoutError(
        f"imagefolder: no labelled evaluation split in {source}; expected "
        f"{source}/val/<class>/<image> or {source}/test/<class>/<image> (or "
        f"Tiny-ImageNet's val/images/ + val/val_annotations.txt)")


def resize_shorter_center_crop(image: Any, size: int) -> np.ndarray:
    """Resizes a PIL image so its shorter side is ``size``, then centre-crops.

    The longer side becomes ``round(long * size / short)``; resampling is PIL's
    bilinear filter, antialiased when shrinking; an image whose shorter side
    already equals ``size`` is not resampled. The crop keeps rows/columns
    ``[(L - size) // 2, (L - size) // 2 + size)`` of the resized side ``L``.

    Args:
      image: a PIL image (any mode; converted to RGB).
      size: output side in pixels (>= 1).

    Returns:
      ``uint8 [size, size, 3]``.
    """
    from PIL import Image

    if image.mode != "RGB":
        image = image.convert("RGB")
    w, h = image.size
    short = min(w, h)
    new_w = max(size, int(round(w * size / short)))
    new_h = max(size, int(round(h * size / short)))
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), Image.BILINEAR)
    left = (new_w - size) // 2
    top = (new_h - size) // 2
    image = image.crop((left, top, left + size, top + size))
    return np.asarray(image, dtype=np.uint8)


def _decode(args: tuple[str, int]) -> np.ndarray:
    """Worker: file -> uint8 [size, size, 3] (top level, so it pickles)."""
    from PIL import Image

    path, size = args
    try:
        with Image.open(path) as img:
            if img.format == "JPEG":  # decode at a reduced DCT scale when far larger
                w, h = img.size
                s = size / min(w, h)
                img.draft("RGB", (max(size, int(w * s)), max(size, int(h * s))))
            return resize_shorter_center_crop(img, size)
    except Exception as e:  # one line naming the file
        raise ValueError(f"cannot decode {path}: {type(e).__name__}: {e}") from None


def _decode_stream(paths: Sequence[Path], size: int, workers: int
                   ) -> Iterator[np.ndarray]:
    args = [(os.fspath(p), size) for p in paths]
    if workers <= 1:
        yield from map(_decode, args)
        return
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers) as pool:
        yield from pool.imap(_decode, args, chunksize=16)


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
        arrays, num_classes, class_names = _load_cifar(name, src)
    elif name == "svhn_cropped":
        arrays, num_classes, class_names = _load_svhn(src)
    else:
        arrays, num_classes, class_names, stored = _load_idx_source(name, src, split)
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
                stream = _decode_stream([p for p, _ in items], size, workers)
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
