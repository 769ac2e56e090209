"""The file layouts ``python -m clj.data.prepare`` reads whole splits from
(:mod:`clj.data.prepare` has the command and the layouts in its doc):

* CIFAR-10/100 python pickles, in their folder or their ``.tar.gz`` archive
  (:func:`load_cifar`);
* MNIST, Fashion-MNIST and EMNIST IDX files (:func:`load_idx_source`);
* SVHN's ``train_32x32.mat`` / ``test_32x32.mat`` (:func:`load_svhn`);

each into numpy arrays held in memory, and :class:`SourceLayoutError`, what
every reader of a source (image folders too, :mod:`clj.data.imagefolder`)
raises when the source is not where or how it was expected.
"""

from __future__ import annotations

import pickle
import tarfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from clj.data import idx

__all__ = [
    "ArraySplits",
    "FASHION_MNIST_CLASSES",
    "SourceLayoutError",
    "load_cifar",
    "load_idx_source",
    "load_svhn",
]

FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot"]


class SourceLayoutError(FileNotFoundError):
    """The source folder does not have the expected layout."""


ArraySplits = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""``(x_train, y_train, x_test, y_test)``: images ``uint8 [N, H, W(, C)]``,
labels integer ``[N]``."""


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


def load_cifar(kind: str, source: Path) -> tuple[ArraySplits, int, list[str] | None]:
    """Reads CIFAR-10 or CIFAR-100 (fine labels) from its python pickles.

    Args:
      kind: ``"cifar10"`` or ``"cifar100"``.
      source: ``cifar-10-batches-py/`` / ``cifar-100-python/``, a folder
        holding it or its ``.tar.gz`` archive, or the archive.

    Returns:
      ``((x_train uint8 [N, 32, 32, 3], y_train int64 [N], x_test, y_test),
      num_classes, class_names or None)``.

    Raises:
      SourceLayoutError: no folder or archive found, a missing member or key.
      ValueError: a batch of the wrong shape, images and labels that differ
        in number.
    """
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


def load_idx_source(name: str, source: Path, split: str
                    ) -> tuple[ArraySplits, int, list[str] | None, str]:
    """Reads MNIST, Fashion-MNIST or an EMNIST split from IDX files.

    Args:
      name: ``"mnist"``, ``"fashion_mnist"`` or ``"emnist"``.
      source: the folder of the IDX files (``[.gz]``), or one holding them in
        a usual sub-folder (``mnist/``, ``MNIST/raw/``, ``gzip/`` ...).
      split: the EMNIST split (:data:`clj.data.idx.EMNIST_SPLITS`); ignored
        for the others.

    Returns:
      ``((x_train uint8 [N, 28, 28], y_train [N], x_test, y_test),
      num_classes, class_names or None, stored name)``; the stored name is
      ``emnist/<split>`` for EMNIST (images upright, labels from 0), else
      ``name``.

    Raises:
      ValueError: an unknown EMNIST split, a malformed IDX file.
      SourceLayoutError: no folder holds the four files.
    """
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


def load_svhn(source: Path) -> tuple[ArraySplits, int, list[str]]:
    """Reads SVHN's cropped digits from ``train_32x32.mat`` / ``test_32x32.mat``.

    Returns:
      ``((x_train uint8 [N, 32, 32, 3], y_train int64 [N], x_test, y_test),
      10, class_names)``; label 10 (digit 0) becomes 0.

    Raises:
      SourceLayoutError: a ``.mat`` file missing from ``source``.
    """
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

