"""FOSTER (clj.methods.cil.foster): the class weights and the balanced KD by
hand, the networks a task starts from, the compression bringing the student
closer to the teacher on the distillation set (KL decreases) while the
teacher stays fixed, the config check, a Split-digits run of 3 seeds, and 4
simulated devices against 1."""
import dataclasses
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from clj.config import ConfigError, load_config, validate
from clj.methods.cil import foster
from clj.methods.common import TaskInfo
from conftest import run_with_devices
from test_coil import SHARDED


def test_class_weights_by_hand():
    counts = (20, 20, 300, 300)
    w = np.array([(1 - 0.96) / (1 - 0.96 ** n) for n in counts])
    np.testing.assert_allclose(foster.class_weights(counts, 0.96), w / w.sum() * 4, rtol=1e-12)
    assert foster.class_weights((5, 7, 100), 0.0) == pytest.approx((1.0, 1.0, 1.0))
    # the rarer (old, exemplar-only) classes weigh more
    ws = foster.class_weights(counts, 0.97)
    assert ws[0] > ws[2] and sum(ws) == pytest.approx(4.0)


def test_balanced_kd_by_hand():
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
    w = np.array([2.0, 1.5, 0.5, 0.5, 7.0])  # the last class is unseen (total = 4)
    T = 2.0
    p = np.exp(t[:, :4] / T)
    p /= p.sum(1, keepdims=True)
    q = p * w[:4]
    q /= q.sum(1, keepdims=True)
    ls = s[:, :4] / T - np.log(np.exp(s[:, :4] / T).sum(1, keepdims=True))
    want = -(q * ls).sum(1).mean()
    got = foster.balanced_kd(jnp.asarray(s), jnp.asarray(t), jnp.asarray(w), T, 4)
    np.testing.assert_allclose(float(got), want, rtol=1e-5)
    # unit weights: the plain softened KD over the seen classes
    from clj.methods.cil import common as cc

    np.testing.assert_allclose(float(foster.balanced_kd(jnp.asarray(s), jnp.asarray(t), jnp.ones(5), T, 4)),
                               float(cc.kd_loss(jnp.asarray(s), jnp.asarray(t), 4, T)), rtol=1e-5)


def _cfg(**over):
    c = load_config("foster_digits")
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


@pytest.fixture(scope="module")
def after_task0():
    from clj.train.loop import load_scenario

    c = _cfg(**{"train.epochs": 3, "foster.compression_epochs": 5})
    sc = load_scenario(c)
    s = foster.init(jax.random.PRNGKey(0), c, sc)
    info0 = TaskInfo(task_id=0, classes=tuple(sc.tasks[0].classes), num_steps=6, steps_per_epoch=2,
                     num_classes=sc.num_classes)
    s = foster.begin_task(s, info0)
    step = jax.jit(foster.train_step)
    for k in range(6):
        s, _ = step(s, _batch(sc, s, 0, k), jax.random.PRNGKey(k))
    idx = sc.tasks[0].train_idx
    s = jax.jit(foster.end_task)(s, {"x": jnp.asarray(sc.x_train[idx]), "y": jnp.asarray(sc.y_train[idx]),
                                     "info": info0})
    return sc, s, step


def _batch(sc, s, t, k):
    idx = np.random.default_rng([t, k]).choice(sc.tasks[t].train_idx, 32, replace=False)
    return {"x": s.static.augment(jnp.asarray(sc.x_train[idx]), None, train=False),
            "y": jnp.asarray(sc.y_train[idx], jnp.int32)}


def _info1(sc, steps=16):
    return TaskInfo(task_id=1, classes=tuple(sc.tasks[1].classes), num_steps=steps, steps_per_epoch=2,
                    num_classes=sc.num_classes)


def _eq(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_task_starts_from_the_old_network(after_task0):
    sc, s0, _ = after_task0
    s = foster.begin_task(s0, _info1(sc))
    D, K = s.static.feat_dim, s.static.st.known
    old_head = s0.net.params["new"]["head"]
    _eq(s.old["params"], s0.net.params["new"])                       # old = the task-0 network
    _eq(s.net.params["new"]["backbone"], s0.net.params["new"]["backbone"])   # new backbone: a copy
    _eq(s.student.params["backbone"], s0.net.params["new"]["backbone"])      # student backbone: a copy
    fc = s.net.params["fc"]
    np.testing.assert_array_equal(np.asarray(fc["kernel"][:D, :K]), np.asarray(old_head["kernel"][:, :K]))
    np.testing.assert_array_equal(np.asarray(fc["bias"][:K]), np.asarray(old_head["bias"][:K]))
    np.testing.assert_array_equal(np.asarray(s.student.params["head"]["kernel"][:, :K]),
                                  np.asarray(old_head["kernel"][:, :K]))
    assert s.static.boost_steps == 6 and len(s.static.w_boost) == s.static.st.total
    # oofc="az": the old-feature x new-class block starts (and stays) at zero
    c = _cfg(**{"foster.oofc": "az"})
    s_az = foster.begin_task(s0.replace(static=dataclasses.replace(s0.static, oofc="az")), _info1(sc))
    assert float(jnp.abs(s_az.net.params["fc"]["kernel"][:D, K:]).max()) == 0.0
    validate(c)


def test_compression_brings_the_student_to_the_teacher(after_task0):
    sc, s0, step = after_task0
    s = foster.begin_task(s0, _info1(sc))
    nb = s.static.boost_steps
    for k in range(nb):  # boosting: the old network is frozen, the student untouched
        s, m = step(s, _batch(sc, s, 1, k), jax.random.PRNGKey(100 + k))
        assert float(m["compressing"]) == 0.0 and np.isfinite(float(m["loss"]))
    _eq(s.old, foster.begin_task(s0, _info1(sc)).old)
    # the distillation set: the compression's batches (mixed with exemplars as the steps draw them)
    xs = jnp.concatenate([_batch(sc, s, 1, k)["x"] for k in range(nb, 16)]
                         + [s.static.augment(s0.mem.x[:int(s0.mem.count())], None, train=False)])
    gap0 = float(jax.jit(foster.distill_gap)(s, xs))
    teacher = s.net.params
    for k in range(nb, 16):
        s, m = step(s, _batch(sc, s, 1, k), jax.random.PRNGKey(100 + k))
        assert float(m["compressing"]) == 1.0 and float(m["bkd"]) > 0
    gap1 = float(jax.jit(foster.distill_gap)(s, xs))
    assert gap1 < 0.7 * gap0, (gap0, gap1)
    _eq(s.net.params, teacher)  # compression changes only the student
    assert int(s.net.task_step) == 16 and int(s.student.task_step) == 16 - nb


def test_bad_config_is_refused_before_any_work():
    for field, value, msg in (("beta1", 1.0, "foster.beta1="), ("oofc", "x", "foster.oofc="),
                              ("boost_loss", "focal", "foster.boost_loss="), ("compression_epochs", 0,
                                                                               "foster.compression_epochs="),
                              ("predict_net", "old", "foster.predict_net=")):
        c = load_config("foster_digits")
        c.foster[field] = value
        with pytest.raises(ConfigError, match=msg):
            validate(c)


def test_split_digits_three_seeds(tmp_path):
    """Split-digits (2 tasks x 5 classes: two compiled tasks), MLP 64, 3
    epochs in task 0 and 2 boosting + 2 compression epochs in task 1, 100
    exemplars, seeds 0-2 vmapped in one program; teacher prediction
    (PyCIL's).  Measured: 0.927 / 0.909 / 0.883 final class-IL (5 tasks x 2
    classes: 0.855 / 0.834 / 0.805)."""
    from clj.train import Runner

    c = _cfg(**{"model.hidden": (64,), "cil.memory_size": 100, "train.init_epochs": 3, "train.epochs": 2,
                "foster.compression_epochs": 2, "num_seeds": 3, "scenario.increment": 5})
    Runner(c, str(tmp_path)).run()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["seeds"] == [0, 1, 2] and summary["status"] == "completed"
    accs = [json.loads((tmp_path / f"seed_{i}" / "results.json").read_text())["metrics"]["class_il"]
            ["final_average_accuracy"] for i in range(3)]
    assert len(set(accs)) == 3, accs
    assert np.mean(accs) >= 0.85 and min(accs) >= 0.8, accs


def test_four_devices_equal_one(tmp_path):
    out = run_with_devices(SHARDED.format(tmp=str(tmp_path), method="foster"))
    r = json.loads([l for l in out.splitlines() if l.startswith("RESULT")][-1][len("RESULT"):])
    assert r["dev"] == 4 and len(r["acc"]) == 2
    np.testing.assert_allclose(r["acc"], r["acc1"], atol=1e-6)


def test_boost_loss_variants_and_weight_aligning_by_hand():
    from clj.methods.cil import common as cc

    counts = (20, 20, 300, 300)
    st = cc.TaskStatics(task=1, known=2, total=4)
    base = foster.Static(num_classes=5, memory_size=40, class_sizes=(300,) * 5, st=st,
                         w_boost=foster.class_weights(counts, 0.96))
    assert foster.task_counts(base, 2, 4) == counts  # quota 40 // 2 for old classes, images for new
    z = jnp.asarray([[1.0, -2.0, 0.5, 3.0, 9.0]])
    w = np.asarray(base.w_boost)
    got = np.asarray(foster.adjusted_logits(base, z))
    np.testing.assert_allclose(got[0, :4], np.asarray(z)[0, :4] / w, rtol=1e-6)
    assert got[0, 4] < -1e8  # unseen class masked
    la = np.asarray(foster.adjusted_logits(dataclasses.replace(base, boost_loss="logit_adjust"), z))
    np.testing.assert_allclose(la[0, :4], np.asarray(z)[0, :4] + np.log(np.asarray(counts) / 640.0), rtol=1e-6)
    ce = np.asarray(foster.adjusted_logits(dataclasses.replace(base, boost_loss="ce"), z))
    np.testing.assert_allclose(ce[0, :4], np.asarray(z)[0, :4])
    # weight aligning with value: new columns x mean||old|| / mean||new|| x value^(known / new)
    k = jnp.asarray([[3.0, 0.0, 1.0, 0.0, 5.0], [4.0, 2.0, 0.0, 2.0, 5.0]])
    out = np.asarray(foster.align(k, 2, 4, 0.5))
    g = (5.0 + 2.0) / 2 / ((1.0 + 2.0) / 2) * 0.5 ** (2 / 2)
    np.testing.assert_allclose(out[:, 2:4], np.asarray(k)[:, 2:4] * g, rtol=1e-6)
    np.testing.assert_array_equal(out[:, [0, 1, 4]], np.asarray(k)[:, [0, 1, 4]])
