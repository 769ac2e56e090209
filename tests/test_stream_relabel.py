"""Streamed data is labelled exactly like device data: the same accuracy
matrices, bit for bit, for every class-order mode (fixed, seeded, given),
every scenario kind (class-IL, task-IL, data-incremental) and with two
processes on loopback; the main job (SERENA on Split CIFAR-100, the official
per-seed class order) among them, on generated CIFAR-100 pickles.

The streams read images from clj's records on disk, whose labels are the
dataset's own; the scenario relabels classes by its class order, and every
batch, evaluation batch and end-of-task set must carry the scenario's labels
(the bug these tests pin: a seeded order gave a streamed run the stored
labels, task-IL 1.5 % instead of 21 %)."""
import json
import os
import pickle

import numpy as np
import pytest

from clj.train import Runner
from conftest import small_config
from test_placement import _write_digits

# a permutation of the ten digits (the "given" order)
GIVEN = [3, 7, 0, 9, 1, 5, 8, 2, 6, 4]


def _matrices(runner: Runner, wd: str, n_seeds: int) -> list[dict]:
    runner.run()
    dirs = [wd] if n_seeds == 1 else [os.path.join(wd, f"seed_{s}") for s in range(n_seeds)]
    return [json.load(open(os.path.join(d, "results.json"))) for d in dirs]


def _assert_same(dev: list[dict], st: list[dict]) -> None:
    for a, b in zip(dev, st):
        assert a["accuracy_matrix"].keys() == b["accuracy_matrix"].keys()
        for k in a["accuracy_matrix"]:
            np.testing.assert_array_equal(np.asarray(a["accuracy_matrix"][k]),
                                          np.asarray(b["accuracy_matrix"][k]), err_msg=k)
        assert a.get("random_init_accuracy") == b.get("random_init_accuracy")


@pytest.fixture(scope="module")
def digits_records(tmp_path_factory) -> str:
    d = str(tmp_path_factory.mktemp("records") / "data")
    _write_digits(d)
    return d


@pytest.mark.parametrize("kind,order", [
    ("class_il", "fixed"), ("class_il", "seeded"), ("class_il", "given"),
    ("task_il", "seeded"), ("data_incremental", "given"),
])
def test_stream_equals_device_every_order_and_kind(tmp_path, digits_records, kind, order):
    over = {"dataset": "clj:digits_rec", "data_dir": digits_records, "scenario.kind": kind,
            "scenario.class_order": ",".join(map(str, GIVEN)) if order == "given" else order}
    method = "derpp" if kind != "data_incremental" else "er"
    out = {}
    for placement in ("device", "stream"):
        c = small_config(method, num_seeds=2, **over, **{"data.placement": placement})
        wd = str(tmp_path / placement)
        r = Runner(c, wd)
        assert r.placement == placement
        if order != "fixed":  # the order really relabels (else the test could not fail)
            assert not np.array_equal(r.scenario.class_order, np.arange(10))
        out[placement] = _matrices(r, wd, 2)
    _assert_same(out["device"], out["stream"])


def test_stream_end_task_data_carries_scenario_labels(tmp_path, digits_records):
    """iCaRL's end_task (herding per class) reads the task's images from disk:
    its exemplars' labels must be the scenario's, as on the device."""
    over = {"dataset": "clj:digits_rec", "data_dir": digits_records, "scenario.class_order": "seeded",
            "scenario.increment": 5}  # two tasks: one end_task with old classes to keep
    out = {}
    for placement in ("device", "stream"):
        c = small_config("icarl", **over, **{"data.placement": placement})
        wd = str(tmp_path / placement)
        out[placement] = _matrices(Runner(c, wd), wd, 1)
    _assert_same(out["device"], out["stream"])


def test_two_processes_stream_seeded_order_equal_device(tmp_path, digits_records):
    """Two processes on 127.0.0.1 reading their own rows from disk under a seeded
    class order give one process's device-placement matrices."""
    from conftest import run_with_devices
    from test_multihost import _two_processes

    over = {"dataset": "clj:digits_rec", "data_dir": digits_records, "scenario.class_order": "seeded"}
    two = _two_processes(str(tmp_path / "st"), **over, **{"data.placement": "stream"})
    code = f"""
import json
from conftest import small_config
from clj.train import Runner
c = small_config('derpp', num_seeds=4, **{over!r})
print(json.dumps(Runner(c, {str(tmp_path / 'dev')!r}).run()))
"""
    one = json.loads(run_with_devices(code).strip().splitlines()[-1])
    for k in ("class_il", "task_il"):
        np.testing.assert_array_equal(two["accuracy_matrix"][k]["mean"], one["accuracy_matrix"][k]["mean"])


def _cifar100_pickles(root: str, per_class_train: int = 2, per_class_test: int = 1) -> None:
    """A small CIFAR-100 in its python-pickle layout (cifar-100-python/), each
    class a noisy prototype so the labels matter."""
    rng = np.random.default_rng(0)
    d = os.path.join(root, "cifar-100-python")
    os.makedirs(d)
    protos = rng.integers(0, 256, (100, 3072))
    for split, per in (("train", per_class_train), ("test", per_class_test)):
        fine = np.repeat(np.arange(100), per)
        rng.shuffle(fine)
        x = np.clip(protos[fine] + rng.integers(-30, 30, (fine.size, 3072)), 0, 255).astype(np.uint8)
        with open(os.path.join(d, split), "wb") as f:
            pickle.dump({b"data": x, b"fine_labels": fine.tolist(), b"coarse_labels": (fine // 5).tolist(),
                         b"filenames": [b"x.png"] * fine.size, b"batch_label": split.encode()}, f)
    with open(os.path.join(d, "meta"), "wb") as f:
        pickle.dump({b"fine_label_names": [f"c{i}".encode() for i in range(100)],
                     b"coarse_label_names": [f"s{i}".encode() for i in range(20)]}, f)


def test_main_job_serena_cifar100_official_stream_equals_device(tmp_path):
    """``configs/serena_cifar100.py:official`` (per-seed class order, online
    data-incremental) at tiny width on generated CIFAR-100 pickles."""
    from clj.config import load_config
    from clj.data.prepare import main as prepare
    from conftest import apply_overrides

    data_dir = str(tmp_path / "data")
    _cifar100_pickles(str(tmp_path / "src"))
    assert prepare(["cifar100", "--source", str(tmp_path / "src"), "--data_dir", data_dir, "--no_progress"]) == 0
    out = {}
    for placement in ("device", "stream"):
        c = load_config("serena_cifar100", "official")
        apply_overrides(c, {"data_dir": data_dir, "data.placement": placement, "model.width": 4,
                            "loop.eval_batch_size": 100, "progress": False, "plots": False})
        wd = str(tmp_path / placement)
        r = Runner(c, wd)
        assert r.placement == placement
        assert not np.array_equal(r.scenario.class_order, np.arange(100))
        out[placement] = _matrices(r, wd, 1)
    _assert_same(out["device"], out["stream"])
