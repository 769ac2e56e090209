"""Tests for clj.data.prepare / clj.data.records: source layouts -> clj's format.

Every source is built by hand in its real on-disk layout in a tmp dir; nothing
is downloaded.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

from clj.data import dataset, load_dataset
from clj.data import prepare as prep
from clj.data.records import PreparedDataset, encode_records, decode_records, prepared_dir

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- builders

def _cifar_rows(rng, n):
    """Images as CIFAR stores them: [n, 3072] uint8, CHW row order; and NHWC."""
    chw = rng.integers(0, 256, size=(n, 3, 32, 32), dtype=np.uint8)
    return chw.reshape(n, 3072), chw.transpose(0, 2, 3, 1)


def _dump(path: Path, obj) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def make_cifar10(root: Path, per_batch=4, n_test=5, seed=0):
    """cifar-10-batches-py/ with data_batch_1..5, test_batch, batches.meta."""
    rng = np.random.default_rng(seed)
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    xs, ys = [], []
    for i in range(1, 6):
        rows, x = _cifar_rows(rng, per_batch)
        y = rng.integers(0, 10, per_batch).tolist()
        _dump(d / f"data_batch_{i}", {b"batch_label": f"training batch {i} of 5".encode(),
                                      b"labels": y, b"data": rows,
                                      b"filenames": [b"f.png"] * per_batch})
        xs.append(x)
        ys += y
    rows, x_te = _cifar_rows(rng, n_test)
    y_te = rng.integers(0, 10, n_test).tolist()
    _dump(d / "test_batch", {b"batch_label": b"testing batch 1 of 1", b"labels": y_te,
                             b"data": rows, b"filenames": [b"f.png"] * n_test})
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog",
             b"horse", b"ship", b"truck"]
    _dump(d / "batches.meta", {b"label_names": names, b"num_cases_per_batch": per_batch,
                               b"num_vis": 3072})
    return np.concatenate(xs), np.array(ys), x_te, np.array(y_te)


def make_cifar100(root: Path, n_train=12, n_test=6, seed=1):
    """cifar-100-python/ with train, test, meta (fine + coarse labels)."""
    rng = np.random.default_rng(seed)
    d = root / "cifar-100-python"
    d.mkdir(parents=True)
    out = []
    for split, n in (("train", n_train), ("test", n_test)):
        rows, x = _cifar_rows(rng, n)
        fine = rng.integers(0, 100, n).tolist()
        _dump(d / split, {b"filenames": [b"x.png"] * n, b"batch_label": split.encode(),
                          b"fine_labels": fine, b"coarse_labels": [f // 5 for f in fine],
                          b"data": rows})
        out += [x, np.array(fine)]
    _dump(d / "meta", {b"fine_label_names": [f"c{i}".encode() for i in range(100)],
                       b"coarse_label_names": [f"s{i}".encode() for i in range(20)]})
    return tuple(out)


def write_idx(path: Path, arr: np.ndarray, compress: bool) -> None:
    header = bytes([0, 0, 0x08, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape)
    payload = header + arr.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)


def check_prepared(out: Path, x_tr, y_tr, x_te, y_te):
    with PreparedDataset(out) as ds:
        a, b = ds.read_all("train")
        c, d = ds.read_all("test")
    np.testing.assert_array_equal(a, x_tr)
    np.testing.assert_array_equal(b, y_tr)
    np.testing.assert_array_equal(c, x_te)
    np.testing.assert_array_equal(d, y_te)
    assert a.dtype == np.uint8 and b.dtype == np.int32


# ---------------------------------------------------------------- records

def test_encode_decode_round_trip():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(5, 3, 2, 3), dtype=np.uint8)
    y = np.array([0, 7, 2**31 - 1, 3, 1])
    rows = encode_records(x, y)
    assert rows.shape == (5, 4 + 18)
    assert rows[1, :4].tobytes() == (7).to_bytes(4, "little")
    assert rows[2, 4:].tobytes() == x[2].tobytes()
    xi, yi = decode_records([r.tobytes() for r in rows], (3, 2, 3))
    np.testing.assert_array_equal(xi, x)
    np.testing.assert_array_equal(yi, y)
    with pytest.raises(ValueError, match="record 0 has 3 bytes"):
        decode_records([b"abc"], (3, 2, 3))


# ---------------------------------------------------------------- CIFAR

@pytest.mark.parametrize("layout", ["folder", "archive"])
def test_cifar10_round_trip_and_load_dataset(tmp_path, layout):
    src = tmp_path / "src"
    x_tr, y_tr, x_te, y_te = make_cifar10(src)
    if layout == "archive":
        with tarfile.open(src / "cifar-10-python.tar.gz", "w:gz") as tf:
            tf.add(src / "cifar-10-batches-py", arcname="cifar-10-batches-py")
        for f in (src / "cifar-10-batches-py").iterdir():
            f.unlink()
        (src / "cifar-10-batches-py").rmdir()
    out = prep.prepare("cifar10", src, tmp_path / "data", progress=False)
    assert out == prepared_dir(tmp_path / "data", "cifar10")
    check_prepared(out, x_tr, y_tr, x_te, y_te)
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["format_version"] == 1 and meta["image_shape"] == [32, 32, 3]
    assert meta["class_names"][0] == "airplane" and meta["num_classes"] == 10
    assert meta["splits"]["train"]["num_examples"] == 20
    assert meta["splits"]["test"]["num_examples"] == 5
    np.testing.assert_allclose(meta["mean"], (x_tr / 255.0).mean(axis=(0, 1, 2)), rtol=1e-9)
    np.testing.assert_allclose(meta["std"], (x_tr / 255.0).std(axis=(0, 1, 2)), rtol=1e-9)
    ds = load_dataset("cifar10", data_dir=tmp_path / "data")
    np.testing.assert_array_equal(ds.x_train, x_tr)
    np.testing.assert_array_equal(ds.y_train, y_tr)
    np.testing.assert_array_equal(ds.x_test, x_te)
    np.testing.assert_array_equal(ds.y_test, y_te)
    assert ds.num_classes == 10 and ds.mean == tuple(meta["mean"])
    assert ds.mean == dataset.channel_stats(x_tr)[0] and ds.std == dataset.channel_stats(x_tr)[1]
    with pytest.raises(FileExistsError, match="--overwrite"):
        prep.prepare("cifar10", src, tmp_path / "data", progress=False)


def test_cifar100_round_trip_cli_and_shards(tmp_path, monkeypatch, capsys):
    x_tr, y_tr, x_te, y_te = make_cifar100(tmp_path / "src")
    # Small shards so the train split spans several files.
    orig = prep.records.DatasetWriter.__init__

    def small(self, *a, **k):
        k["shard_bytes"] = 5 * (4 + 3072)
        orig(self, *a, **k)

    monkeypatch.setattr(prep.records.DatasetWriter, "__init__", small)
    rc = prep.main(["cifar100", "--source", str(tmp_path / "src" / "cifar-100-python"),
                    "--data_dir", str(tmp_path / "data"), "--no_progress"])
    assert rc == 0 and "prepared 'cifar100'" in capsys.readouterr().out
    out = prepared_dir(tmp_path / "data", "cifar100")
    meta = json.loads((out / "metadata.json").read_text())
    assert [s["num_examples"] for s in meta["splits"]["train"]["shards"]] == [5, 5, 2]
    assert meta["splits"]["train"]["shards"][2]["file"] == "train.array_record-00002-of-00003"
    assert meta["class_names"][:2] == ["c0", "c1"] and meta["num_classes"] == 100
    check_prepared(out, x_tr, y_tr, x_te, y_te)
    ds = load_dataset("cifar100", data_dir=tmp_path / "data")
    np.testing.assert_array_equal(ds.x_train, x_tr)
    np.testing.assert_array_equal(ds.y_test, y_te)
    assert ds.num_classes == 100


def test_cifar_missing_layout_errors(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="cifar-100-python/ folder .* or "
                                                "cifar-100-python.tar.gz"):
        prep.prepare("cifar100", tmp_path / "empty", tmp_path / "data", progress=False)
    assert prep.main(["cifar10", "--source", str(tmp_path / "nope"),
                      "--data_dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --source") and err.count("\n") == 1
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").rglob("*.json"))


def test_missing_data_messages_name_prepare_command(tmp_path):
    with pytest.raises((FileNotFoundError, ImportError)) as e:
        load_dataset("cifar100", data_dir=tmp_path)
    assert (f"python -m clj.data.prepare cifar100 --source <dir holding cifar-100-python/ "
            f"or cifar-100-python.tar.gz> --data_dir {tmp_path}") in str(e.value)
    with pytest.raises(FileNotFoundError) as e:
        load_dataset("tiny_imagenet", data_dir=tmp_path)
    assert ("python -m clj.data.prepare tiny_imagenet --source <tiny-imagenet-200 dir> "
            f"--data_dir {tmp_path}") in str(e.value)
    with pytest.raises(FileNotFoundError, match="python -m clj.data.prepare imagenet100 "
                                                "--source <ImageNet dir"):
        load_dataset("clj:imagenet100", data_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="python -m clj.data.prepare imagefolder "
                                                "--name my_folder --size 224"):
        load_dataset("clj:my_folder", data_dir=tmp_path)


# ---------------------------------------------------------------- IDX

@pytest.mark.parametrize("compress", [False, True])
def test_mnist_idx_round_trip(tmp_path, compress):
    rng = np.random.default_rng(3)
    arrays = [rng.integers(0, 256, (6, 28, 28)), rng.integers(0, 10, 6),
              rng.integers(0, 256, (4, 28, 28)), rng.integers(0, 10, 4)]
    ext = ".gz" if compress else ""
    names = ["train-images-idx3-ubyte", "train-labels-idx1-ubyte",
             "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    (tmp_path / "src").mkdir()
    for n, a in zip(names, arrays):
        write_idx(tmp_path / "src" / (n + ext), a, compress)
    out = prep.prepare("mnist", tmp_path / "src", tmp_path / "data", progress=False)
    x_tr, y_tr, x_te, y_te = arrays
    check_prepared(out, x_tr[..., None], y_tr, x_te[..., None], y_te)
    ds = load_dataset("mnist", data_dir=tmp_path / "data")
    np.testing.assert_array_equal(ds.x_train[..., 0], x_tr)
    np.testing.assert_array_equal(ds.y_test, y_te)


def test_emnist_idx_letters(tmp_path):
    rng = np.random.default_rng(4)
    up_tr = rng.integers(0, 256, (5, 28, 28))
    up_te = rng.integers(0, 256, (3, 28, 28))
    y_tr, y_te = np.array([1, 26, 3, 4, 5]), np.array([26, 1, 2])
    src = tmp_path / "gzip"
    src.mkdir()
    for stem, a in (("train-images-idx3", up_tr.transpose(0, 2, 1)), ("train-labels-idx1", y_tr),
                    ("test-images-idx3", up_te.transpose(0, 2, 1)), ("test-labels-idx1", y_te)):
        write_idx(src / f"emnist-letters-{stem}-ubyte.gz", a, True)
    out = prep.prepare("emnist", tmp_path, tmp_path / "data", split="letters", progress=False)
    assert out.name == "emnist-letters"
    check_prepared(out, up_tr[..., None], y_tr - 1, up_te[..., None], y_te - 1)
    ds = load_dataset("emnist", data_dir=tmp_path / "data", split="letters")
    assert ds.num_classes == 26 and ds.name == "emnist/letters"
    np.testing.assert_array_equal(ds.x_test[..., 0], up_te)
    with pytest.raises(FileNotFoundError, match="emnist-digits-train-images-idx3-ubyte"):
        prep.prepare("emnist", tmp_path, tmp_path / "d2", split="digits", progress=False)


# ---------------------------------------------------------------- image folders

def _save(path: Path, arr: np.ndarray, fmt: str) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt)


def test_resize_shorter_side_then_centre_crop():
    from PIL import Image

    rng = np.random.default_rng(5)
    # Shorter side already == size: no resampling, exact centre crop.
    a = rng.integers(0, 256, (10, 15, 3), dtype=np.uint8)  # H=10, W=15
    np.testing.assert_array_equal(
        prep.resize_shorter_center_crop(Image.fromarray(a), 10), a[:, 2:12])
    b = rng.integers(0, 256, (17, 10, 3), dtype=np.uint8)  # portrait
    np.testing.assert_array_equal(
        prep.resize_shorter_center_crop(Image.fromarray(b), 10), b[3:13])
    # Constant image of any size -> constant output.
    c = np.full((37, 53, 3), (9, 200, 77), np.uint8)
    out = prep.resize_shorter_center_crop(Image.fromarray(c), 16)
    assert out.shape == (16, 16, 3) and (out == np.array([9, 200, 77], np.uint8)).all()
    # 80 x 40 (W x H) -> 40 x 20 -> crop columns [10, 30) of the resized image:
    # three vertical stripes of widths 20/40/20 become 10/20/10, so the crop is
    # exactly the middle stripe, away from the blended stripe borders.
    d = np.zeros((40, 80, 3), np.uint8)
    d[:, :20] = (255, 0, 0)
    d[:, 20:60] = (0, 255, 0)
    d[:, 60:] = (0, 0, 255)
    out = prep.resize_shorter_center_crop(Image.fromarray(d), 20)
    assert out.shape == (20, 20, 3)
    np.testing.assert_array_equal(out[:, 2:18], np.broadcast_to([0, 255, 0], (20, 16, 3)))
    # Grey-scale input comes out as 3 equal channels.
    g = rng.integers(0, 256, (12, 12), dtype=np.uint8)
    out = prep.resize_shorter_center_crop(Image.fromarray(g), 12)
    np.testing.assert_array_equal(out, np.repeat(g[..., None], 3, -1))


def test_imagefolder_mixed_png_jpeg_parallel(tmp_path):
    rng = np.random.default_rng(6)
    root = tmp_path / "imagenet_small"
    sizes = [(8, 12), (15, 8), (8, 8), (20, 30)]
    exact = {}
    for ci, cls in enumerate(["n01", "n02", "n03"]):
        for j, (h, w) in enumerate(sizes):
            a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            if j % 2 == 0:
                _save(root / "train" / cls / f"img{j}.PNG", a, "PNG")
                if min(h, w) == 8:
                    exact[(cls, j)] = a
            else:
                _save(root / "train" / cls / f"img{j}.JPEG", a, "JPEG")
        g = rng.integers(0, 256, (9, 11), dtype=np.uint8)  # grey-scale val image
        _save(root / "val" / cls / "v.png", g, "PNG")
    (root / "train" / "n02" / "notes.txt").write_text("not an image")
    out = prep.prepare("imagefolder", root, tmp_path / "data", size=8, workers=2,
                       progress=False)
    assert out.name == "imagenet_small"
    with PreparedDataset(out) as ds:
        assert ds.class_names == ["n01", "n02", "n03"] and ds.image_shape == (8, 8, 3)
        x, y = ds.read_all("train")
        xt, yt = ds.read_all("test")
    np.testing.assert_array_equal(y, np.repeat([0, 1, 2], 4))
    np.testing.assert_array_equal(yt, [0, 1, 2])
    assert x.shape == (12, 8, 8, 3) and xt.shape == (3, 8, 8, 3)
    # Files sorted per class: img0 (8x12 PNG) is row 0 of each class.
    for ci, cls in enumerate(["n01", "n02", "n03"]):
        np.testing.assert_array_equal(x[4 * ci], exact[(cls, 0)][:, 2:10])
        np.testing.assert_array_equal(x[4 * ci + 2], exact[(cls, 2)])
    assert (xt[..., 0] == xt[..., 1]).all()
    ds2 = load_dataset("imagenet_small", data_dir=tmp_path / "data")
    np.testing.assert_array_equal(ds2.x_train, x)
    ds3 = load_dataset("clj:imagenet_small", data_dir=tmp_path / "data")
    np.testing.assert_array_equal(ds3.y_test, yt)


def test_imagefolder_tiny_imagenet_layout(tmp_path):
    """train/<wnid>/images/*.JPEG, val/images/*.JPEG + val/val_annotations.txt,
    unlabelled test/images/, wnids.txt: Tiny-ImageNet-200's layout."""
    rng = np.random.default_rng(7)
    root = tmp_path / "tiny-imagenet-200"
    wnids = ["n0002", "n0001"]
    (root).mkdir()
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    for w in wnids:
        for j in range(2):
            _save(root / "train" / w / "images" / f"{w}_{j}.JPEG",
                  rng.integers(0, 256, (6, 6, 3), dtype=np.uint8), "JPEG")
        (root / "train" / w / f"{w}_boxes.txt").write_text("x\t0\t0\t5\t5\n")
    lines = []
    val_labels = ["n0002", "n0001", "n0001"]
    for i, w in enumerate(val_labels):
        _save(root / "val" / "images" / f"val_{i}.JPEG",
              rng.integers(0, 256, (6, 6, 3), dtype=np.uint8), "JPEG")
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t5\t5")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    _save(root / "test" / "images" / "test_0.JPEG",
          rng.integers(0, 256, (6, 6, 3), dtype=np.uint8), "JPEG")
    out = prep.prepare("imagefolder", root, tmp_path / "data", size=6, workers=0,
                       dataset_name="tiny_imagenet", progress=False)
    ds = load_dataset("tiny_imagenet", data_dir=tmp_path / "data")
    assert ds.x_train.shape == (4, 6, 6, 3) and ds.num_classes == 2
    np.testing.assert_array_equal(ds.y_train, [0, 0, 1, 1])  # n0001 first (sorted)
    np.testing.assert_array_equal(ds.y_test, [0, 0, 1])  # sorted by class, then file
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["class_names"] == ["n0001", "n0002"] and meta["source"]["test_folder"] == "val"


def test_imagefolder_layout_errors(tmp_path):
    root = tmp_path / "r"
    (root / "images").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match=r"no train/ folder .*train/<class>/<image>"):
        prep.prepare("imagefolder", root, tmp_path / "d", size=8, progress=False)
    _save(root / "train" / "a" / "x.png", np.zeros((4, 4, 3), np.uint8), "PNG")
    with pytest.raises(FileNotFoundError, match="no labelled evaluation split"):
        prep.prepare("imagefolder", root, tmp_path / "d", size=4, progress=False)
    _save(root / "val" / "flat.png", np.zeros((4, 4, 3), np.uint8), "PNG")
    with pytest.raises(FileNotFoundError, match="val_annotations.txt"):
        prep.prepare("imagefolder", root, tmp_path / "d", size=4, progress=False)
    _save(root / "val" / "zzz" / "y.png", np.zeros((4, 4, 3), np.uint8), "PNG")
    with pytest.raises(FileNotFoundError, match="class folders not in train/: zzz"):
        prep.prepare("imagefolder", root, tmp_path / "d", size=4, progress=False)
    import shutil

    shutil.rmtree(root / "val")
    _save(root / "val" / "a" / "y.png", np.zeros((4, 4, 3), np.uint8), "PNG")
    (root / "train" / "a" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"cannot decode .*broken.jpg"):
        prep.prepare("imagefolder", root, tmp_path / "d", size=4, workers=0, progress=False)
    with pytest.raises(ValueError, match="needs --size"):
        prep.prepare("imagefolder", root, tmp_path / "d", progress=False)
    with pytest.raises(ValueError, match="unknown dataset 'cifar1000'; valid: cifar10"):
        prep.prepare("cifar1000", root, tmp_path / "d", progress=False)
    assert not list((tmp_path / "d").rglob("metadata.json")) if (tmp_path / "d").exists() else True


# ---------------------------------------------------------------- no TensorFlow

def test_prepare_load_and_stream_never_import_tensorflow(tmp_path):
    make_cifar10(tmp_path / "src", per_batch=2, n_test=2)
    code = textwrap.dedent(f"""
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split('.')[0] in ('tensorflow', 'tensorflow_datasets'):
                    raise ImportError('blocked: ' + name)
        sys.meta_path.insert(0, Block())
        import numpy as np
        from clj.data.prepare import main
        assert main(['cifar10', '--source', {str(tmp_path / 'src')!r},
                     '--data_dir', {str(tmp_path / 'data')!r}, '--no_progress']) == 0
        from clj.data import load_dataset, sources
        from clj.data.stream import ChunkStream, open_prepared
        ds = load_dataset('cifar10', data_dir={str(tmp_path / 'data')!r})
        with ChunkStream(open_prepared('cifar10', {str(tmp_path / 'data')!r}),
                         np.zeros((1, 2, 1, 2), np.int64)) as s:
            chunks = list(s)
        assert len(chunks) == 2 and ds.num_train == 10
        bad = [m for m in sys.modules if m.split('.')[0] in ('tensorflow', 'tensorflow_datasets')]
        assert not bad, bad
        print('OK')
    """)
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0 and "OK" in r.stdout, r.stderr[-3000:]


def test_svhn_mat_round_trip(tmp_path):
    from scipy.io import savemat

    rng = np.random.default_rng(8)
    expect = []
    for split, n in (("train", 5), ("test", 3)):
        x = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
        y = rng.integers(1, 11, n)  # 1..10, 10 is digit 0
        savemat(tmp_path / f"{split}_32x32.mat", {"X": x.transpose(1, 2, 3, 0), "y": y[:, None]})
        expect += [x, y % 10]
    out = prep.prepare("svhn_cropped", tmp_path, tmp_path / "data", progress=False)
    check_prepared(out, *expect)
