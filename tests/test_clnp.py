"""CLNP (clj.methods.nispa.clnp): the units kept at a threshold, the
graceful-forgetting search on constructed accuracies, the cuts into kept
units, frozen units bit-identical on the next task, a Split-digits run with 3
seeds, and 4 simulated devices against 1."""
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
from clj.methods.nispa import clnp
from clj.methods.nispa import units as nu
from clj.scenarios import make_scenario
from conftest import run_with_devices

_step = jax.jit(clnp.train_step)
_end = jax.jit(clnp.end_task)
_begin = jax.jit(clnp.begin_task)


def _scenario(num_classes=4, per_class=24):
    ds = load_dataset("synthetic", seed=0, image_shape=(6, 6, 1), num_classes=num_classes,
                      train_per_class=per_class, test_per_class=4)
    return make_scenario(ds, "task_il", increment=2)


def _config(**over):
    c = load_config("clnp_digits")
    c.model.hidden = (24, 16)
    for k, v in over.items():
        c.clnp[k] = v
    return c


def _info(sc, t):
    mask = np.zeros(sc.num_classes, bool)
    mask[list(sc.tasks[t].classes)] = True
    return TaskInfo(task_id=jnp.int32(t), classes=(), num_steps=6, steps_per_epoch=3,
                    num_classes=sc.num_classes, class_mask=jnp.asarray(mask))


def _batch(st, sc, t, step, B=16):
    idx = sc.tasks[t].train_idx
    rows = idx[(step * B + np.arange(B)) % len(idx)]
    xr = jnp.asarray(sc.x_train[rows])
    return {"x": st.static.augment(xr, None, train=False), "x_raw": xr,
            "y": jnp.asarray(sc.y_train[rows], jnp.int32), "step": jnp.int32(step % 3),
            "steps_per_epoch": jnp.int32(3), "task_size": jnp.int32(len(idx))}


def _task_data(sc, t):
    idx = sc.tasks[t].train_idx
    return {"x": jnp.asarray(sc.x_train[idx]), "y": jnp.asarray(sc.y_train[idx], jnp.int32)}


def _train_task(st, sc, t, steps=6):
    st = _begin(st, _info(sc, t))
    for k in range(steps):
        st, m = _step(st, _batch(st, sc, t, k), jax.random.PRNGKey(k))
        assert np.isfinite(float(m["loss"]))
    return _end(st, _task_data(sc, t))


# ---------------------------------------------------------------- the threshold, by hand
def test_kept_units_are_exactly_those_above_the_threshold():
    acts = (jnp.asarray([0.0, 0.1, 0.5, 0.02, 0.3, 0.1000001]), jnp.asarray([0.7, 0.0]))
    old = (jnp.asarray([False, False, False, True, False, False]), jnp.asarray([False, True]))
    kept = clnp.kept_units(acts, jnp.float32(0.1), old)
    # 0.1 is not above 0.1 (pruned); earlier tasks' units stay whatever their activation
    np.testing.assert_array_equal(np.asarray(kept[0]), [False, False, True, True, True, True])
    np.testing.assert_array_equal(np.asarray(kept[1]), [True, True])


_ACTS = (jnp.asarray([0.05, 0.15, 0.25, 0.35, 1.0]),)


def _acc_needs_unit(u, good=100.0, bad=90.0):
    """A constructed pruned accuracy: ``good`` while unit u is kept."""
    return lambda hidden: jnp.where(hidden[0][u], good, bad).astype(jnp.float32)


def _search(acc_fn, old=(False,) * 5, later=False, upper=1.0, worst=99.5, step=0.1, max_thetas=4096):
    kept, idx, acc = jax.jit(lambda: clnp.threshold_search(
        _ACTS, (jnp.asarray(old),), jnp.asarray(later), jnp.float32(upper), jnp.float32(worst), acc_fn,
        step, max_thetas))()
    return np.asarray(kept[0]), int(idx), float(acc)


def test_search_stops_before_the_first_unacceptable_threshold():
    # thresholds 0, .1, .2, .3 ...: at .3 unit 2 (0.25) is pruned and the accuracy falls to 90
    kept, idx, acc = _search(_acc_needs_unit(2))
    assert idx == 2 and acc == 100.0
    np.testing.assert_array_equal(kept, [False, False, True, True, True])
    # a margin that tolerates the drop: pruning goes on until unit 4 (1.0) is lost, which never
    # happens below upper = 1.0, so every threshold is acceptable and the last (0.9) is taken
    kept, idx, _ = _search(_acc_needs_unit(2), worst=90.0)
    assert idx == 9
    np.testing.assert_array_equal(kept, [False, False, False, False, True])
    # the grid is numpy.arange(0, upper, step): upper 0.35 -> 0, .1, .2, .3 (4 thresholds)
    kept, idx, _ = _search(_acc_needs_unit(2), worst=0.0, upper=0.35)
    assert idx == 3
    np.testing.assert_array_equal(kept, [False, False, False, True, True])
    assert int(clnp.num_thetas(jnp.float32(0.35), 0.1, 4096)) == 4
    assert int(clnp.num_thetas(jnp.float32(0.35), 0.1, 2)) == 2
    assert int(clnp.num_thetas(jnp.float32(-1.0), 0.1, 4096)) == 0


def test_search_stops_when_a_later_task_keeps_no_new_unit():
    old = (False, False, False, True, True)
    # theta .3 keeps exactly the old units: a later task stops there, even though the accuracy fell
    kept, idx, acc = _search(_acc_needs_unit(2), old=old, later=True, worst=0.0)
    assert idx == 3 and acc == 90.0
    np.testing.assert_array_equal(kept, old)
    # the first task never takes that exit
    kept, idx, _ = _search(_acc_needs_unit(2), old=old, later=False, worst=0.0)
    assert idx == 9


def test_search_falls_back_to_theta_zero_when_it_already_fails():
    # the accuracy needs unit 0 (0.05), kept only at theta 0; a worst above 100 fails everywhere
    kept, idx, _ = _search(_acc_needs_unit(0), worst=101.0)
    assert idx == 0
    np.testing.assert_array_equal(kept, [True, True, True, True, True])


# ---------------------------------------------------------------- the task boundary
def test_end_task_cuts_into_kept_units_and_freezes_them():
    sc = _scenario()
    st = clnp.init(jax.random.PRNGKey(0), _config(theta_step=0.05), sc)
    st = _train_task(st, sc, 0)
    static = st.static
    kf = clnp.with_input(static, st.kept)
    assert 0 < int(jnp.sum(st.kept[0])) < 24                          # some units kept, some freed
    np.testing.assert_array_equal(np.asarray(st.kept[-1]), np.asarray(st.seen))  # the seen outputs
    for l, s in enumerate(static.specs):
        c = np.asarray(st.conn[s.name])
        src, tgt = np.asarray(nu.source_vector(s, kf[l])), np.asarray(kf[l + 1])
        assert not np.any(c[~src][:, tgt])                          # nothing from a freed unit into a kept one
        assert np.all(c[:, ~tgt])                                   # free units keep every input
        assert np.all(c[src][:, tgt])                               # kept -> kept all present (dense net)
        k = np.asarray(st.params[s.name]["kernel"])
        assert np.all(k[~c] == 0.0)
        assert np.all(np.asarray(st.params[s.name]["bias"])[~tgt] == 0.0)   # re-initialised biases
    # the recorded threshold: every newly kept unit is above it and every freed one at or below it,
    # on the statistics of the network that was pruned
    assert float(st.theta[0]) >= 0.0
    extra = clnp.result_extras(st)["clnp"]
    assert extra["kept_units_per_layer"]["fc0"] == int(jnp.sum(st.kept[0]))


def test_frozen_units_stay_bit_identical_on_the_next_task():
    sc = _scenario(num_classes=6)
    st = clnp.init(jax.random.PRNGKey(1), _config(theta_step=0.05), sc)
    st = _train_task(st, sc, 0)
    static = st.static
    kf = clnp.with_input(static, st.kept)
    frozen = {s.name: np.asarray(nu.expand(s, nu.frozen_matrix(s, kf[l], kf[l + 1]),
                                           st.params[s.name]["kernel"].shape))
              for l, s in enumerate(static.specs)}
    before = {s.name: (np.asarray(st.params[s.name]["kernel"]), np.asarray(st.params[s.name]["bias"]))
              for s in static.specs}
    x = static.augment(jnp.asarray(sc.x_test), None, train=False)
    cls0 = list(sc.tasks[0].classes)
    logits0 = np.asarray(clnp.predict(st, x))[:, cls0]
    kept0 = [np.asarray(k) for k in st.kept]
    for t in (1, 2):
        st = _train_task(st, sc, t)
        for l, s in enumerate(static.specs):
            k, b = np.asarray(st.params[s.name]["kernel"]), np.asarray(st.params[s.name]["bias"])
            np.testing.assert_array_equal(k[frozen[s.name]], before[s.name][0][frozen[s.name]])
            np.testing.assert_array_equal(b[kept0[l]], before[s.name][1][kept0[l]])
        np.testing.assert_array_equal(np.asarray(clnp.predict(st, x))[:, cls0], logits0)
        for a, b in zip(st.kept, kept0):                           # kept sets only grow
            assert np.all(np.asarray(a)[b])


def test_l1_term_is_in_the_loss():
    sc = _scenario()
    st = _begin(clnp.init(jax.random.PRNGKey(2), _config(l1_alpha=0.5), sc), _info(sc, 0))
    _, m = _step(st, _batch(st, sc, 0, 0), jax.random.PRNGKey(0))
    assert float(m["l1"]) == pytest.approx(float(clnp.l1_norm(st.params)), rel=1e-6)
    assert float(m["loss"]) > 0.5 * float(m["l1"])


def test_bad_config_is_refused():
    with pytest.raises(ConfigError, match="clnp.theta_step=0"):
        validate(_config(theta_step=0))
    with pytest.raises(ConfigError, match="clnp.m_perc=-1"):
        validate(_config(m_perc=-1))
    c = _config()
    c.model.name = "mlp"
    with pytest.raises(ConfigError, match="model.name='mlp'"):
        validate(c)
    assert get_spec("clnp") is clnp.SPEC


def test_split_digits_three_seeds(tmp_path):
    """The shipped config with a 64-100-100-10 MLP, 3 seeds, 5 epochs per
    task: task-IL well above chance and no forgetting (kept units frozen)."""
    from clj.train import Runner

    c = load_config("clnp_digits")
    c.train.epochs = 5
    c.model.hidden = (100, 100)
    c.num_seeds = 3
    c.progress = False
    c.plots = False
    out = Runner(c, str(tmp_path)).run()
    til = out["metrics"]["task_il"]
    assert til["final_average_accuracy"]["mean"] >= 0.9, til
    assert til["forgetting"]["mean"] == 0.0
    for s in range(3):
        res = json.load(open(tmp_path / f"seed_{s}" / "results.json"))
        assert res["metrics"]["task_il"]["forgetting"] == 0.0
        assert sum(res["extra"]["clnp"]["kept_units_per_layer"][k] for k in ("fc0", "fc1")) > 0


SHARDED = textwrap.dedent("""
    import os, json
    import jax
    assert len(jax.devices()) == 4
    from clj.config import load_config
    from clj.train.loop import Runner
    out = {{}}
    for n_dev in (4, 1):  # the same run sharded over 4 devices and on one
        c = load_config("clnp_digits")
        c.dataset = "synthetic"
        c.synthetic.image_shape = (6, 6, 1); c.synthetic.num_classes = 4
        c.synthetic.train_per_class = 24; c.synthetic.test_per_class = 8
        c.model.hidden = (16,)
        c.train.epochs = 2
        c.train.batch_size = 16
        c.clnp.theta_step = 0.1
        c.progress = False; c.plots = False
        r = Runner(c, os.path.join({tmp!r}, str(n_dev)), devices=jax.devices()[:n_dev])
        res = r.run()
        out[n_dev] = {{"acc": res["accuracy_matrix"]["task_il"], "dev": res["extra"]["devices"],
                       "kept": res["extra"]["clnp"]["kept_units_per_layer"],
                       "theta": res["extra"]["clnp"]["theta_per_task"]}}
    print("RESULT" + json.dumps(out))
""")


def test_four_devices_equal_one(tmp_path):
    stdout = run_with_devices(SHARDED.format(tmp=str(tmp_path)))
    out = json.loads([l for l in stdout.splitlines() if l.startswith("RESULT")][-1][len("RESULT"):])
    four, one = out["4"], out["1"]
    assert four["dev"] == 4 and one["dev"] == 1
    np.testing.assert_allclose(four["theta"], one["theta"], atol=1e-6)
    assert four["kept"] == one["kept"]
    np.testing.assert_allclose(four["acc"], one["acc"], atol=1e-6)
