"""Coil (clj.methods.cil.coil): the Sinkhorn plan against a float64
reference of POT's iteration and POT's own output, its marginals, the
prospective transport with its calibration, the step's transport of the new
rows, the config check, a Split-digits run of 3 seeds, and 4 simulated
devices against 1."""
import json
import textwrap

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from clj.config import ConfigError, load_config, validate
from clj.methods import get_spec
from clj.methods.cil import coil
from clj.methods.common import TaskInfo
from conftest import run_with_devices


def pot_sinkhorn(a, b, M, reg, num_iters=1000):
    """POT 0.9's ``sinkhorn_knopp`` in float64, written out (stops when the
    column error is below 1e-9, checked every 10 iterations, or keeps the
    last finite scalings when they overflow)."""
    a, b, M = (np.asarray(v, np.float64) for v in (a, b, M))
    K = np.exp(-M / reg)
    Kp = K / a[:, None]
    u, v = np.ones(len(a)) / len(a), np.ones(len(b)) / len(b)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
        for i in range(num_iters):
            up, vp = u, v
            v = b / (K.T @ u)
            u = 1.0 / (Kp @ v)
            if not (np.all(np.isfinite(u)) and np.all(np.isfinite(v))):
                u, v = up, vp
                break
            if i % 10 == 0 and np.linalg.norm((u[:, None] * K * v[None, :]).sum(0) - b) < 1e-9:
                break
    return u[:, None] * K * v[None, :]


# ot.sinkhorn(np.ones(4) / 4, np.ones(2) / 4, M, 0.464) with POT 0.9.7 (float64), M below: PyCIL's
# prospective case of 4 old and 2 new classes (new weights 1/K, total mass 1/2).
POT_M = [[0.5149998, 0.8793016], [0.6481797, 0.2333394], [0.572504, 0.48124894], [0.4745454, 0.84655434]]
POT_PLAN = [[0.16432897, 0.08567103], [0.06587625, 0.18412375], [0.1045329, 0.1454671], [0.16526188, 0.08473812]]


def test_sinkhorn_marginals_and_reference():
    rng = np.random.default_rng(0)
    a = rng.uniform(0.5, 1.5, 5)
    a /= a.sum()
    b = rng.uniform(0.5, 1.5, 3)
    b /= b.sum()
    M = rng.uniform(0.0, 2.0, (5, 3))
    P = np.asarray(jax.jit(coil.sinkhorn, static_argnums=4)(a, b, M, 0.464, 1000))
    np.testing.assert_allclose(P.sum(1), a, atol=1e-6)  # rows: the last update is u's
    np.testing.assert_allclose(P.sum(0), b, atol=1e-5)  # columns: converged
    np.testing.assert_allclose(P, pot_sinkhorn(a, b, M, 0.464), atol=1e-6)
    assert (P >= 0).all()
    # PyCIL's unequal masses (1/K per new class): rows still sum to a, equal to POT's result
    P = np.asarray(coil.sinkhorn(jnp.full(4, 0.25), jnp.full(2, 0.25), jnp.asarray(POT_M), 0.464, 1000))
    np.testing.assert_allclose(P, POT_PLAN, atol=2e-6)
    np.testing.assert_allclose(P, pot_sinkhorn(np.full(4, 0.25), np.full(2, 0.25), POT_M, 0.464), atol=2e-6)
    np.testing.assert_allclose(P.sum(1), 0.25, atol=1e-6)
    # a mass ratio of 3 overflows float64 scalings in POT's loop; the rescaled float32 loop does not
    M = rng.uniform(0.0, 2.0, (15, 5))
    P = np.asarray(coil.sinkhorn(jnp.full(15, 1 / 15), jnp.full(5, 1 / 15), jnp.asarray(M), 0.464, 1000))
    assert np.isfinite(P).all()
    np.testing.assert_allclose(P, pot_sinkhorn(np.full(15, 1 / 15), np.full(5, 1 / 15), M, 0.464), atol=1e-6)


def test_minkowski_cdist_by_hand():
    a = jnp.asarray([[0.0, 0.0], [1.0, 2.0]])
    b = jnp.asarray([[1.0, 0.0], [0.0, 0.0]])
    d = np.asarray(coil.minkowski_cdist(a, b, 3.0))
    np.testing.assert_allclose(d, [[1.0, 0.0], [2.0, (1 + 8) ** (1 / 3)]], atol=1e-6)


def test_prospective_plan_moves_normalised_rows_and_calibrates():
    rng = np.random.default_rng(1)
    old_means = rng.normal(size=(3, 4))
    old_means /= np.linalg.norm(old_means, axis=1, keepdims=True)
    new_means = rng.normal(size=(2, 4))
    new_means /= np.linalg.norm(new_means, axis=1, keepdims=True)
    W = rng.normal(size=(3, 4)) * 2.0
    rows, gamma, P = coil.prospective_plan(jnp.asarray(old_means), jnp.asarray(new_means), jnp.asarray(W), 0.464, 3.0,
                                           1000)
    M = np.abs(old_means[:, None] - new_means[None]).__pow__(3).sum(-1) ** (1 / 3)
    Pr = pot_sinkhorn(np.full(3, 1 / 3), np.full(2, 1 / 3), M, 0.464)
    np.testing.assert_allclose(np.asarray(P), Pr, atol=1e-6)
    hat = 3 * Pr.T @ (W / np.linalg.norm(W, axis=1, keepdims=True))
    g = np.linalg.norm(W, axis=1).mean() / np.linalg.norm(hat, axis=1).mean()
    np.testing.assert_allclose(float(gamma), g, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(rows), hat * g, rtol=1e-4, atol=1e-6)
    # calibration: the transported rows have the old rows' mean norm
    np.testing.assert_allclose(np.linalg.norm(np.asarray(rows), axis=1).mean(), np.linalg.norm(W, axis=1).mean(),
                               rtol=1e-5)


def _cfg(**over):
    c = load_config("coil_digits")
    c.model = ml_collections.ConfigDict(dict(name="mlp", hidden=(32,), dtype="float32"))
    c.cil.update(dict(budget="fixed", memory_size=60, feature_batch_size=128))
    c.train.batch_size = 32
    c.progress = False
    c.plots = False
    for k, v in over.items():
        node = c
        *path, last = k.split(".")
        for p in path:
            node = node[p]
        node[last] = v
    return c


def test_first_step_of_a_task_sets_the_new_rows_by_transport():
    from clj.train.loop import load_scenario

    c = _cfg()
    sc = load_scenario(c)
    s = coil.init(jax.random.PRNGKey(0), c, sc)
    step, end = jax.jit(coil.train_step), jax.jit(coil.end_task)
    aug = s.static.augment

    def info(t):
        return TaskInfo(task_id=t, classes=tuple(sc.tasks[t].classes), num_steps=4, steps_per_epoch=2,
                        num_classes=sc.num_classes)

    def batch(t):
        idx = sc.tasks[t].train_idx[:32]
        return {"x": aug(jnp.asarray(sc.x_train[idx]), None, train=False), "y": jnp.asarray(sc.y_train[idx])}

    s = coil.begin_task(s, info(0))
    for k in range(4):
        s, m = step(s, batch(0), jax.random.PRNGKey(k))
    idx = sc.tasks[0].train_idx
    s = end(s, {"x": jnp.asarray(sc.x_train[idx]), "y": jnp.asarray(sc.y_train[idx]), "info": info(0)})
    s = coil.begin_task(s, info(1))
    b = batch(1)
    nb = s.static.st.new_per_step if s.static.batching == "pycil" else 32
    want = jax.jit(coil.prospective)(s, b["x"][:nb], b["y"][:nb])
    s1, m = step(s, b, jax.random.PRNGKey(9))
    K, N = s.static.st.known, s.static.st.total
    np.testing.assert_allclose(np.asarray(s1.ot_new[K:N]), np.asarray(want.ot_new[K:N]), rtol=1e-5, atol=1e-6)
    assert float(jnp.abs(s1.ot_new[K:N]).sum()) > 0 and float(jnp.abs(s1.ot_new[:K]).sum()) == 0
    np.testing.assert_allclose(float(s1.calib), float(want.calib), rtol=1e-6)
    assert float(m["ot"]) > 0 and np.isfinite(float(m["loss"]))
    # the new rows started from the transported ones: one SGD step moved them only a little
    moved = np.abs(np.asarray(s1.net.params["fc"]["weight"][K:N]) - np.asarray(want.ot_new[K:N])).max()
    assert moved < 0.5 * np.abs(np.asarray(want.ot_new[K:N])).max()
    # the old network did not change
    for a, bb in zip(jax.tree.leaves(s.old_params), jax.tree.leaves(s1.old_params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(bb))


def test_bad_config_is_refused_before_any_work():
    for field, value in (("sinkhorn_reg", 0.0), ("ot_every", 0), ("norm_p", -1.0), ("reg_term", -1.0)):
        c = load_config("coil_digits")
        c.coil[field] = value
        with pytest.raises(ConfigError, match=f"coil.{field}="):
            validate(c)
    assert get_spec("coil") is get_spec("coil")


def test_split_digits_three_seeds(tmp_path):
    """Split-digits (2 tasks x 5 classes: two compiled tasks), MLP 64, 3
    epochs per task, 100 exemplars, seeds 0-2 vmapped in one program:
    class-IL final accuracy well above fine-tuning's 50% (measured: 0.920 /
    0.915 / 0.915; 5 tasks x 2 classes gave 0.63 / 0.45 / 0.57)."""
    from clj.train import Runner

    c = _cfg(**{"model.hidden": (64,), "cil.memory_size": 100, "train.init_epochs": 3, "train.epochs": 3,
                "num_seeds": 3, "scenario.increment": 5})
    Runner(c, str(tmp_path)).run()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["seeds"] == [0, 1, 2] and summary["status"] == "completed"
    accs = [json.loads((tmp_path / f"seed_{i}" / "results.json").read_text())["metrics"]["class_il"]
            ["final_average_accuracy"] for i in range(3)]
    assert len(set(accs)) == 3, accs  # three different seeds
    assert np.mean(accs) >= 0.85 and min(accs) >= 0.8, accs


SHARDED = textwrap.dedent("""
    import os, json
    import jax
    assert len(jax.devices()) == 4
    from test_coil import tiny_config
    from clj.train.loop import Runner
    c = tiny_config({method!r})
    r = Runner(c, os.path.join({tmp!r}, "d4"))
    assert r.shard_batch and r.n_dev == 4
    res = r.run()
    r1 = Runner(c, os.path.join({tmp!r}, "d1"), devices=jax.devices()[:1])
    assert not r1.shard_batch and r1.n_dev == 1
    res1 = r1.run()
    print("RESULT" + json.dumps({{"acc": res["accuracy_matrix"]["class_il"], "acc1": res1["accuracy_matrix"]["class_il"],
                                  "dev": res["extra"]["devices"]}}))
""")


def tiny_config(method="coil"):
    """Two tasks of 2 classes of 8x8x1 synthetic images, MLP 16, 2 epochs of 2 steps per task."""
    from clj.config import base_config
    from clj.methods.sections import section_config

    c = base_config()
    c.method = method
    c.dataset = "synthetic"
    c.synthetic.image_shape = (8, 8, 1)
    c.synthetic.num_classes = 4
    c.synthetic.train_per_class = 8
    c.synthetic.test_per_class = 4
    c.scenario.increment = 2
    c.model = ml_collections.ConfigDict(dict(name="mlp", hidden=(16,), dtype="float32"))
    c.optim.update(dict(lr=0.1, momentum=0.9, weight_decay=5e-4))
    c.train.batch_size = 8
    c.train.epochs = 2
    c.cil = section_config("cil", memory_size=6, update_milestones=(), feature_batch_size=16)
    c.progress = False
    c.plots = False
    c.loop.steps_per_call = 1
    if method == "coil":
        c.coil = section_config("coil", ot_every=1)
    else:
        c.foster = section_config("foster", compression_epochs=1)
    return c


def test_four_devices_equal_one(tmp_path):
    out = run_with_devices(SHARDED.format(tmp=str(tmp_path), method="coil"))
    r = json.loads([l for l in out.splitlines() if l.startswith("RESULT")][-1][len("RESULT"):])
    assert r["dev"] == 4 and len(r["acc"]) == 2
    np.testing.assert_allclose(r["acc"], r["acc1"], atol=1e-6)
