"""BiC (clj.methods.cil.bic): the bias-correction layer changes only the new
classes' logits (old ones bit-identical, by hand and through stage 2), the
stage-2 loss by hand, the held-out split, the config checks, a 3-seed
Split-digits run and the same run on 4 simulated devices."""
import glob
import json
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clj.config import ConfigError, load_config, validate
from clj.methods import get_spec
from clj.methods.cil import bic
from clj.methods.common import TaskInfo
from conftest import run_with_devices

THREE_TASKS = {"scenario.init_cls": 4, "scenario.increment": 3}


def _cfg(**over):
    c = load_config("bic_digits")
    c.progress = False
    c.plots = False
    for k, v in over.items():
        node = c
        *path, last = k.split(".")
        for p in path:
            node = node[p]
        node[last] = v
    return c


def test_bias_layer_changes_only_its_task_columns():
    z = jax.random.normal(jax.random.PRNGKey(0), (6, 5)) * 3.0
    class_task = jnp.asarray([0, 0, 1, 1, 2])
    bias = jnp.asarray([[1.0, 0.0], [1.0, 0.0], [0.7, -0.3]])
    out = np.asarray(bic.bias_correct(z, bias, class_task))
    np.testing.assert_array_equal(out[:, :4], np.asarray(z)[:, :4])            # bit-identical
    np.testing.assert_allclose(out[:, 4], 0.7 * np.asarray(z)[:, 4] - 0.3, rtol=1e-6)
    bias = jnp.asarray([[1.0, 0.0], [1.5, 0.25], [0.7, -0.3]])  # task 1 trained earlier
    out = np.asarray(bic.bias_correct(z, bias, class_task))
    np.testing.assert_allclose(out[:, 2:4], 1.5 * np.asarray(z)[:, 2:4] + 0.25, rtol=1e-6)
    np.testing.assert_array_equal(out[:, :2], np.asarray(z)[:, :2])


def test_stage2_loss_by_hand():
    q = jnp.asarray([[2.0, 0.0, 1.0, 5.0]])  # class 3 unseen (total = 3)
    y = jnp.asarray([2])
    p = np.exp([2.0, 0.0, 1.0]) / np.exp([2.0, 0.0, 1.0]).sum()
    want_ce = -np.log(p[2])
    want_sce = -(p[2] - np.log(np.exp(p).sum()))   # PyCIL: cross-entropy of the probabilities
    ok = jnp.asarray([True])
    assert float(bic.stage2_loss(q, y, ok, 3, "ce")) == pytest.approx(want_ce, rel=1e-6)
    assert float(bic.stage2_loss(q, y, ok, 3, "softmax_ce")) == pytest.approx(want_sce, rel=1e-6)


def test_holdout_is_deterministic_and_near_k_per_class():
    x = jax.random.randint(jax.random.PRNGKey(3), (4000, 8, 8, 1), 0, 256).astype(jnp.uint8)
    salt = jnp.uint32(12345)
    h = jax.jit(bic.content_hash)
    h1 = np.asarray(h(x, salt))
    h2 = np.concatenate([np.asarray(h(x[i:i + 500], salt)) for i in range(0, 4000, 500)])
    np.testing.assert_array_equal(h1, h2)  # the same bytes, any batch split
    assert (h1 < 2 ** 31).mean() == pytest.approx(0.5, abs=0.03)  # uniform
    s = bic.Static(num_classes=4, val_per_class=20, val_thresh=(0, 0, 2 ** 32 // 100, 2 ** 32 // 100))
    y = jnp.asarray(np.repeat([0, 1, 2, 3], 1000))
    held = np.asarray(bic.holdout(s, x, y, salt))
    assert held[:2000].sum() == 0                       # old classes: never from the new data
    assert 5 <= held[2000:3000].sum() <= 20             # about k = 10 of 1000 (k / n = 1 %)
    # the memory: exactly k slots of every stored class (all of a smaller class)
    from clj.replay import exemplars as ex

    mem = ex.init_memory(12, (8, 8, 1), 4, 2)
    mem = mem.replace(y=jnp.asarray([0, 0, 0, 0, 0, 1, 1, 2, 2, 2, -1, -1]))
    v = np.asarray(bic.memory_holdout(mem, 2, jax.random.PRNGKey(0)))
    assert [int(v[np.asarray(mem.y) == c].sum()) for c in (0, 1, 2)] == [2, 2, 2] and not v[10:].any()


def _state_after_task0(c):
    """A State that has trained task 0 a few steps and is at task 1's boundary."""
    from clj.train.loop import load_scenario

    sc = load_scenario(c)
    s = bic.init(jax.random.PRNGKey(0), c, sc)
    infos = [TaskInfo(task_id=t, classes=tuple(sc.tasks[t].classes), num_steps=2, steps_per_epoch=1, num_classes=10)
             for t in (0, 1)]
    s = bic.begin_task(s, infos[0])
    # the memory after task 0 without herding (cheap to compile): 100 images of each class
    y0 = np.asarray(sc.y_train)
    idx = np.concatenate([np.flatnonzero(y0 == c)[:100] for c in sc.tasks[0].classes])
    mem = s.mem.replace(x=s.mem.x.at[:200].set(jnp.asarray(sc.x_train[idx])),
                        y=s.mem.y.at[:200].set(jnp.asarray(y0[idx], jnp.int32)),
                        rank=s.mem.rank.at[:200].set(jnp.tile(jnp.arange(100, dtype=jnp.int32), 2)))
    s = bic.begin_task(s.replace(mem=mem), infos[1])
    return sc, s


def test_stage2_changes_only_the_new_class_logits():
    c = _cfg(**{"bic.stage2_epochs": 3})
    sc, s = _state_after_task0(c)
    assert s.static.val_per_class == int(0.1 * 200 / 2) and int(s.mem_val.sum()) == 2 * 10
    idx = np.asarray(sc.tasks[1].train_idx)
    tx, ty = jnp.asarray(sc.x_train[idx]), jnp.asarray(sc.y_train[idx], jnp.int32)
    s2 = jax.jit(bic.bias_correction)(s, tx, ty)
    xt = s.static.augment(jnp.asarray(sc.x_test[:64]), None, train=False)
    before, after = np.asarray(bic.predict(s, xt)), np.asarray(bic.predict(s2, xt))
    np.testing.assert_array_equal(after[:, :2], before[:, :2])          # old classes: bit-identical
    np.testing.assert_array_equal(after[:, 4:], before[:, 4:])          # unseen classes too
    a, b = (float(v) for v in s2.bias[1])
    assert (a, b) != (1.0, 0.0)
    np.testing.assert_allclose(after[:, 2:4], a * before[:, 2:4] + b, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(s2.bias)[[0, 2, 3, 4]], np.asarray(s.bias)[[0, 2, 3, 4]])


def test_bad_config_is_refused_before_any_work():
    for field, value, msg in (("split_ratio", 0.0, "bic.split_ratio=0.0"),
                              ("stage2_loss", "mse", "bic.stage2_loss='mse'"),
                              ("stage2_bn", "off", "bic.stage2_bn='off'"), ("stage2_lr", -1.0, "bic.stage2_lr=-1.0")):
        with pytest.raises(ConfigError, match=msg):
            validate(_cfg(**{f"bic.{field}": value}))
    assert get_spec("bic") is bic.SPEC


def test_split_digits_three_seeds(tmp_path):
    """The shipped digits config in 3 tasks (4 + 3 + 3 classes), 2 epochs per
    task, 3 seeds in one program: every seed's final class-IL accuracy well
    above what a forgetting model gets (about 30 %)."""
    from clj.train import Runner

    c = _cfg(**{"train.epochs": 2, "bic.stage2_epochs": 2, "num_seeds": 3, **THREE_TASKS})
    res = Runner(c, str(tmp_path)).run()
    m = res["metrics"]["class_il"]["final_average_accuracy"]
    finals = sorted(json.load(open(p))["metrics"]["class_il"]["final_average_accuracy"]
                    for p in glob.glob(str(tmp_path / "**" / "results.json"), recursive=True))
    assert m["n"] == 3 and len(finals) == 3, (m, finals)
    assert min(finals) >= 0.75, finals


SHARDED = textwrap.dedent("""
    import os, json
    import jax
    assert len(jax.devices()) == 4
    from clj.config import load_config
    from clj.train.loop import Runner
    out = {{}}
    for n_dev in (4, 1):
        c = load_config("bic_digits")
        c.train.epochs = 1
        c.bic.stage2_epochs = 1
        c.scenario.init_cls, c.scenario.increment = 4, 3
        c.progress = False
        c.plots = False
        r = Runner(c, os.path.join({tmp!r}, str(n_dev)), devices=jax.devices()[:n_dev])
        res = r.run()
        out[n_dev] = {{"acc": res["accuracy_matrix"]["class_il"], "dev": res["extra"]["devices"],
                       "bias": res["extra"]["bias"]}}
    print("RESULT" + json.dumps(out))
""")


def test_four_devices_equal_one(tmp_path):
    stdout = run_with_devices(SHARDED.format(tmp=str(tmp_path)))
    out = json.loads([l for l in stdout.splitlines() if l.startswith("RESULT")][-1][len("RESULT"):])
    four, one = out["4"], out["1"]
    assert four["dev"] == 4 and one["dev"] == 1
    np.testing.assert_allclose(four["acc"], one["acc"], atol=1e-6)
    np.testing.assert_allclose(four["bias"], one["bias"], rtol=1e-4, atol=1e-6)
