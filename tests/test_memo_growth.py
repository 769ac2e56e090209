"""MEMO / DER growth invariants and the four methods sharded on 4 simulated
devices (issue 6)."""
import json
import os
import textwrap

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from clj.methods.sections import section_config
from clj.config import base_config
from clj.data import load_dataset
from clj.methods.cil import common as cc
from clj.methods.cil import expand
from clj.methods.common import TaskInfo
from clj.scenarios import make_scenario
from conftest import run_with_devices

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_config(method="memo", train_base=True):
    c = base_config()
    c.method = method
    c.dataset = "synthetic"
    c.synthetic.image_shape = (8, 8, 3)
    c.synthetic.num_classes = 4
    c.synthetic.train_per_class = 8
    c.synthetic.test_per_class = 4
    c.scenario.increment = 2
    c.model = ml_collections.ConfigDict(dict(name="resnet32", num_blocks=1))
    c.optim.update(dict(lr=0.1, momentum=0.9, weight_decay=5e-4))
    c.train.batch_size = 8
    c.train.epochs = 1
    c.replay.buffer_size = 4  # unused by these methods
    c.cil = section_config("cil", memory_size=6, train_base=train_base, update_milestones=(), feature_batch_size=16)
    return c


def _scenario(c):
    ds = load_dataset("synthetic", None, seed=0, image_shape=(8, 8, 3), num_classes=4, train_per_class=8,
                      test_per_class=4)
    return make_scenario(ds, "class_il", increment=2)


def _batch(sc, t, key):
    idx = sc.tasks[t].train_idx[:8]
    x = jnp.asarray(sc.x_train[idx], jnp.float32) / 255.0
    return {"x": x, "x_raw": jnp.asarray(sc.x_train[idx]), "y": jnp.asarray(sc.y_train[idx], jnp.int32),
            "task_id": jnp.full((8,), t, jnp.int32), "new_task": jnp.asarray(False)}


def _info(sc, t):
    return TaskInfo(task_id=t, classes=sc.tasks[t].classes, num_steps=2, steps_per_epoch=1,
                    num_classes=sc.num_classes)


def _end(state, sc, t):
    tr = sc.tasks[t].train_idx
    return expand.end_task(state, {"x": jnp.asarray(sc.x_train[tr]), "y": jnp.asarray(sc.y_train[tr], jnp.int32),
                                   "info": _info(sc, t)})


def _leaves_equal(a, b):
    return all(bool(jnp.array_equal(x, y)) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))


@pytest.mark.parametrize("train_base", [False, True])
def test_memo_growth_and_freezing(train_base):
    c = tiny_config("memo", train_base)
    sc = _scenario(c)
    s = expand.init(jax.random.PRNGKey(0), c, sc, "memo")
    step = jax.jit(expand.train_step)
    s = expand.begin_task(s, _info(sc, 0))
    for k in range(2):
        s, m = step(s, _batch(sc, 0, k), jax.random.PRNGKey(k))
    # head rows of the not-yet-live block stay zero
    assert float(jnp.abs(s.net.params["head"]["kernel"][s.static.network.D:]).max()) == 0.0
    s = _end(s, sc, 0)
    assert int(s.mem.count()) == 6  # 3 per class for 2 classes (floor(6 / 2))
    s = expand.begin_task(s, _info(sc, 1))
    p, bs = s.net.params, s.net.batch_stats
    take = lambda tree, i: jax.tree_util.tree_map(lambda a: a[i], tree)  # noqa: E731
    # the new specialized block starts equal to the previous one (BN statistics too)
    assert _leaves_equal(take(p["spec"], 1), take(p["spec"], 0))
    assert _leaves_equal(take(bs["spec"], 1), take(bs["spec"], 0))
    # old classes x old features of the head are copied; new-block rows are live
    assert s.static.st.replay > 0
    old_block0, old_stats0 = take(p["spec"], 0), take(bs["spec"], 0)
    gen_p, gen_s = p["gen"], bs["gen"]
    for k in range(3):
        s, m = step(s, _batch(sc, 1, k), jax.random.PRNGKey(10 + k))
        assert np.isfinite(float(m["loss"])) and float(m["aux"]) > 0
    p2, bs2 = s.net.params, s.net.batch_stats
    assert _leaves_equal(take(p2["spec"], 0), old_block0)       # old block: bit-identical
    assert _leaves_equal(take(bs2["spec"], 0), old_stats0)      # and its BN statistics
    assert not _leaves_equal(take(p2["spec"], 1), old_block0)   # the newest block trains
    assert _leaves_equal(p2["gen"], gen_p) == (not train_base)
    assert _leaves_equal(bs2["gen"], gen_s) == (not train_base)
    # weight alignment at the end of task 1: equal mean norms of old / new columns
    s = _end(s, sc, 1)
    n = np.linalg.norm(np.asarray(s.net.params["head"]["kernel"]), axis=0)
    np.testing.assert_allclose(n[2:4].mean(), n[:2].mean(), rtol=1e-5)
    assert int(s.mem.count()) == 4  # floor(6 / 4) = 1 per class
    assert np.bincount(np.asarray(s.mem.y[:4]), minlength=4).tolist() == [1, 1, 1, 1]
    mem = expand.memory_bytes(s)
    assert mem["buffer"] == int(s.mem.count()) * 8 * 8 * 3
    assert mem["model"] == 4 * expand.model_param_count(s)


def test_memory_quota_after_two_tasks():
    c = tiny_config("dynamic_er")
    sc = _scenario(c)
    s = expand.init(jax.random.PRNGKey(1), c, sc, "dynamic_er")
    for t in range(2):
        s = expand.begin_task(s, _info(sc, t))
        s, _ = jax.jit(expand.train_step)(s, _batch(sc, t, 0), jax.random.PRNGKey(t))
        s = _end(s, sc, t)
    # floor(6 / 4) = 1 per class after task 1, 4 classes
    assert np.bincount(np.asarray(s.mem.y[: int(s.mem.count())]), minlength=4).tolist() == [1, 1, 1, 1]
    # DER: the live model is two whole backbones, FC excluded
    assert expand.model_param_count(s) == 2 * expand.split_param_counts("dynamic_er", c.model, (8, 8, 3))["total"]


SHARDED = textwrap.dedent("""
    import os, json
    import jax
    assert len(jax.devices()) == 4
    from test_memo_growth import tiny_config
    from clj.train.loop import Runner
    m = {method!r}
    c = tiny_config(m)
    c.progress = False
    c.plots = False
    c.loop.steps_per_call = 1
    r = Runner(c, os.path.join({tmp!r}, m))
    assert r.shard_batch and r.n_dev == 4
    res = r.run()
    out = {{"acc": res["accuracy_matrix"]["class_il"], "mem": res["memory_bytes"],
            "ex": res["extra"]["exemplars"], "dev": res["extra"]["devices"]}}
    if m == "memo":  # the same run on one device (a grown network: the hardest case)
        r1 = Runner(c, os.path.join({tmp!r}, m + "_1"), devices=jax.devices()[:1])
        assert not r1.shard_batch and r1.n_dev == 1
        out["acc_1dev"] = r1.run()["accuracy_matrix"]["class_il"]
    print("RESULT" + json.dumps(out))
""")


# One child process per method (WA shares iCaRL's step), so a parallel test run spreads them.
@pytest.mark.parametrize("method", ["icarl", "memo", "dynamic_er"])
def test_methods_sharded_on_four_devices(tmp_path, method):
    code = SHARDED.format(tmp=str(tmp_path), method=method)
    stdout = run_with_devices(code)  # raises with stderr on failure; no wall-clock limit
    line = [l for l in stdout.splitlines() if l.startswith("RESULT")][-1]
    r = json.loads(line[len("RESULT"):])
    assert r["dev"] == 4
    assert len(r["acc"]) == 2
    assert all(0.0 <= a <= 1.0 for row in r["acc"] for a in row)
    assert r["ex"] == 4  # floor(6 / 4) per class x 4 classes
    assert r["mem"]["buffer"] == 4 * 8 * 8 * 3
    assert r["mem"]["total"] == r["mem"]["buffer"] + r["mem"]["model"]
    # float32 bytes of the live model after two tasks (FC excluded): DER (Yan) two whole
    # backbones; iCaRL one backbone and MEMO shared blocks + two specialized stages, both less
    c = tiny_config(method)
    counts = expand.split_param_counts("dynamic_er", c.model, (8, 8, 3))
    if method == "dynamic_er":
        assert r["mem"]["model"] == 4 * 2 * counts["total"]
    else:
        assert 0 < r["mem"]["model"] < 4 * 2 * counts["total"]
    if "acc_1dev" in r:  # sharding the batch over 4 devices changes nothing but the reduction order
        np.testing.assert_allclose(r["acc"], r["acc_1dev"], atol=1e-6)
