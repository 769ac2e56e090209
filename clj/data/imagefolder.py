"""Image folders (``python -m clj.data.prepare imagefolder``): a
class-per-folder tree listed into (file, label) pairs (:func:`list_imagefolder`)
and images decoded to fixed-size uint8 arrays (:func:`resize_shorter_center_crop`,
:func:`decode_image`, :func:`decode_stream`, which spreads the decoding over
worker processes).
"""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from clj.data.source_layouts import SourceLayoutError

__all__ = [
    "IMAGE_EXTENSIONS",
    "decode_image",
    "decode_stream",
    "list_imagefolder",
    "resize_shorter_center_crop",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff",
                    ".ppm", ".pgm")
"""File suffixes (case-insensitive) read as images by ``imagefolder``."""


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


def decode_image(args: tuple[str, int]) -> np.ndarray:
    """Worker: ``(file, size)`` -> ``uint8 [size, size, 3]``
    (:func:`resize_shorter_center_crop`; top level, so it pickles).

    Raises:
      ValueError: the file cannot be decoded (the message names it).
    """
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


def decode_stream(paths: Sequence[Path], size: int, workers: int
                  ) -> Iterator[np.ndarray]:
    """Decodes ``paths`` in order, each to ``uint8 [size, size, 3]``
    (:func:`decode_image`), in ``workers`` spawned processes (``<= 1``: in
    this one).

    Raises:
      ValueError: an image that cannot be decoded.
    """
    args = [(os.fspath(p), size) for p in paths]
    if workers <= 1:
        yield from map(decode_image, args)
        return
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(workers) as pool:
        yield from pool.imap(decode_image, args, chunksize=16)


