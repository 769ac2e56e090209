"""STL and STL-iso (clj.methods.nispa.stl): tasks share no weight, exact
per-task mask densities, the iso budget, each class scored by its task's
network, a Split-digits run with 3 seeds, and 4 simulated devices against 1."""
import json
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clj.config import ConfigError, load_config, validate
from clj.data import load_dataset
from clj.methods import get_spec
from clj.methods.common import TaskInfo
from clj.methods.nispa import stl
from clj.scenarios import make_scenario
from clj.sparse import count_for
from conftest import run_with_devices

_step = jax.jit(stl.train_step)
_end = jax.jit(stl.end_task)


def _scenario(num_classes=6, per_class=20):
    ds = load_dataset("synthetic", seed=0, image_shape=(6, 6, 1), num_classes=num_classes,
                      train_per_class=per_class, test_per_class=4)
    return make_scenario(ds, "task_il", increment=2)


def _config(variant="stl", **stl_over):
    c = load_config("stl_iso_digits" if variant == "stl_iso" else "stl_digits")
    c.model.hidden = (24, 16)
    for k, v in stl_over.items():
        c.stl[k] = v
    return c


def _info(sc, t):
    mask = np.zeros(sc.num_classes, bool)
    mask[list(sc.tasks[t].classes)] = True
    return TaskInfo(task_id=jnp.int32(t), classes=(), num_steps=6, steps_per_epoch=3,
                    num_classes=sc.num_classes, class_mask=jnp.asarray(mask))


def _batch(st, sc, t, step, B=8):
    idx = sc.tasks[t].train_idx
    rows = idx[(step * B + np.arange(B)) % len(idx)]
    xr = jnp.asarray(sc.x_train[rows])
    return {"x": st.static.augment(xr, None, train=False), "x_raw": xr,
            "y": jnp.asarray(sc.y_train[rows], jnp.int32), "step": jnp.int32(step % 3),
            "steps_per_epoch": jnp.int32(3), "task_size": jnp.int32(len(idx))}


def _leaves(tree):
    return [np.asarray(a) for a in jax.tree_util.tree_leaves(tree)]


@pytest.mark.parametrize("variant", ["stl", "stl_iso"])
def test_training_a_task_leaves_every_other_task_bit_identical(variant):
    sc = _scenario()
    st = stl.init(jax.random.PRNGKey(0), _config(variant), sc)
    T = sc.num_tasks
    for t in range(T):
        before = _leaves(st.params)
        st = stl.begin_task(st, _info(sc, t))
        for k in range(6):
            st, m = _step(st, _batch(st, sc, t, k), jax.random.PRNGKey(k))
            assert np.isfinite(float(m["loss"]))
        st = _end(st, None)
        after = _leaves(st.params)
        moved = False
        for a, b in zip(before, after):
            for u in range(T):
                if u != t:
                    np.testing.assert_array_equal(a[u], b[u])   # another task's network: bit-identical
            moved |= not np.array_equal(a[t], b[t])
        assert moved                                             # the task's own network trained
    # absent connections stay exactly zero in every task's network
    for s in st.static.specs:
        k = np.asarray(st.params[s.name]["kernel"])
        assert np.all(k[~np.asarray(st.conn[s.name])] == 0.0)


def test_masks_have_exact_density_per_task():
    sc = _scenario()
    st = stl.init(jax.random.PRNGKey(1), _config("stl", density=0.3), sc)
    for s in st.static.specs:
        n = s.rows * s.cols
        got = np.asarray(st.conn[s.name]).reshape(sc.num_tasks, -1).sum(1)
        np.testing.assert_array_equal(got, count_for(0.3, n))
        # each task has its own random mask
        c = np.asarray(st.conn[s.name])
        assert not np.array_equal(c[0], c[1])


def test_iso_budget_equals_nispas_total():
    sc = _scenario()
    d = 0.2
    st = stl.init(jax.random.PRNGKey(2), _config("stl_iso", density=d), sc)
    T = sc.num_tasks
    for s in st.static.specs:
        n = s.rows * s.cols
        per_task = np.asarray(st.conn[s.name]).reshape(T, -1).sum(1)
        assert per_task.max() - per_task.min() <= 1                # an even split
        assert abs(int(per_task.sum()) - count_for(d, n)) <= 1     # NISPA's budget, within one per layer
        assert int(per_task.sum()) == count_for(d, n)              # (exactly, with this split)
    extra = stl.result_extras(st)["stl"]
    assert extra["iso"] is True
    assert extra["connections_total"]["fc0"] == count_for(d, 36 * 24)
    # the task-level helper, by hand: 173 connections over 5 tasks -> 35, 35, 35, 34, 34
    assert stl.task_counts(865, 0.2, 5, True) == (35, 35, 35, 34, 34)
    assert stl.task_counts(865, 0.2, 5, False) == (173,) * 5


def test_each_class_is_scored_by_its_tasks_network():
    sc = _scenario()
    st = stl.init(jax.random.PRNGKey(3), _config(), sc)
    x = st.static.augment(jnp.asarray(sc.x_test[:5]), None, train=False)
    out = np.asarray(stl.predict(st, x))
    for t, task in enumerate(sc.tasks):
        own = np.asarray(stl.forward(st.static, stl.row(st.params, t), stl.row(st.conn, t), x))
        for c in task.classes:
            np.testing.assert_array_equal(out[:, c], own[:, c])


def test_bad_config_is_refused():
    c = _config(density=1.5)
    with pytest.raises(ConfigError, match="stl.density=1.5"):
        validate(c)
    c = _config(mask_init="sometimes")
    with pytest.raises(ConfigError, match="stl.mask_init"):
        validate(c)
    c = _config()
    c.optim.name = "sgd"
    with pytest.raises(ConfigError, match="optim.name='sgd'"):
        validate(c)
    assert get_spec("stl").task_steps is not None and get_spec("stl_iso") is not None


def test_split_digits_three_seeds(tmp_path):
    """The shipped config with a 64-100-100-10 MLP at 20 % density, 3 seeds,
    5 epochs per task: each task's own sparse network solves it and nothing
    is forgotten (the full config's numbers are in docs/nispa.md)."""
    from clj.train import Runner

    c = load_config("stl_digits")
    c.train.epochs = 5
    c.model.hidden = (100, 100)
    c.num_seeds = 3
    c.progress = False
    c.plots = False
    out = Runner(c, str(tmp_path)).run()
    til = out["metrics"]["task_il"]
    assert til["final_average_accuracy"]["mean"] >= 0.93, til
    assert til["forgetting"]["mean"] == 0.0
    for s in range(3):
        res = json.load(open(tmp_path / f"seed_{s}" / "results.json"))
        assert res["metrics"]["task_il"]["final_average_accuracy"] >= 0.9
        assert res["metrics"]["task_il"]["forgetting"] == 0.0


SHARDED = textwrap.dedent("""
    import os, json
    import jax
    assert len(jax.devices()) == 4
    from clj.config import load_config
    from clj.train.loop import Runner
    out = {{}}
    for n_dev in (4, 1):  # the same run sharded over 4 devices and on one
        c = load_config("stl_digits")
        c.dataset = "synthetic"
        c.synthetic.image_shape = (6, 6, 1); c.synthetic.num_classes = 4
        c.synthetic.train_per_class = 24; c.synthetic.test_per_class = 8
        c.model.hidden = (16,)
        c.train.epochs = 2
        c.train.batch_size = 16
        c.progress = False; c.plots = False
        r = Runner(c, os.path.join({tmp!r}, str(n_dev)), devices=jax.devices()[:n_dev])
        res = r.run()
        out[n_dev] = {{"acc": res["accuracy_matrix"]["task_il"], "dev": res["extra"]["devices"],
                       "conn": res["extra"]["stl"]["connections_total"]}}
    print("RESULT" + json.dumps(out))
""")


def test_four_devices_equal_one(tmp_path):
    stdout = run_with_devices(SHARDED.format(tmp=str(tmp_path)))
    out = json.loads([l for l in stdout.splitlines() if l.startswith("RESULT")][-1][len("RESULT"):])
    four, one = out["4"], out["1"]
    assert four["dev"] == 4 and one["dev"] == 1
    assert four["conn"] == one["conn"]
    np.testing.assert_allclose(four["acc"], one["acc"], atol=1e-6)
