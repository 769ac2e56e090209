"""Exact properties of NISPA (clj.methods.nispa.nispa) and the EWC/SI/MAS baselines."""
import json
import os
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clj.config import ConfigError
from clj.data import load_dataset
from clj.methods.nispa import nispa
from clj.methods.nispa import phases as nispa_phases
from clj.methods.nispa import rewiring as nispa_rewiring
from clj.methods.nispa import state as nispa_state
from clj.methods.nispa import units as nu
from clj.methods.common import TaskInfo
from clj.models.nispa_nets import LayerSpec, SparseConvNet
from clj.scenarios import make_scenario
from clj.configs.nispa_digits import get_config as nispa_digits_config
from conftest import run_with_devices

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _scenario(num_classes=6, per_class=60):
    ds = load_dataset("synthetic", seed=0, image_shape=(8, 8, 1), num_classes=num_classes,
                      train_per_class=per_class, test_per_class=10)
    return make_scenario(ds, "task_il", increment=2)


def _config(**nispa_kw):
    c = nispa_digits_config()
    c.dataset = "synthetic"
    c.model.hidden = (32, 32)
    c.train.batch_size = 16
    c.nispa.phase_epochs = 1
    c.nispa.eval_chunk = 64
    for k, v in nispa_kw.items():
        c.nispa[k] = v
    c.train.epochs = c.nispa.max_phases * c.nispa.phase_epochs
    return c


def _run_task(state, sc, t, B, epochs, seed=0):
    """Drives one task as the loop does (same batch keys), un-vmapped."""
    task = sc.tasks[t]
    n = task.num_train
    spe = -(-n // B)
    steps = epochs * spe
    info = TaskInfo(task_id=t, classes=task.classes, num_steps=steps, steps_per_epoch=spe,
                    num_classes=sc.num_classes)
    state = nispa.begin_task(state, info)
    rs = np.random.default_rng([seed, t])
    order = np.concatenate([task.train_idx[rs.permutation(n)] for _ in range(epochs + 1)])[: steps * B]
    idx = jnp.asarray(order.reshape(steps, B), jnp.int32)
    X, Y = jnp.asarray(sc.x_train), jnp.asarray(sc.y_train, jnp.int32)
    aug = state.static.augment

    @jax.jit
    def run(state, idx):
        def body(st, inp):
            k, ix = inp
            xr = X[ix]
            batch = {"x": aug(xr, None, train=False), "x_raw": xr, "y": Y[ix], "step": k,
                     "steps_per_epoch": jnp.int32(spe), "task_size": jnp.int32(n)}
            return nispa.train_step(st, batch, jax.random.fold_in(jax.random.PRNGKey(seed), k))

        return jax.lax.scan(body, state, (jnp.arange(steps, dtype=jnp.int32), idx))

    state, metrics = run(state, idx)
    return nispa.end_task(state, {"x": None, "y": None, "info": info}), metrics


# ---------------------------------------------------------------- oracles
def test_tau_schedule():
    p = [float(nu.tau(t, 30.0)) for t in (1, 10, 15, 25, 26)]
    np.testing.assert_allclose(p, [99.7261, 75.0, 50.0, 6.6987, 4.3227], atol=1e-3)
    first = next(t for t in range(1, 40) if float(nu.tau(t, 30.0)) <= 5.0)
    assert first == 26


def test_select_units_rule():
    a = jnp.asarray([5.0, 3.0, 2.0, 0.0])
    sel = lambda p: set(np.flatnonzero(np.asarray(nu.select_units(a, jnp.float32(p)))).tolist())  # noqa: E731
    assert sel(50) == {0}
    assert sel(80) == {0, 1}
    assert sel(100) == {0, 1, 2}
    assert set(np.flatnonzero(np.asarray(nu.select_units(jnp.zeros(4), jnp.float32(50))))) == {0}
    b = jnp.asarray([0.0, 2.0, 5.0, 3.0])   # unsorted input
    assert set(np.flatnonzero(np.asarray(nu.select_units(b, jnp.float32(80))))) == {2, 3}


def test_hash_split_numpy_twin():
    x = np.random.default_rng(0).integers(0, 256, size=(500, 8, 8, 1), dtype=np.uint8)
    a = np.asarray(nispa.is_val(jnp.asarray(x), 100))
    b = nispa.is_val_np(x, 100)
    assert np.array_equal(a, b)
    assert 20 <= a.sum() <= 80


# ---------------------------------------------------------------- rewiring
def _mlp_specs(sizes=(40, 30, 30, 6), density=0.3):
    specs = tuple(LayerSpec(f"l{i}", "dense", sizes[i], sizes[i + 1], sizes[i], 1, density)
                  for i in range(len(sizes) - 1))
    return specs


def _rand_state(specs, key, density):
    params, conn = {}, {}
    for i, s in enumerate(specs):
        k1, k2, key = jax.random.split(key, 3)
        shape = (3, 3, s.rows, s.cols) if s.kind == "conv" else (s.rows, s.cols)
        u = jax.random.bernoulli(k1, min(density, s.density) if s.density < 1 else 1.0, (s.rows, s.cols))
        w = jax.random.normal(k2, shape) * nu.expand(s, u, shape)
        params[s.name] = {"kernel": w, "bias": jnp.zeros((s.cols,))}
        conn[s.name] = u
    return params, conn


class _Static:
    def __init__(self, specs):
        self.specs = specs
        self.n_layers = len(specs)


@pytest.mark.parametrize("arch", ["mlp", "conv"])
def test_rewire_density_drop_and_growth_targets(arch):
    if arch == "mlp":
        specs = _mlp_specs()
    else:
        specs = SparseConvNet(num_classes=6, channels=(8, 8, 16, 16), fc_width=24).layer_specs((8, 8, 3), 0.3)
    static = _Static(specs)
    key = jax.random.PRNGKey(3)
    params, conn = _rand_state(specs, key, 0.3)
    before = {s.name: int(nu.count(s, conn[s.name])) for s in specs}
    rw = jax.jit(lambda p, c, S, k: nispa_rewiring.rewire(static, k, p, c, S))
    for it in range(3):  # several rewirings with shrinking plastic sets
        S = []
        for j, s in enumerate(specs):
            kk = jax.random.fold_in(key, 100 * it + j)
            frac = 0.1 + 0.1 * it if j < len(specs) - 1 else 0.34
            S.append(jax.random.bernoulli(kk, frac, (s.cols,)))
        S = tuple(S)
        new_p, new_c, left = rw(params, conn, S, jax.random.fold_in(key, it))
        Sf = [jnp.ones((specs[0].n_src,), bool)] + list(S)
        for l, s in enumerate(specs):
            u_old, u = np.asarray(conn[s.name]), np.asarray(new_c[s.name])
            # density exactly conserved (enough free positions into plastic targets here)
            assert int(left[l]) == 0
            assert int(nu.count(s, new_c[s.name])) == before[s.name]
            # no connection from a unit outside S into a unit of S
            src = np.asarray(nu.source_vector(s, Sf[l]))
            assert not np.any(u & np.asarray(Sf[l + 1])[None, :] & ~src[:, None])
            # new connections only into plastic targets
            added = u & ~u_old
            assert not np.any(added & np.asarray(Sf[l + 1])[None, :])
            # masked weights exactly zero
            w = np.asarray(new_p[s.name]["kernel"])
            full = np.asarray(nu.expand(s, new_c[s.name], w.shape))
            assert np.all(w[~full] == 0)
        if arch == "conv":
            assert bool(new_c["conv0"].all())   # the first conv stays dense
        params, conn = new_p, new_c


# ---------------------------------------------------------------- phases
def test_phase_loop_stops_by_accuracy_drop():
    sc = _scenario()
    cfg = _config(max_phases=10)
    state = nispa.init(jax.random.PRNGKey(0), cfg, sc)
    t0 = sc.tasks[0]
    state = nispa.begin_task(state, TaskInfo(0, t0.classes, 10, 1, sc.num_classes))
    x = jnp.asarray(sc.x_train[t0.train_idx])
    state = nispa_phases.fill_buffers(state, x, jnp.asarray(sc.y_train[t0.train_idx]), jnp.zeros(x.shape[0], bool),
                        jnp.ones(x.shape[0], bool))
    accs = [50.0, 60.0, 61.0, 59.9, 70.0]
    snaps, selections = [], []
    pe = jax.jit(nispa_phases.phase_end)
    for t, a in enumerate(accs, start=1):
        # a distinct "best epoch" snapshot per phase
        snap = jax.tree_util.tree_map(lambda w: w + t, state.params)
        snaps.append(snap)
        state = state.replace(best_params=snap, best_acc=jnp.float32(a), have_best=jnp.ones((), bool))
        state = pe(state, jax.random.PRNGKey(t))
        selections.append(state.cur_S)
        if bool(state.stopped):
            break
    assert int(state.phase) == 4 and bool(state.stopped)   # 59.9 < 61 - 0.75 at t = 4
    for a, b in zip(jax.tree_util.tree_leaves(state.prev_params), jax.tree_util.tree_leaves(snaps[2])):
        assert np.array_equal(a, b)                        # phase 3's snapshot is kept
    for a, b in zip(state.prev_S, selections[1]):
        assert np.array_equal(a, b)                        # with the selection made after phase 2


def test_no_accuracy_stop_before_phase_three():
    sc = _scenario()
    state = nispa.init(jax.random.PRNGKey(0), _config(max_phases=10), sc)
    t0 = sc.tasks[0]
    state = nispa.begin_task(state, TaskInfo(0, t0.classes, 10, 1, sc.num_classes))
    pe = jax.jit(nispa_phases.phase_end)
    for t, a in enumerate([90.0, 10.0], start=1):
        state = state.replace(best_acc=jnp.float32(a), have_best=jnp.ones((), bool))
        state = pe(state, jax.random.PRNGKey(t))
        assert not bool(state.stopped)
    state = state.replace(best_acc=jnp.float32(10.0), have_best=jnp.ones((), bool))
    assert bool(pe(state, jax.random.PRNGKey(3)).stopped)


def test_frozen_weights_bit_identical_and_zero_forgetting():
    sc = _scenario()
    cfg = _config(max_phases=6)
    state = nispa.init(jax.random.PRNGKey(1), cfg, sc)
    state, m0 = _run_task(state, sc, 0, 16, 6)
    assert int(state.phases_per_task[0]) >= 3
    static = state.static
    sf = nispa_state.stable_full(static, state.stable)
    frozen = {s.name: (np.asarray(nu.expand(s, nu.frozen_matrix(s, sf[l], sf[l + 1]),
                                             state.params[s.name]["kernel"].shape)),
                       np.asarray(sf[l + 1])) for l, s in enumerate(static.specs)}
    snap = jax.tree_util.tree_map(np.asarray, state.params)
    assert any(f[0].any() for f in frozen.values())
    x0 = static.augment(jnp.asarray(sc.x_test[sc.tasks[0].test_idx]), None, train=False)
    logits0 = np.asarray(nispa.predict(state, x0))[:, list(sc.tasks[0].classes)]
    stable0 = [np.asarray(s) for s in state.stable]
    for t in (1, 2):
        state, _ = _run_task(state, sc, t, 16, 6)
        for s in static.specs:
            fw, fb = frozen[s.name]
            w, b = np.asarray(state.params[s.name]["kernel"]), np.asarray(state.params[s.name]["bias"])
            assert np.array_equal(w[fw], snap[s.name]["kernel"][fw])
            assert np.array_equal(b[fb], snap[s.name]["bias"][fb])
        logits = np.asarray(nispa.predict(state, x0))[:, list(sc.tasks[0].classes)]
        assert np.array_equal(logits, logits0)
        # stable sets only grow; stable units receive input only from stable units
        for a, b in zip(stable0, state.stable):
            assert not np.any(a & ~np.asarray(b))
        sf2 = nispa_state.stable_full(static, state.stable)
        for l, s in enumerate(static.specs):
            u = np.asarray(state.conn[s.name])
            src = np.asarray(nu.source_vector(s, sf2[l]))
            assert not np.any(u & np.asarray(sf2[l + 1])[None, :] & ~src[:, None])
    assert nispa.memory_bytes(state)["masks"] > 0 and nispa.memory_bytes(state)["unit_states"] > 0


def test_bad_config_values():
    sc = _scenario()
    for key, val, word in [("density", 1.5, "nispa.density"), ("mask_init", "x", "nispa.mask_init"),
                           ("val_fraction", 0.0, "nispa.val_fraction")]:
        with pytest.raises(ConfigError, match=word):
            nispa.init(jax.random.PRNGKey(0), _config(**{key: val}), sc)
    c = _config()
    c.optim.name = "sgd"
    with pytest.raises(ConfigError, match="optim.name"):
        nispa.init(jax.random.PRNGKey(0), c, sc)


# ---------------------------------------------------------------- budget (issue 14 item 7)
def _official_phase_count(accs, a_f, k, tau_stop=5.0, min_phase=3):
    """The official task loop's stopping rule (docs/nispa.md, "Stopping and rollback") on phase accuracies."""
    prev = 0.0
    for t, acc in enumerate(accs, start=1):
        p = float(nu.tau(t, k))
        if (acc < prev - a_f and t >= min_phase) or p <= tau_stop:
            return t
        prev = max(prev, acc)
    return None


def test_task_steps_budgets_whole_phases():
    c = nispa_digits_config()                      # k = 30, tau_stop = 5, max_phases = 26, 5-epoch phases
    assert nispa.phase_limit(30.0, 5.0) == 26
    # Split Fashion-MNIST task: 12000 examples, batch 512 -> 24 steps per epoch
    assert nispa.task_steps(c, 12000, 512, 0) == 26 * 5 * 24 == 3120
    assert -(-26 * 5 * 12000 // 512) == 3047          # the old ceil(epochs n / B): phase 26 cut short
    assert nispa.task_steps(c, 360, 32, 3) == 26 * 5 * 12
    c.nispa.max_phases = 4
    assert nispa.task_steps(c, 360, 32, 0) == 4 * 5 * 12
    c.nispa.k, c.nispa.max_phases = 4.0, 26
    assert nispa.phase_limit(4.0, 5.0) == 4 and nispa.task_steps(c, 100, 16, 0) == 4 * 5 * 7
    with pytest.raises(ConfigError, match="tau_stop"):
        nispa.phase_limit(30.0, -1.0)
    assert nispa.phase_limit(30.0, -1.0, max_phases=40) == 40
    with pytest.raises(ConfigError, match="batch_size"):
        nispa.task_steps(c, 100, 0, 0)


def test_last_phase_completes_phase_count_is_official_and_late_steps_change_nothing():
    """k = 4: p = 85.4, 50, 14.6, 0, so the official rule stops after phase 4
    (a_f = 1000 rules out the accuracy stop).  The whole-phase budget reaches
    it exactly; the old ceil(phases * epochs * n / B) does not.  Steps after
    the stop (a loop noticing ``task_done`` a chunk late) change nothing."""
    assert _official_phase_count([50.0, 60.0, 70.0, 80.0], 1000.0, 4.0) == 4
    assert _official_phase_count([50.0, 60.0, 70.0, 80.0], -1000.0, 4.0) == 3
    assert _official_phase_count([50.0, 60.0, 61.0, 59.9, 70.0], 0.75, 30.0) == 4
    sc = _scenario(num_classes=4, per_class=30)
    cfg = _config(k=4.0, a_f=1000.0)
    task, B = sc.tasks[0], 16
    n = task.num_train
    spe = -(-n // B)
    steps = nispa.task_steps(cfg, n, B, 0)
    old = -(-4 * n // B)
    assert steps == 4 * spe and old < steps
    state = nispa.init(jax.random.PRNGKey(0), cfg, sc)
    state = nispa.begin_task(state, TaskInfo(0, task.classes, steps, spe, sc.num_classes))
    order = np.concatenate([task.train_idx[np.random.default_rng(t).permutation(n)] for t in range(6)])
    X, Y = jnp.asarray(sc.x_train), jnp.asarray(sc.y_train, jnp.int32)
    step_fn = jax.jit(nispa.train_step)

    def step(st, k):
        ix = jnp.asarray(order[(k % (5 * spe)) * B:(k % (5 * spe) + 1) * B])
        xr = X[ix]
        batch = {"x": st.static.augment(xr, None, train=False), "x_raw": xr, "y": Y[ix], "step": jnp.int32(k),
                 "steps_per_epoch": jnp.int32(spe), "task_size": jnp.int32(n)}
        return step_fn(st, batch, jax.random.fold_in(jax.random.PRNGKey(0), k))

    done = []
    for k in range(steps):
        state, m = step(state, k)
        done.append(float(m["task_done"]))
        if k == old - 1:
            assert int(state.phase) == 3 and not bool(state.stopped)   # the old budget ends here
    assert done == [0.0] * (steps - 1) + [1.0] and int(state.phase) == 4
    before = jax.tree_util.tree_leaves(state)
    for k in list(range(steps, steps + 2 * spe)) + list(range(spe)):   # epoch/phase ends, buffer-filling steps
        state, m = step(state, k)
        assert float(m["task_done"]) == 1.0
    for a, b in zip(before, jax.tree_util.tree_leaves(state)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    ended = nispa.end_task(state, None)
    assert int(ended.phases_per_task[0]) == 4
    assert float(ended.final_p[0]) == pytest.approx(float(nu.tau(2, 4.0)), abs=1e-4)   # p_{T-2}


# ---------------------------------------------------------------- task-IL rule (issue 14 item 8)
def test_task_il_rule_by_hand():
    logits = jnp.asarray([[2.0, 1.0, 5.0],      # task logit positive: both rules predict 0
                          [-1.0, -2.0, 3.0],    # all task logits negative: official -> class 2 (wrong)
                          [-0.5, 0.3, 9.0],     # one positive task logit: both predict 1
                          [-3.0, -0.1, -7.0]])  # all negative: restrict -> 1, official -> 2 (wrong)
    y = jnp.asarray([0, 0, 1, 1])
    mask = jnp.asarray([1.0, 1.0, 0.0])
    mult = np.asarray(nispa.task_il_correct(logits, y, mask, "multiply"))
    rest = np.asarray(nispa.task_il_correct(logits, y, mask, "restrict"))
    assert mult.tolist() == [True, False, True, False]
    assert rest.tolist() == [True, True, True, True]
    # task classes {1, 2}: a masked class at index 0 wins when the task's logits are all negative
    lo = jnp.asarray([[-3.0, -1.0, -2.0], [-3.0, 0.5, -2.0]])
    m2 = jnp.asarray([False, True, True])
    assert np.asarray(nispa.task_il_correct(lo, jnp.asarray([1, 1]), m2, "multiply")).tolist() == [False, True]
    assert np.asarray(nispa.task_il_correct(lo, jnp.asarray([1, 1]), m2, "restrict")).tolist() == [True, True]
    with pytest.raises(ValueError, match="task_il_rule"):
        nispa.task_il_correct(lo, jnp.asarray([1, 1]), m2, "argmax")
    with pytest.raises(ConfigError, match="nispa.task_il_rule"):
        nispa.init(jax.random.PRNGKey(0), _config(task_il_rule="x"), _scenario())


# ---------------------------------------------------------------- the loop, sharded
_SHARDED = textwrap.dedent("""
    import json, sys
    import jax
    assert jax.device_count() == 4, jax.devices()
    from clj.train.loop import Runner
    from clj.configs.nispa_digits import get_config
    c = get_config()
    c.dataset = "synthetic"
    c.synthetic.image_shape = (8, 8, 1); c.synthetic.num_classes = 4
    c.synthetic.train_per_class = 40; c.synthetic.test_per_class = 10
    c.model.hidden = (32, 32)
    c.train.batch_size = 16
    c.nispa.phase_epochs = 1; c.nispa.max_phases = 5; c.nispa.eval_chunk = 64
    c.train.epochs = 5
    c.progress = False; c.plots = False; c.num_seeds = 2
    out = Runner(c, {workdir!r}).run()
    print("RESULT", json.dumps(out["metrics"]["task_il"]["forgetting"]))
""")


def test_nispa_runs_sharded_on_four_devices(tmp_path):
    stdout = run_with_devices(_SHARDED.format(workdir=str(tmp_path)))  # raises with stderr on failure
    forgetting = json.loads(stdout.split("RESULT", 1)[1])
    assert forgetting["mean"] == 0.0 and forgetting["std"] == 0.0
    res = json.load(open(tmp_path / "seed_0" / "results.json"))
    assert res["memory_bytes"]["masks"] > 0 and res["memory_bytes"]["unit_states"] > 0
    assert res["extra"]["devices"] == 4
    dens = res["extra"]["nispa"]["connections_per_layer"]
    assert dens["fc0"] == round(0.2 * 64 * 32) and dens["fc1"] == round(0.2 * 32 * 32)


# ---------------------------------------------------------------- baselines
@pytest.mark.parametrize("method", ["ewc", "si", "mas"])
def test_regularizers_penalise_drift(method, tmp_path):
    from clj.methods import get_method
    from clj.configs.ewc_digits import reg_config

    sc = _scenario(num_classes=4, per_class=30)
    c = reg_config(method)
    c.model.hidden = (16,)
    m = get_method(method)
    st = m.init(jax.random.PRNGKey(0), c, sc)
    t0 = sc.tasks[0]
    info = TaskInfo(0, t0.classes, 5, 5, sc.num_classes)
    st = m.begin_task(st, info)
    x = st.static.augment(jnp.asarray(sc.x_train[t0.train_idx[:16]]), None, train=False)
    batch = {"x": x, "y": jnp.asarray(sc.y_train[t0.train_idx[:16]], jnp.int32)}
    for _ in range(5):
        st, _ = jax.jit(m.train_step)(st, batch, jax.random.PRNGKey(0))
    st = m.end_task(st, {"x": jnp.asarray(sc.x_train[t0.train_idx]), "y": None, "info": info})
    omega = jax.tree_util.tree_leaves(st.omega)
    assert all(bool(jnp.all(o >= 0)) for o in omega) and sum(float(o.sum()) for o in omega) > 0
    from clj.methods.baselines.regularization import penalty
    moved = jax.tree_util.tree_map(lambda p: p + 0.1, st.net.params)
    assert float(penalty(st, st.net.params)) == 0.0 and float(penalty(st, moved)) > 0.0
