"""The ImageNet-family preparers (``python -m clj.data.prepare tiny_imagenet |
imagenet100 | imagenet1k | mini_imagenet | fg_imagenet``): each source layout
is built by hand from a few tiny generated images in a tmp dir, prepared, and
read back: labels, class order and split sizes as the layout says, SER's
saliency maps aligned with their images, and the stream reading what the
device placement holds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from clj.data import PREPARED_SHAPES, load_dataset
from clj.data import prepare as prep
from clj.data.imagenet import IMAGENET100_PYCIL, read_class_list
from clj.data.records import PreparedDataset, decode_records, encode_records, prepared_dir
from clj.data.stream import ChunkStream, EvalStream, open_prepared


def _save(path: Path, arr: np.ndarray, fmt: str = "JPEG") -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))


def _flat(code: int, h: int, w: int, label: int = 0) -> np.ndarray:
    """A constant image whose red channel is ``code`` (survives JPEG and resizing
    within a unit or two) and green channel ``40 * label``."""
    a = np.empty((h, w, 3), np.uint8)
    a[..., 0], a[..., 1], a[..., 2] = code, (40 * label) % 256, 128
    return a


def _decode(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _stream_equals_device(data_dir: Path, name: str) -> None:
    """What the stream placement reads (ChunkStream / EvalStream of the
    records) equals the device placement's arrays (load_dataset) gathered at
    the same indices."""
    ds = load_dataset(name, data_dir=data_dir)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, ds.num_train, size=(2, 3, 2, 4))      # [S, chunks, K, B]
    with open_prepared(name, data_dir) as rec:
        with ChunkStream(rec, idx, prefetch=2) as s:
            for c, (x, y) in enumerate(s):
                np.testing.assert_array_equal(x, ds.x_train[idx[:, c]])
                np.testing.assert_array_equal(y, ds.y_train[idx[:, c]])
        test_idx = np.arange(ds.num_test - ds.num_test % 2).reshape(-1, 2)
        with EvalStream(rec, test_idx) as s:
            for b, (x, y) in enumerate(s):
                np.testing.assert_array_equal(x, ds.x_test[test_idx[b]])
                np.testing.assert_array_equal(y, ds.y_test[test_idx[b]])


# ---------------------------------------------------------------- Tiny-ImageNet

def make_tiny(root: Path, wnids=("n0003", "n0001", "n0002"), n_train=3, val=None, side=64):
    """tiny-imagenet-200/: wnids.txt (not sorted), train/<wnid>/images/,
    train/<wnid>/<wnid>_boxes.txt, val/images/ + val_annotations.txt, test/images/."""
    root.mkdir(parents=True)
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    rng = np.random.default_rng(0)
    for w in wnids:
        for j in range(n_train):
            _save(root / "train" / w / "images" / f"{w}_{j}.JPEG",
                  rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
        (root / "train" / w / f"{w}_boxes.txt").write_text("")
    val = val or [wnids[1], wnids[0], wnids[2], wnids[1], wnids[0], wnids[2]]
    lines = []
    for i, w in enumerate(val):
        _save(root / "val" / "images" / f"val_{i}.JPEG",
              rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t5\t5")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    _save(root / "test" / "images" / "test_0.JPEG", np.zeros((side, side, 3), np.uint8))
    return list(wnids), val


def test_tiny_imagenet_wnids_order_native_size_and_stream(tmp_path):
    wnids, val = make_tiny(tmp_path / "src" / "tiny-imagenet-200")
    data = tmp_path / "data"
    # --source may be the folder holding tiny-imagenet-200/
    out = prep.prepare("tiny_imagenet", tmp_path / "src", data, workers=0, progress=False)
    assert out == prepared_dir(data, "tiny_imagenet")
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["class_names"] == wnids and meta["image_shape"] == [64, 64, 3]
    assert meta["format_version"] == 1 and "extras" not in meta
    ds = load_dataset("tiny_imagenet", data_dir=data)
    assert (ds.num_train, ds.num_test, ds.num_classes) == (9, 6, 3)
    np.testing.assert_array_equal(ds.y_train, np.repeat([0, 1, 2], 3))   # wnids.txt order
    np.testing.assert_array_equal(ds.y_test, [0, 0, 1, 1, 2, 2])          # by label, then file
    root = tmp_path / "src" / "tiny-imagenet-200"
    # stored at the native 64 px: exactly the decoded JPEG, no resampling
    for k, (ci, j) in enumerate((c, j) for c in range(3) for j in range(3)):
        np.testing.assert_array_equal(
            ds.x_train[k], _decode(root / "train" / wnids[ci] / "images" / f"{wnids[ci]}_{j}.JPEG"))
    first_val_of_class0 = min(i for i, w in enumerate(val) if w == wnids[0])
    np.testing.assert_array_equal(ds.x_test[0],
                                  _decode(root / "val" / "images" / f"val_{first_val_of_class0}.JPEG"))
    _stream_equals_device(data, "tiny_imagenet")


def test_tiny_imagenet_layout_errors(tmp_path):
    root = tmp_path / "tiny-imagenet-200"
    make_tiny(root, side=8)
    (root / "wnids.txt").write_text("n0003\nn0001\nn0002\nn0009\n")
    with pytest.raises(FileNotFoundError, match=re.escape(str(root / "train" / "n0009" / "images"))):
        prep.prepare("tiny_imagenet", root, tmp_path / "d", size=8, workers=0, progress=False)
    (root / "wnids.txt").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(str(root / "wnids.txt"))):
        prep.prepare("tiny_imagenet", root, tmp_path / "d", size=8, workers=0, progress=False)
    assert not list(tmp_path.glob("d/clj/*"))


# ---------------------------------------------------------------- ImageNet-100 / ImageNet-1k

def make_imagenet(root: Path, wnids, n_train=2, n_val=2, flat_val=False, side=(10, 14)):
    """train/<wnid>/<wnid>_<j>.JPEG and val/<wnid>/ (or flat val/ with
    ILSVRC2012_val_<8 digits>.JPEG); each image's red channel codes
    (class, index). Returns the flat val's wnid per val number (1-based)."""
    h, w = side
    for ci, c in enumerate(wnids):
        for j in range(n_train):
            _save(root / "train" / c / f"{c}_{j}.JPEG", _flat(10 + 20 * ci + j, h, w, ci))
    flat = {}
    num = 0
    for ci, c in enumerate(wnids):
        for j in range(n_val):
            num += 1
            img = _flat(10 + 20 * ci + 10 + j, h, w, ci)
            if flat_val:
                _save(root / "val" / f"ILSVRC2012_val_{num:08d}.JPEG", img)
                flat[num] = c
            else:
                _save(root / "val" / c / f"ILSVRC2012_val_{num:08d}.JPEG", img)
    return flat


def test_imagenet100_subset_and_order_from_class_list(tmp_path):
    layout = ["n01", "n02", "n03", "n04", "n05"]
    make_imagenet(tmp_path / "in", layout, n_train=2, n_val=1)
    listed = ["n04", "n01", "n03"]
    (tmp_path / "list.txt").write_text("# my subset\n" + "\n".join(listed) + "\n")
    out = prep.prepare("imagenet100", tmp_path / "in", tmp_path / "data", size=8,
                       classes=tmp_path / "list.txt", workers=0, progress=False)
    ds = load_dataset("imagenet100", data_dir=tmp_path / "data")
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["class_names"] == listed and ds.num_classes == 3
    assert ds.x_train.shape == (6, 8, 8, 3) and ds.num_test == 3
    np.testing.assert_array_equal(ds.y_train, [0, 0, 1, 1, 2, 2])
    # label k holds the images of listed[k]: red channel 10 + 20 * (layout index) + j
    for k, c in enumerate(listed):
        ci = layout.index(c)
        for j in range(2):
            assert abs(int(ds.x_train[2 * k + j, ..., 0].mean()) - (10 + 20 * ci + j)) <= 2
        assert abs(int(ds.x_test[k, ..., 0].mean()) - (20 + 20 * ci)) <= 2
    _stream_equals_device(tmp_path / "data", "imagenet100")


def test_imagenet100_default_list_is_pycil_and_bad_lists(tmp_path, capsys):
    wn = read_class_list(IMAGENET100_PYCIL)
    assert len(wn) == len(set(wn)) == 100 and wn == sorted(wn)
    assert all(re.fullmatch(r"n\d{8}", w) for w in wn)
    assert wn[0] == "n01514668" and wn[-1] == "n15075141"
    make_imagenet(tmp_path / "in", ["n01", "n02"], n_train=1, n_val=1)
    # the default list names classes this layout lacks: one line naming the folder
    rc = prep.main(["imagenet100", "--source", str(tmp_path / "in"), "--data_dir",
                    str(tmp_path / "d"), "--size", "8", "--workers", "0", "--no_progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1
    assert f"missing folder {tmp_path / 'in' / 'train' / wn[0]}" in err
    (tmp_path / "l.txt").write_text("n01\nn09\n")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "in" / "train" / "n09"))):
        prep.prepare("imagenet100", tmp_path / "in", tmp_path / "d", size=8,
                     classes=tmp_path / "l.txt", workers=0, progress=False)
    (tmp_path / "dup.txt").write_text("n01\nn01\n")
    with pytest.raises(ValueError, match="n01 listed twice"):
        prep.prepare("imagenet100", tmp_path / "in", tmp_path / "d", size=8,
                     classes=tmp_path / "dup.txt", workers=0, progress=False)
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope" / "train"))):
        (tmp_path / "nope").mkdir()
        prep.prepare("imagenet100", tmp_path / "nope", tmp_path / "d", size=8,
                     classes=tmp_path / "l.txt", workers=0, progress=False)
    with pytest.raises(ValueError, match="--size must be one side N"):
        prep.prepare("imagenet100", tmp_path / "in", tmp_path / "d", size="8x9",
                     classes=tmp_path / "l.txt", progress=False)
    assert not list(tmp_path.glob("d/clj/*"))


def _meta_mat(path: Path, ids_to_wnid: dict[int, str]) -> None:
    from scipy.io import savemat

    syn = np.zeros((len(ids_to_wnid) + 1,), dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"),
                                                   ("num_children", "O")])
    for r, (i, w) in enumerate(sorted(ids_to_wnid.items())):
        syn[r] = (np.array([[i]]), np.array([w]), np.array([[0]]))
    syn[-1] = (np.array([[len(ids_to_wnid) + 1]]), np.array(["n00000000"]), np.array([[2]]))  # a non-leaf synset
    path.parent.mkdir(parents=True, exist_ok=True)
    savemat(path, {"synsets": syn.reshape(-1, 1)})


@pytest.mark.parametrize("val", ["folders", "devkit", "loc_csv"])
def test_imagenet1k_validation_labels(tmp_path, val):
    wnids = ["n01", "n02", "n03"]
    root = tmp_path / "ILSVRC"
    flat = make_imagenet(root, wnids, n_train=1, n_val=2, flat_val=val != "folders", side=(8, 8))
    if val == "devkit":
        # ILSVRC2012 ids (1-based) follow another order than the sorted wnids
        ids = {1: "n03", 2: "n01", 3: "n02"}
        (root / "ILSVRC2012_devkit_t12" / "data").mkdir(parents=True)
        inv = {w: i for i, w in ids.items()}
        (root / "ILSVRC2012_devkit_t12" / "data" / "ILSVRC2012_validation_ground_truth.txt"
         ).write_text("".join(f"{inv[flat[n]]}\n" for n in sorted(flat)))
        _meta_mat(root / "ILSVRC2012_devkit_t12" / "data" / "meta.mat", ids)
    elif val == "loc_csv":
        rows = [f"ILSVRC2012_val_{n:08d},{flat[n]} 1 2 3 4 {flat[n]} 5 6 7 8" for n in sorted(flat)]
        (tmp_path / "LOC_val_solution.csv").write_text("ImageId,PredictionString\n" + "\n".join(rows[::-1]) + "\n")
    out = prep.prepare("imagenet1k", root, tmp_path / "data", size=8, workers=0, progress=False)
    ds = load_dataset("imagenet1k", data_dir=tmp_path / "data")
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["class_names"] == wnids and (ds.num_train, ds.num_test) == (3, 6)
    np.testing.assert_array_equal(ds.y_test, [0, 0, 1, 1, 2, 2])
    for k in range(6):   # the image's own code: class ci's val j is 20 + 20 ci + j
        assert abs(int(ds.x_test[k, ..., 0].mean()) - (20 + 20 * (k // 2) + k % 2)) <= 2
    assert {"folders": "class folders", "devkit": "ground_truth", "loc_csv": "LOC_val"}[val] \
        in meta["source"]["val_labels"]
    if val == "folders":
        _stream_equals_device(tmp_path / "data", "imagenet1k")


def test_imagenet1k_flat_val_without_labels_is_one_line(tmp_path):
    make_imagenet(tmp_path / "r", ["n01"], n_train=1, n_val=1, flat_val=True)
    with pytest.raises(FileNotFoundError) as e:
        prep.prepare("imagenet1k", tmp_path / "r", tmp_path / "d", size=8, workers=0,
                     progress=False)
    assert "LOC_val_solution.csv" in str(e.value) and "\n" not in str(e.value)


# ---------------------------------------------------------------- SER's Mini-ImageNet / FG-ImageNet

SER_FLAT_YML = """n0c: 1
n0a: 2
n0b: 0
n0d: 3
"""

SER_GROUPED_YML = """'0':
  n0c: 1
  n0a: 0
'1':
  n0d: 3
  n0b: 2
"""


def make_ser(root: Path, wnids, n_train=2, n_val=1, side=(12, 10)):
    """images/{train,val}/<wnid>/*.JPEG + annotations/{train,val}/<wnid>/*.png;
    image number ``i`` (over the whole tree) has red channel ``5 + 7 i`` and a
    constant saliency map of value ``5 + 7 i``: alignment is checkable after
    any resize."""
    h, w = side
    i = 0
    for split, n in (("train", n_train), ("val", n_val)):
        for c in wnids:
            for j in range(n):
                code = 5 + 7 * i
                _save(root / "images" / split / c / f"{c}_{j}.JPEG", _flat(code, h, w))
                _save(root / "annotations" / split / c / f"{c}_{j}.png",
                      np.full((h, w), code, np.uint8), "PNG")
                i += 1
        (root / "images" / split / wnids[0] / "notes.txt").write_text("not an image")


@pytest.mark.parametrize("kind,yml", [("mini_imagenet", SER_FLAT_YML),
                                      ("fg_imagenet", SER_GROUPED_YML)])
def test_ser_layout_label_map_and_aligned_saliency(tmp_path, kind, yml):
    wnids = ["n0a", "n0b", "n0c", "n0d"]
    make_ser(tmp_path / "src", wnids)
    (tmp_path / "labels.yml").write_text(yml)
    order = read_class_list(tmp_path / "labels.yml")
    assert order == (["n0b", "n0c", "n0a", "n0d"] if kind == "mini_imagenet"
                     else ["n0a", "n0c", "n0b", "n0d"])
    out = prep.prepare(kind, tmp_path / "src", tmp_path / "data", size="8x16",
                       classes=tmp_path / "labels.yml", progress=False,
                       workers=2 if kind == "fg_imagenet" else 0)   # decoded in 2 processes, in order
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["format_version"] == 2 and meta["image_shape"] == [8, 16, 3]
    assert meta["extras"] == [{"name": "saliency", "shape": [8, 16, 1], "dtype": "uint8"}]
    assert meta["class_names"] == order
    with PreparedDataset(out) as rec:
        assert rec.extras == {"saliency": (8, 16, 1)}
        for split, n in (("train", 8), ("test", 4)):
            x, y = rec.read_all(split)
            sal = rec.read_extra(split, "saliency")
            assert x.shape == (n, 8, 16, 3) and sal.shape == (n, 8, 16, 1)
            np.testing.assert_array_equal(y, np.repeat(np.arange(4), n // 4))
            # each record's map is its image's: the same code in both
            assert np.abs(x[..., 0].astype(int).mean((1, 2)) - sal[..., 0].astype(int).mean((1, 2))).max() <= 2
            # and the code says which file: label k holds order[k]'s images
            i0 = 0 if split == "train" else 8
            per = n // 4
            for k, c in enumerate(order):
                for j in range(per):
                    code = 5 + 7 * (i0 + per * wnids.index(c) + j)
                    assert (sal[per * k + j] == code).all()
        # random access: read(..., extras_out=...) stays aligned
        idx = np.array([[7, 0, 3], [3, 3, 5]])
        got = {"saliency": np.empty((2, 3, 8, 16, 1), np.uint8)}
        xi, yi = rec.read("train", idx, extras_out=got)
        np.testing.assert_array_equal(got["saliency"], rec.read_extra("train", "saliency", idx))
        np.testing.assert_array_equal(xi, x_all := rec.read_all("train")[0][idx])
        assert x_all.shape == (2, 3, 8, 16, 3)
        with pytest.raises(ValueError, match="no extra 'mask'; stored extras: saliency"):
            rec.read_extra("train", "mask")
    # the images are SER's transform: Lanczos to W x H without keeping the aspect ratio
    from PIL import Image

    with Image.open(tmp_path / "src" / "images" / "train" / order[0] / f"{order[0]}_0.JPEG") as im:
        ref = np.asarray(im.convert("RGB").resize((16, 8), Image.LANCZOS))
    np.testing.assert_array_equal(load_dataset(kind, data_dir=tmp_path / "data").x_train[0], ref)
    _stream_equals_device(tmp_path / "data", kind)


def test_ser_layout_errors(tmp_path, capsys):
    wnids = ["n0a", "n0b", "n0c", "n0d"]
    make_ser(tmp_path / "src", wnids, n_train=1, n_val=1, side=(8, 8))
    (tmp_path / "labels.yml").write_text(SER_FLAT_YML)
    missing = tmp_path / "src" / "annotations" / "val" / "n0c" / "n0c_0.png"
    missing.unlink()
    with pytest.raises(FileNotFoundError, match="missing saliency map " + re.escape(str(missing))):
        prep.prepare("mini_imagenet", tmp_path / "src", tmp_path / "d", size="8x8",
                     classes=tmp_path / "labels.yml", workers=0, progress=False)
    (tmp_path / "more.yml").write_text(SER_FLAT_YML + "n0e: 4\n")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "src" / "images" / "train" / "n0e"))):
        prep.prepare("mini_imagenet", tmp_path / "src", tmp_path / "d", size="8x8",
                     classes=tmp_path / "more.yml", workers=0, progress=False)
    (tmp_path / "gap.yml").write_text("n0a: 0\nn0b: 2\n")
    with pytest.raises(ValueError, match="labels must be 0..1"):
        prep.prepare("mini_imagenet", tmp_path / "src", tmp_path / "d", size="8x8",
                     classes=tmp_path / "gap.yml", workers=0, progress=False)
    rc = prep.main(["fg_imagenet", "--source", str(tmp_path / "src"), "--data_dir",
                    str(tmp_path / "d"), "--no_progress"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "seq_imagenet_FG.yml" in err
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "empty" / "images"))):
        prep.prepare("mini_imagenet", tmp_path / "empty", tmp_path / "d",
                     classes=tmp_path / "labels.yml", progress=False)
    assert not list(tmp_path.glob("d/clj/*"))


# ---------------------------------------------------------------- registry, messages, format

@pytest.mark.parametrize("name", sorted(PREPARED_SHAPES))
def test_missing_dataset_names_its_prepare_command(tmp_path, name):
    with pytest.raises(FileNotFoundError) as e:
        load_dataset(name, data_dir=tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and f"python -m clj.data.prepare {name} --source" in msg
    assert f"--data_dir {tmp_path}" in msg and str(prepared_dir(tmp_path, name)) in msg
    from clj.config import base_config, validate

    c = base_config()
    c.dataset = name
    validate(c)   # a valid dataset= name


def test_records_with_extras_round_trip_and_old_readers_refuse(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (4, 2, 3, 3), dtype=np.uint8)
    m = rng.integers(0, 256, (4, 2, 3, 1), dtype=np.uint8)
    rows = encode_records(x, np.arange(4), [m])
    assert rows.shape == (4, 4 + 18 + 6)
    got = np.empty_like(m)
    xi, yi = decode_records([r.tobytes() for r in rows], (2, 3, 3), extra_shapes=[(2, 3, 1)],
                            extras_out=[got])
    np.testing.assert_array_equal(xi, x)
    np.testing.assert_array_equal(got, m)
    with pytest.raises(ValueError, match="extras of 6 bytes"):
        decode_records([rows[0, :-1].tobytes()], (2, 3, 3), extra_shapes=[(2, 3, 1)])
    w = prep.records.DatasetWriter(prepared_dir(tmp_path, "e"), "e", (2, 3, 3), 4,
                                   extras={"saliency": (2, 3, 1)})
    with pytest.raises(ValueError, match=r"extras \[\] given; the writer stores \['saliency'\]"):
        w.write("train", x, np.arange(4))
    w.write("train", x, np.arange(4), {"saliency": m})
    w.write("test", x[:1], np.arange(1), {"saliency": m[:1]})
    w.close()
    ds = load_dataset("clj:e", data_dir=tmp_path)     # images and labels; the extras skipped
    np.testing.assert_array_equal(ds.x_train, x)
    meta_file = prepared_dir(tmp_path, "e") / "metadata.json"
    meta = json.loads(meta_file.read_text())
    meta["format_version"] = 3
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="format_version 3; this clj reads versions 1, 2"):
        PreparedDataset(prepared_dir(tmp_path, "e"))


def test_runner_stream_equals_device_on_prepared_mini_imagenet(tmp_path):
    """A run streamed from a prepared SER dataset (records with extras) gives
    the device placement's accuracy matrices."""
    from clj.train import Runner
    from conftest import small_config

    wnids = ["n0a", "n0b", "n0c", "n0d"]
    make_ser(tmp_path / "src", wnids, n_train=6, n_val=2, side=(8, 8))
    (tmp_path / "labels.yml").write_text(SER_FLAT_YML)
    data = tmp_path / "data"
    prep.prepare("mini_imagenet", tmp_path / "src", data, size="8x8",
                 classes=tmp_path / "labels.yml", workers=0, progress=False)
    res = {}
    for placement in ("device", "stream"):
        c = small_config("derpp", num_seeds=1, dataset="mini_imagenet", data_dir=str(data),
                         **{"data.placement": placement, "scenario.increment": 2,
                            "train.batch_size": 4, "replay.minibatch_size": 4,
                            "replay.buffer_size": 8, "loop.eval_batch_size": 4})
        r = Runner(c, str(tmp_path / placement))
        assert r.placement == placement
        r.run()
        res[placement] = json.load(open(tmp_path / placement / "results.json"))
    for k in ("class_il", "task_il"):
        np.testing.assert_allclose(res["device"]["accuracy_matrix"][k],
                                   res["stream"]["accuracy_matrix"][k], atol=1e-6)
