"""EWC / SI / MAS (clj.methods.baselines.regularization) against hand-computed values:
per-task vs online EWC, EWC's Fisher, MAS's scale, SI's sign, GT-RIPL's
early-stopping rule, and whole-epoch budgets."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clj.config import ConfigError
from clj.data import load_dataset
from clj.methods.baselines import regularization as reg
from clj.methods.common import TaskInfo
from clj.scenarios import make_scenario
from clj.configs.ewc_digits import reg_config


def _scenario():
    ds = load_dataset("synthetic", seed=0, image_shape=(4, 4, 1), num_classes=6, train_per_class=20,
                      test_per_class=5)
    return make_scenario(ds, "task_il", increment=2)


def _linear(kind, sc, **kw):
    """A linear softmax classifier (no hidden layer) on the 16 pixels."""
    c = reg_config(kind)
    c.model.hidden = ()
    for k, v in kw.items():
        c.reg[k] = v
    return reg.init(jax.random.PRNGKey(0), c, sc, kind)


def _const(state, v):
    return jax.tree_util.tree_map(lambda a: jnp.full(a.shape, v, jnp.float32), state.net.params)


def test_ewc_per_task_vs_online_by_hand():
    sc = _scenario()
    for mode, want in (("per_task", 2.0 * 1.0 + 0.5 * 9.0), ("online", (2.0 + 0.5) * 9.0)):
        st = _linear("ewc", sc, ewc_mode=mode, lam=3.0)
        # task 1: Omega = 2 around theta = 1; task 2: Omega = 0.5 around theta = 3
        st = reg.absorb(st, _const(st, 2.0), _const(st, 1.0))
        st = reg.absorb(st, _const(st, 0.5), _const(st, 3.0))
        size = sum(a.size for a in jax.tree_util.tree_leaves(st.net.params))
        zero = _const(st, 0.0)
        assert float(reg.penalty(st, zero)) == pytest.approx(3.0 * want * size, rel=1e-6)
        g = jax.grad(lambda p: reg.penalty(st, p))(zero)
        gw = {"per_task": 2 * 3.0 * (2.0 * (0 - 1) + 0.5 * (0 - 3)), "online": 2 * 3.0 * 2.5 * (0 - 3)}[mode]
        assert all(np.allclose(np.asarray(a), gw) for a in jax.tree_util.tree_leaves(g))
    assert _linear("ewc", sc, ewc_mode="per_task").static.slots == sc.num_tasks


def _task0(st, sc):
    t0 = sc.tasks[0]
    info = TaskInfo(0, t0.classes, 4, 4, sc.num_classes)
    return reg.begin_task(st, info), jnp.asarray(sc.x_train[t0.train_idx]), t0


def _np_logits(st, x):
    p = st.net.params
    (name,) = [k for k in p if "kernel" in p[k]] or [None]
    w, b = np.asarray(p[name]["kernel"], np.float64), np.asarray(p[name]["bias"], np.float64)
    xf = np.asarray(st.static.augment(x, None, train=False), np.float64).reshape(x.shape[0], -1)
    return xf, xf @ w + b, name


def test_ewc_fisher_is_mean_squared_gradient_of_log_prob():
    sc = _scenario()
    st = _linear("ewc", sc, n_fisher=10_000, val_fraction=0.1)   # more than the examples: all training ones
    st, x, t0 = _task0(st, sc)
    om = reg.importance(st, st.net.params, x, jax.random.PRNGKey(1))
    xf, lo, name = _np_logits(st, x)
    from clj.data.holdout import is_val_np
    keep = ~is_val_np(np.asarray(x), 100)
    assert 0 < (~keep).sum() < keep.sum()
    cls = list(t0.classes)
    z = lo[:, cls]
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    d = -p
    d[np.arange(len(z)), z.argmax(1)] += 1.0                    # d log p(y_hat) / d logits of the task
    full = np.zeros_like(lo)
    full[:, cls] = d
    gw = np.einsum("bi,bc->bic", xf, full) ** 2
    np.testing.assert_allclose(np.asarray(om[name]["kernel"]), gw[keep].mean(0), rtol=2e-4, atol=1e-7)
    np.testing.assert_allclose(np.asarray(om[name]["bias"]), (full ** 2)[keep].mean(0), rtol=2e-4, atol=1e-7)


@pytest.mark.parametrize("scale", ["mean", "sum"])
def test_mas_importance_scale(scale):
    sc = _scenario()
    n = sc.tasks[0].num_train
    st = _linear("mas", sc, mas_scale=scale, importance_batch=n)   # one batch: the whole task
    st, x, t0 = _task0(st, sc)
    om = reg.importance(st, st.net.params, x, jax.random.PRNGKey(2))
    xf, lo, name = _np_logits(st, x)
    cls = list(t0.classes)
    m = np.zeros_like(lo)
    m[:, cls] = lo[:, cls]
    K = len(cls) if scale == "mean" else 1
    # d/dW of mean_b sum_c lo_bc^2 / K  =  2 / (n K) sum_b x_b lo_b
    want = np.abs(2.0 / (n * K) * xf.T @ m)
    np.testing.assert_allclose(np.asarray(om[name]["kernel"]), want, rtol=2e-4, atol=1e-7)


def test_mas_batches_average_absolute_batch_gradients():
    sc = _scenario()
    n = sc.tasks[0].num_train                                   # 40 examples, batches of 16: 16, 16, 8
    st = _linear("mas", sc, importance_batch=16)
    st, x, t0 = _task0(st, sc)
    key = jax.random.PRNGKey(3)
    om = reg.importance(st, st.net.params, x, key)
    order, n_tr = reg._order(key, x, st.static)
    assert int(n_tr) == n
    xf, lo, name = _np_logits(st, x)
    cls = list(t0.classes)
    o = np.asarray(order)
    want = 0
    for i in range(0, n, 16):
        b = o[i:i + 16]
        m = np.zeros_like(lo[b])
        m[:, cls] = lo[b][:, cls]
        want = want + np.abs(2.0 / (len(b) * len(cls)) * xf[b].T @ m)
    np.testing.assert_allclose(np.asarray(om[name]["kernel"]), want / 3, rtol=2e-4, atol=1e-7)


@pytest.mark.parametrize("clip", [False, True])
def test_si_keeps_negative_path_integrals_unless_clipped(clip):
    sc = _scenario()
    st = _linear("si", sc, si_clip=clip, xi=0.5)
    w = jax.tree_util.tree_map(lambda a: jnp.where(jnp.arange(a.size).reshape(a.shape) % 2 == 0, -1.0, 2.0),
                               st.net.params)
    st = st.replace(w=w, start=_const(st, 0.0))
    st = st.replace(net=st.net.replace(params=_const(st, 1.0)))
    om = reg.importance(st, st.net.params, None, jax.random.PRNGKey(0))
    for o, wi in zip(jax.tree_util.tree_leaves(om), jax.tree_util.tree_leaves(w)):
        wi = np.asarray(wi)
        want = (np.maximum(wi, 0) if clip else wi) / (1.0 + 0.5)
        np.testing.assert_allclose(np.asarray(o), want, rtol=1e-6)


def _gt_ripl_stop_epoch(accs, wait):
    """GT-RIPL's learn_batch loop as the NISPA authors modified it."""
    val_accs, best = [], 0
    for e, a in enumerate(accs, start=1):
        val_accs.append(a)
        if best <= a:
            best = a
        elif all(best > p for p in val_accs[-wait:]) and len(val_accs) > wait + 2:
            return e
    return None


def test_early_stopping_rule_matches_gt_ripl():
    upd = jax.jit(reg.early_stop_update, static_argnums=4)
    rs = np.random.default_rng(0)
    seqs = [[50, 60, 55, 54, 53, 52, 51], [10, 20, 30, 30, 29, 28, 27, 26]]
    seqs += [list(rs.integers(0, 6, size=12)) for _ in range(40)]
    for accs in seqs:
        for wait in (1, 3):
            best, since, ep = jnp.float32(0), jnp.int32(0), jnp.int32(0)
            got = None
            for e, a in enumerate(accs, start=1):
                best, since, ep, stop = upd(best, since, ep, jnp.float32(a), wait)
                if bool(stop):
                    got = e
                    break
            assert got == _gt_ripl_stop_epoch(accs, wait), (accs, wait)
    assert _gt_ripl_stop_epoch([50, 60, 55, 54, 53, 52, 51], 3) == 6


def test_task_steps_whole_epochs_and_config_errors():
    c = reg_config("si")
    c.train.epochs = 20
    assert reg.task_steps(c, 12000, 569, 0) == 20 * 22
    with pytest.raises(ConfigError, match="batch_size"):
        reg.task_steps(c, 100, 0, 0)
    sc = _scenario()
    for key, val, word in [("ewc_mode", "x", "reg.ewc_mode"), ("mas_scale", "x", "reg.mas_scale"),
                           ("patience", 3, "hold-out"), ("val_fraction", 1.0, "reg.val_fraction")]:
        with pytest.raises(ConfigError, match=word):
            _linear("ewc", sc, **{key: val})


def test_stopped_task_leaves_state_unchanged_and_holdout_not_trained_on():
    sc = _scenario()
    st = _linear("si", sc, val_fraction=0.3, patience=1)
    st, x, t0 = _task0(st, sc)
    n, B = x.shape[0], 8
    spe = -(-n // B)
    y = jnp.asarray(sc.y_train[t0.train_idx], jnp.int32)
    step = jax.jit(reg.train_step)

    def batch(k):
        ix = (np.arange(B) + (k % spe) * B) % n
        xr = x[ix]
        return {"x": st.static.augment(xr, None, train=False), "x_raw": xr, "y": y[ix], "step": jnp.int32(k),
                "steps_per_epoch": jnp.int32(spe), "task_size": jnp.int32(n)}

    k = 0
    while not bool(st.stopped):
        st, m = step(st, batch(k), jax.random.PRNGKey(0))
        k += 1
        if k == spe:   # a best no epoch can reach: every later epoch is below it
            st = st.replace(best_acc=jnp.float32(2.0))
        assert k <= 40 * spe
    assert float(m["task_done"]) == 1.0 and k == 4 * spe and int(st.epochs) == 4
    from clj.data.holdout import is_val_np
    assert int(st.val_n) == int(is_val_np(np.asarray(x), 300).sum())
    before = jax.tree_util.tree_leaves(st)
    for j in range(2 * spe):                      # a chunk late: epoch ends and first-epoch steps included
        st, _ = step(st, batch(j), jax.random.PRNGKey(1))
    assert all(np.array_equal(a, b) for a, b in zip(before, jax.tree_util.tree_leaves(st)))


def test_loop_sizes_tasks_in_whole_epochs_through_the_spec(tmp_path):
    """The loop sizes a task with the spec's task_steps: 40 whole epochs of
    ceil(76 / 16) = 5 steps (the loop's own ceil(40 * 76 / 16) would be 190)."""
    import json

    from clj.methods import get_spec
    from clj.train.loop import Runner

    c = reg_config("mas")
    c.dataset = "synthetic"
    c.synthetic.image_shape = (4, 4, 1)
    c.synthetic.num_classes = 4
    c.synthetic.train_per_class = 38
    c.synthetic.test_per_class = 5
    c.model.hidden = (8,)
    c.train.batch_size = 16
    c.train.epochs = 40
    c.reg.val_fraction = 0.2
    c.progress = False
    c.plots = False
    c.num_seeds = 2
    spec = get_spec("mas")
    assert spec.caps(c).step_info and not spec.caps(c).early_stop
    c2 = c.copy_and_resolve_references()
    c2.reg.patience = 3
    assert spec.caps(c2).early_stop
    assert spec.task_steps(c, 76, 16, 0) == 40 * 5
    out = Runner(c, str(tmp_path)).run()
    res = json.load(open(tmp_path / "seed_0" / "results.json"))
    assert res["steps"]["per_task"] == [200, 200]
    assert res["extra"]["reg"]["mas_scale"] == "mean" and res["extra"]["reg"]["val_permille"] == 200
    assert out["metrics"]["task_il"]["final_average_accuracy"]["mean"] > 0.5
