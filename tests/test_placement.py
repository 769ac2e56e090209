"""The stream placement (records read from disk chunk by chunk) gives the
device placement's accuracy matrices."""
import json
import os
import pickle

import numpy as np
import pytest

from clj.train import Runner
from conftest import small_config


def _write_digits(data_dir: str) -> None:
    from clj.data import load_dataset
    from clj.data.records import DatasetWriter, prepared_dir

    ds = load_dataset("digits")
    w = DatasetWriter(prepared_dir(data_dir, "digits_rec"), "digits_rec", image_shape=ds.x_train.shape[1:],
                      num_classes=10)
    w.write("train", ds.x_train, ds.y_train)
    w.write("test", ds.x_test, ds.y_test)
    w.close()


def _cifar_pickles(root: str, n_train=60, n_test=20) -> None:
    """A tiny CIFAR-10 in the python-pickle layout (cifar-10-batches-py/)."""
    rng = np.random.default_rng(0)
    d = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(d)
    protos = rng.integers(0, 256, (10, 3072))

    def batch(n, k):
        y = np.arange(n) % 10
        x = np.clip(protos[y] + rng.integers(-40, 40, (n, 3072)), 0, 255).astype(np.uint8)
        return {b"data": x, b"labels": y.tolist(), b"batch_label": f"b{k}".encode()}

    for i in range(1, 6):
        pickle.dump(batch(n_train // 5, i), open(os.path.join(d, f"data_batch_{i}"), "wb"))
    pickle.dump(batch(n_test, 0), open(os.path.join(d, "test_batch"), "wb"))
    pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, open(os.path.join(d, "batches.meta"), "wb"))


@pytest.mark.parametrize("which", ["digits", "cifar10"])
def test_stream_equals_device(tmp_path, which):
    data_dir = str(tmp_path / "data")
    if which == "digits":
        _write_digits(data_dir)
        over = {"dataset": "clj:digits_rec", "data_dir": data_dir}
    else:
        from clj.data.prepare import main as prepare

        _cifar_pickles(str(tmp_path / "src"))
        prepare(["cifar10", "--source", str(tmp_path / "src"), "--data_dir", data_dir, "--no_progress"])
        over = {"dataset": "cifar10", "data_dir": data_dir, "train.batch_size": 8, "replay.minibatch_size": 8,
                "replay.buffer_size": 20,
                "optim.lr": 0.01}  # (lr 0.1 diverges on these raw-noise images by task 3)
    res, runners = {}, {}
    for placement in ("device", "stream"):
        c = small_config("derpp", num_seeds=2, **over, **{"data.placement": placement})
        r = runners[placement] = Runner(c, str(tmp_path / placement))
        assert r.placement == placement
        r.run()
        res[placement] = [json.load(open(tmp_path / placement / f"seed_{s}" / "results.json")) for s in (0, 1)]
    for a, b in zip(res["device"], res["stream"]):
        for k in ("class_il", "task_il"):
            np.testing.assert_allclose(a["accuracy_matrix"][k], b["accuracy_matrix"][k], atol=1e-6)
    # the public evaluation hook over tasks 0..2 only (a prefix of the evaluation batches)
    part = {p: r.evaluate(r.final_state, upto=2) for p, r in runners.items()}
    whole = runners["stream"].evaluate(runners["stream"].final_state)
    for k in ("class_il", "task_il"):
        np.testing.assert_allclose(part["stream"][k], part["device"][k], atol=1e-6)
        np.testing.assert_array_equal(part["stream"][k][:, :3], whole[k][:, :3])
        assert np.isnan(part["stream"][k][:, 3:]).all()
