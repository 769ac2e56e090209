"""The ImageNet-family layouts of ``python -m clj.data.prepare``: Tiny-ImageNet,
ImageNet-100, ImageNet-1k, and SER's Mini-ImageNet / FG-ImageNet with their
saliency maps.

Each ``list_*`` function reads a source folder into a :class:`Layout` (class
names, and per split the ``(image, label, saliency map or None)`` items, in
stored order), checking the layout and naming the missing path in a one-line
:class:`~clj.data.source_layouts.SourceLayoutError`; :func:`decode_items`
decodes the items in worker processes to fixed-size uint8 arrays.

Class orders (the stored label of a class):

* ``tiny_imagenet``: the line order of ``wnids.txt``. Mammoth's ``seq-tinyimg``
  reads pre-made arrays, but its ``CLASS_NAMES`` list (egyptian_cat, reel,
  volleyball, ...) follows ``wnids.txt`` line by line, so its label ``k`` is
  line ``k`` of ``wnids.txt``; the sorted order of the plain ``imagefolder``
  preparer differs.
* ``imagenet100``: the line order of the class-list file (default
  :data:`IMAGENET100_PYCIL`, PyCIL's ImageNet-Subset, sorted, which is the
  order torchvision's ``ImageFolder`` gives PyCIL and MEMO).
* ``imagenet1k``: the sorted ``train/`` folder names (ILSVRC-2012 ids 1..1000
  follow another order; they are only used to read flat validation labels),
  or a class-list file.
* ``mini_imagenet``, ``fg_imagenet``: SER's label maps (``data/seq_miniimg.yml``,
  ``data/seq_imagenet_FG.yml`` of perceivelab/SER), passed with ``--classes``.
"""

from __future__ import annotations

import csv
import dataclasses
import multiprocessing
import os
import re
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from clj.data.imagefolder import IMAGE_EXTENSIONS, resize_shorter_center_crop
from clj.data.source_layouts import SourceLayoutError

__all__ = [
    "DEFAULT_SIZES",
    "IMAGENET100_PYCIL",
    "IMAGENET_KINDS",
    "SER_SIZE",
    "Layout",
    "decode_example",
    "decode_items",
    "list_imagenet",
    "list_ser",
    "list_tiny_imagenet",
    "read_class_list",
]

IMAGENET_KINDS = ("tiny_imagenet", "imagenet100", "imagenet1k", "mini_imagenet", "fg_imagenet")
"""The preparers of this module (also the stored dataset names)."""

SER_SIZE = (288, 384)
"""``(H, W)`` SER's loaders resize images and saliency maps to (Lanczos, aspect
ratio not kept; ``INPUT_SIZE`` / ``TARGET_SIZE`` of its ``seq_miniimg.py`` and
``seq_imagenet100.py``)."""

DEFAULT_SIZES: dict[str, tuple[int, int]] = {
    "tiny_imagenet": (64, 64),      # native; Mammoth pads by 4 and crops 64
    "imagenet100": (256, 256),      # PyCIL: Resize(256) + CenterCrop(224) to test; room for crops
    "imagenet1k": (256, 256),
    "mini_imagenet": SER_SIZE,
    "fg_imagenet": SER_SIZE,
}
"""Stored ``(H, W)`` of each kind unless ``--size`` says otherwise."""

IMAGENET100_PYCIL = Path(__file__).resolve().parent / "lists" / "imagenet100_pycil.txt"
"""PyCIL's ImageNet-100 class list (one wnid per line, sorted; see the file's
header for its provenance)."""

Item = tuple[Path, int, "Path | None"]


@dataclasses.dataclass
class Layout:
    """A source read into lists.

    Attributes:
      classes: class names (wnids); label ``k`` is ``classes[k]``.
      train, test: ``(image path, label, saliency-map path or None)`` in the
        order they are stored.
      info: what to record in ``metadata.json``'s ``source`` (class order,
        where the validation labels came from, ...).
    """

    classes: list[str]
    train: list[Item]
    test: list[Item]
    info: dict[str, Any]


# --------------------------------------------------------------------------
# Class lists
# --------------------------------------------------------------------------

_ENTRY = re.compile(r"""^\s*['"]?([^'":\s]+)['"]?\s*:\s*(-?\d+)\s*(#.*)?$""")
_GROUP = re.compile(r"""^\s*['"]?[^'":]+['"]?\s*:\s*(#.*)?$""")


def read_class_list(path: str | os.PathLike) -> list[str]:
    """Reads a class order: a text file with one class name (wnid) per line,
    or one of SER's YAML label maps.

    Text: blank lines and ``#`` comments are skipped; the first
    whitespace-separated token of a line is the class, line order is label
    order. YAML (``.yml``/``.yaml``): ``wnid: label`` entries, flat (SER's
    ``seq_miniimg.yml``) or under group keys (``seq_imagenet_FG.yml``'s
    ``'0':`` ... blocks); classes are returned by label.

    Returns:
      The class names, label ``k`` at index ``k``.

    Raises:
      SourceLayoutError: the file is missing.
      ValueError: a malformed line, a repeated class, labels that are not
        exactly ``0..n-1`` (the message names the file).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise SourceLayoutError(f"class list {p} does not exist")
    lines = p.read_text().splitlines()
    if p.suffix.lower() in (".yml", ".yaml"):
        labels: dict[str, int] = {}
        for no, line in enumerate(lines, 1):
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            m = _ENTRY.match(line)
            if m:
                if m.group(1) in labels:
                    raise ValueError(f"{p}:{no}: class {m.group(1)} listed twice")
                labels[m.group(1)] = int(m.group(2))
            elif not _GROUP.match(line):
                raise ValueError(f"{p}:{no}: expected '<wnid>: <label>' or a group key, got "
                                 f"{line.strip()[:60]!r}")
        if sorted(labels.values()) != list(range(len(labels))):
            raise ValueError(f"{p}: labels must be 0..{len(labels) - 1}, each once")
        return sorted(labels, key=labels.__getitem__)
    classes: list[str] = []
    for line in lines:
        tok = line.split("#", 1)[0].split()
        if tok:
            classes.append(tok[0])
    if not classes:
        raise ValueError(f"{p}: no class names (one per line expected)")
    dup = sorted({c for c in classes if classes.count(c) > 1})
    if dup:
        raise ValueError(f"{p}: class {dup[0]} listed twice")
    return classes


def _images(d: Path, exact_suffix: str | None = None) -> list[Path]:
    if exact_suffix is not None:
        return sorted(p for p in d.iterdir() if p.suffix == exact_suffix and p.is_file())
    return sorted(p for p in d.iterdir()
                  if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def _need_dir(d: Path, what: str) -> None:
    if not d.is_dir():
        raise SourceLayoutError(f"{what}: missing folder {d}")


def _class_images(d: Path, what: str, exact_suffix: str | None = None) -> list[Path]:
    _need_dir(d, what)
    files = _images(d, exact_suffix)
    if not files:
        raise SourceLayoutError(f"{what}: {d} holds no images")
    return files


# --------------------------------------------------------------------------
# Tiny-ImageNet
# --------------------------------------------------------------------------


def list_tiny_imagenet(source: Path) -> Layout:
    """Lists ``tiny-imagenet-200/``: ``wnids.txt``, ``train/<wnid>/images/*``,
    ``val/images/*`` with ``val/val_annotations.txt`` (file, wnid, box).

    ``source`` is the folder itself or one holding ``tiny-imagenet-200/``.
    Labels follow ``wnids.txt``; train images are sorted by file name per
    class, validation images by (label, file name). The unlabelled ``test/``
    is not read.

    Raises:
      SourceLayoutError: a missing file or folder, an annotation naming a
        class not in ``wnids.txt`` or a missing image.
    """
    root = source
    if not (root / "wnids.txt").is_file() and (root / "tiny-imagenet-200" / "wnids.txt").is_file():
        root = root / "tiny-imagenet-200"
    wnids = root / "wnids.txt"
    if not wnids.is_file():
        raise SourceLayoutError(
            f"tiny_imagenet: missing {wnids}; expected tiny-imagenet-200/ with wnids.txt, "
            f"train/<wnid>/images/*.JPEG, val/images/*.JPEG and val/val_annotations.txt")
    classes = read_class_list(wnids)
    index = {c: i for i, c in enumerate(classes)}
    train: list[Item] = []
    for c in classes:
        train += [(p, index[c], None) for p in
                  _class_images(root / "train" / c / "images", "tiny_imagenet")]
    ann = root / "val" / "val_annotations.txt"
    if not ann.is_file():
        raise SourceLayoutError(f"tiny_imagenet: missing {ann} (file \\t wnid \\t box per line)")
    test: list[Item] = []
    for no, line in enumerate(ann.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2 or parts[1] not in index:
            raise SourceLayoutError(f"tiny_imagenet: {ann}:{no}: expected '<file>\\t<wnid of "
                                    f"wnids.txt>\\t...', got {line[:80]!r}")
        p = root / "val" / "images" / parts[0]
        if not p.is_file():
            raise SourceLayoutError(f"tiny_imagenet: {ann}:{no} names {p}, which does not exist")
        test.append((p, index[parts[1]], None))
    test.sort(key=lambda t: (t[1], t[0]))
    return Layout(classes, train, test,
                  {"class_order": f"line order of {wnids}", "test_split": "val"})


# --------------------------------------------------------------------------
# ImageNet-1k / ImageNet-100
# --------------------------------------------------------------------------

_VAL_NAME = re.compile(r"ILSVRC2012_val_(\d{8})")


def _first_file(cands: Sequence[Path]) -> Path | None:
    return next((p for p in cands if p.is_file()), None)


def _flat_val_labels(root: Path, what: str) -> tuple[dict[str, str], str]:
    """``{val file stem: wnid}`` for a flat ``val/``, from Kaggle's
    ``LOC_val_solution.csv`` or the devkit's ground truth + ``meta.mat``."""
    dirs = [root, root.parent, root / "val", root / "ILSVRC2012_devkit_t12" / "data",
            root / "devkit" / "data", root.parent / "ILSVRC2012_devkit_t12" / "data"]
    csv_file = _first_file([d / "LOC_val_solution.csv" for d in dirs])
    if csv_file is not None:
        out: dict[str, str] = {}
        with open(csv_file, newline="") as f:
            for no, row in enumerate(csv.reader(f), 1):
                if no == 1 and row and row[0] == "ImageId":
                    continue
                if len(row) < 2 or not row[1].split():
                    raise SourceLayoutError(f"{what}: {csv_file}:{no}: expected "
                                            f"'ImageId,<wnid> <box> ...', got {','.join(row)[:80]!r}")
                out[row[0]] = row[1].split()[0]
        return out, os.fspath(csv_file)
    gt = _first_file([d / "ILSVRC2012_validation_ground_truth.txt" for d in dirs])
    meta = _first_file([d / "meta.mat" for d in dirs])
    if gt is None or meta is None:
        raise SourceLayoutError(
            f"{what}: {root / 'val'} holds images but no class folders, and no validation "
            f"labels were found: expected LOC_val_solution.csv, or "
            f"ILSVRC2012_validation_ground_truth.txt with meta.mat (the devkit's data/), in "
            f"{root} or {root / 'ILSVRC2012_devkit_t12' / 'data'}")
    from scipy.io import loadmat

    synsets = loadmat(meta)["synsets"].reshape(-1)
    id_to_wnid = {}
    for s in synsets:
        ilsvrc_id = int(np.asarray(s["ILSVRC2012_ID"]).reshape(-1)[0])
        id_to_wnid[ilsvrc_id] = str(np.asarray(s["WNID"]).reshape(-1)[0])
    out = {}
    for no, line in enumerate(gt.read_text().split(), 1):
        if int(line) not in id_to_wnid:
            raise SourceLayoutError(f"{what}: {gt}:{no}: ILSVRC2012 id {line} is not in {meta}")
        out[f"ILSVRC2012_val_{no:08d}"] = id_to_wnid[int(line)]
    return out, f"{gt} (1-based ILSVRC2012 ids) + {meta}"


def list_imagenet(source: Path, classes: Sequence[str] | None, what: str) -> Layout:
    """Lists an ImageNet tree: ``train/<wnid>/*`` and ``val/<wnid>/*``, or a
    flat ``val/*.JPEG`` labelled by ``LOC_val_solution.csv`` or by the
    devkit's ``ILSVRC2012_validation_ground_truth.txt`` + ``meta.mat``.

    Args:
      source: the root holding ``train/`` and ``val/``.
      classes: the classes to take, label = position (ImageNet-100's list);
        None takes every ``train/`` sub-folder, sorted.
      what: the preparer's name, for messages.

    Returns:
      The layout; images sorted by file name per class, classes in label
      order. Validation images of classes not in ``classes`` are skipped.

    Raises:
      SourceLayoutError: missing ``train/`` / ``val/``, a listed class with no
        ``train/<wnid>`` (or, class-per-folder, ``val/<wnid>``) folder, a flat
        validation image without a label.
    """
    train_dir, val_dir = source / "train", source / "val"
    _need_dir(train_dir, f"{what} (expected {source}/train/<wnid>/*.JPEG and "
                         f"{source}/val/<wnid>/*.JPEG)")
    _need_dir(val_dir, f"{what} (expected {source}/val/<wnid>/*.JPEG, or a flat val/ "
                       f"with its labels)")
    if classes is None:
        classes = sorted(d.name for d in train_dir.iterdir() if d.is_dir())
        if not classes:
            raise SourceLayoutError(f"{what}: {train_dir} has no class folders")
        order = f"sorted folder names of {train_dir}"
    else:
        order = "the class list"
    classes = list(classes)
    index = {c: i for i, c in enumerate(classes)}
    train: list[Item] = []
    for c in classes:
        train += [(p, index[c], None) for p in _class_images(train_dir / c, what)]
    subdirs = {d.name for d in val_dir.iterdir() if d.is_dir()}
    test: list[Item] = []
    if subdirs:
        for c in classes:
            test += [(p, index[c], None) for p in _class_images(val_dir / c, what)]
        val_labels = f"class folders of {val_dir}"
    else:
        labels, val_labels = _flat_val_labels(source, what)
        for p in _images(val_dir):
            m = _VAL_NAME.search(p.stem)
            key = p.stem if p.stem in labels else (m.group(0) if m else p.stem)
            if key not in labels:
                raise SourceLayoutError(f"{what}: no label for {p} in {val_labels}")
            if labels[key] in index:
                test.append((p, index[labels[key]], None))
        if not test:
            raise SourceLayoutError(f"{what}: {val_dir} holds no image of the listed classes")
        test.sort(key=lambda t: (t[1], t[0]))
    return Layout(classes, train, test, {"class_order": order, "test_split": "val",
                                         "val_labels": val_labels})


# --------------------------------------------------------------------------
# SER's Mini-ImageNet / FG-ImageNet
# --------------------------------------------------------------------------


def list_ser(source: Path, classes: Sequence[str], what: str) -> Layout:
    """Lists SER's layout: ``images/{train,val}/<wnid>/*.JPEG`` and, for each
    image, its grey saliency map ``annotations/{train,val}/<wnid>/<stem>.png``
    (SER's path rewrite: ``images`` -> ``annotations``, ``JPEG`` -> ``png``).

    Only ``.JPEG`` files are taken (SER globs ``*.JPEG``), sorted by name per
    class (SER keeps the file system's order; the stream is shuffled anyway).
    ``val`` is the test split, as in SER.

    Raises:
      SourceLayoutError: a missing ``images/<split>/<wnid>`` folder or a
        missing saliency map (the message names the path).
    """
    if not (source / "images").is_dir():
        raise SourceLayoutError(
            f"{what}: missing folder {source / 'images'}; expected "
            f"{source}/images/{{train,val}}/<wnid>/*.JPEG and "
            f"{source}/annotations/{{train,val}}/<wnid>/*.png")
    out: dict[str, list[Item]] = {}
    for split in ("train", "val"):
        items: list[Item] = []
        for label, c in enumerate(classes):
            for p in _class_images(source / "images" / split / c, what, exact_suffix=".JPEG"):
                sal = source / "annotations" / split / c / (p.stem + ".png")
                if not sal.is_file():
                    raise SourceLayoutError(f"{what}: missing saliency map {sal} of {p}")
                items.append((p, label, sal))
        out[split] = items
    return Layout(list(classes), out["train"], out["val"],
                  {"class_order": "the label map", "test_split": "val",
                   "saliency": "annotations/<split>/<wnid>/<stem>.png, grey"})


# --------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------


def decode_example(args: tuple[str, str | None, str, int, int]
                   ) -> tuple[np.ndarray, np.ndarray | None]:
    """Worker: decodes one example (top level, so it pickles).

    Args:
      args: ``(image path, saliency path or None, mode, H, W)``. ``mode``
        ``"short"`` (``H == W``): RGB, shorter side resized to ``H``
        (bilinear, antialiased; JPEGs decoded at a reduced DCT scale when far
        larger), centre crop (:func:`~clj.data.imagefolder.resize_shorter_center_crop`).
        ``"lanczos"``: RGB resized to exactly ``W x H`` with Lanczos,
        aspect ratio not kept (SER's transform); the saliency map, read as
        grey (``L``), likewise.

    Returns:
      ``(uint8 [H, W, 3], uint8 [H, W, 1] or None)``.

    Raises:
      ValueError: a file that cannot be decoded (the message names it).
    """
    from PIL import Image

    path, sal_path, mode, h, w = args
    current = path
    try:
        with Image.open(path) as img:
            if mode == "short":
                if img.format == "JPEG":
                    iw, ih = img.size
                    s = h / min(iw, ih)
                    img.draft("RGB", (max(h, int(iw * s)), max(h, int(ih * s))))
                x = resize_shorter_center_crop(img, h)
            else:
                x = np.asarray(img.convert("RGB").resize((w, h), Image.LANCZOS), np.uint8)
        sal = None
        if sal_path is not None:
            current = sal_path
            with Image.open(sal_path) as m:
                sal = np.asarray(m.convert("L").resize((w, h), Image.LANCZOS),
                                 np.uint8)[..., None]
        return x, sal
    except Exception as e:  # one line naming the file
        raise ValueError(f"cannot decode {current}: {type(e).__name__}: {e}") from None


def decode_items(items: Sequence[Item], mode: str, shape: tuple[int, int], workers: int
                 ) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Decodes ``items`` in order (:func:`decode_example`) in ``workers``
    spawned processes (``<= 1``: in this one).

    Raises:
      ValueError: an image or map that cannot be decoded.
    """
    args = [(os.fspath(p), None if s is None else os.fspath(s), mode, shape[0], shape[1])
            for p, _, s in items]
    if workers <= 1:
        yield from map(decode_example, args)
        return
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers) as pool:
        yield from pool.imap(decode_example, args, chunksize=16)
