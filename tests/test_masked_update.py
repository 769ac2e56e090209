"""The one masked update (clj.sparse.masked_optimizer) through every method
that freezes weights: each case runs the method's REAL jitted train_step on a
tiny config and checks that the weights it must not move are bit-identical
after the steps, that their optimizer moments are exactly zero (every method
re-creates its optimizer when its masks change), and that the trainable
weights did train.

Zeros are compared by value: the update adds an exact +0.0 to a frozen
weight, which turns a -0.0 into +0.0 (NISPA's pruned positions hold -0.0 after
``w * mask``); every other bit pattern is kept.

Cases: SERENA (``freeze='exact'``; the official ``'faithful'`` leak is
tested in test_serena.py), NISPA, iCaRL (WA and Replay take the same step),
AKR, DER (Yan).  MEMO takes DER's step, expand.train_step (its frozen blocks:
test_memo_growth.py).  Methods that
freeze nothing (ER, DER, DER++, ER-ACE, finetune, the regularisers) pass no
update mask and are not cases here.
"""
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from clj.methods.sections import section_config
from clj import sparse
from clj.methods import get_spec
from clj.methods.common import TaskInfo


class Case(NamedTuple):
    state: Any                        # the state before the measured steps
    step: Callable                    # jitted (state, batch, rng) -> (state, metrics): the method's train_step
    batches: list                     # one batch per measured step
    params: Callable                  # state -> the trained params pytree
    opt_state: Callable               # state -> the optimizer state of those params
    frozen: Callable                  # state -> bool pytree (broadcastable to params): must not move


def _tm(f, *trees):
    return jax.tree_util.tree_map(f, *trees)


# ------------------------------------------------------------------ cases
def _serena():
    """Task-free SERENA (``freeze='exact'``), SGD + Nesterov momentum +
    coupled weight decay, one closed cell: frozen = outside the open cell or
    inside a closed one."""
    from test_serena import _cfg, _scenario

    c = _cfg(**{"model.hidden": (16,), "optim.lr": 0.1, "optim.momentum": 0.9, "optim.weight_decay": 5e-3,
                "serena.density": 0.3})
    spec = get_spec("serena")
    from clj.methods.serena import cells as serena_cells
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 6)) * 3

    def batch(k):
        y = np.random.default_rng(k).integers(0, 4, 10)
        x = centers[y] + np.random.default_rng(100 + k).normal(size=(10, 6)) * 0.5
        return {"x": jnp.asarray(x, jnp.float32), "y": jnp.asarray(y, jnp.int32), "new_task": jnp.zeros((), bool)}

    st = spec.init(jax.random.PRNGKey(0), c, _scenario())
    step = jax.jit(spec.train_step)
    for k in range(3):
        st, _ = step(st, batch(k), jax.random.PRNGKey(k))
    st = serena_cells.open_cell(serena_cells.close_cell(st))        # cell 0 closed: its weights are frozen
    assert st.static.freeze == "exact"
    return Case(st, step, [batch(10 + k) for k in range(4)], lambda s: s.work, lambda s: s.opt_state,
                lambda s: _tm(lambda m, f: ~(m & ~f), s.mask_cur, s.frozen))


def _nispa():
    """NISPA in its second task with a third of every hidden layer's units
    stable (as a task end leaves them): frozen = stable->stable connections
    and stable biases; Adam."""
    from clj.methods.nispa import nispa
    from clj.methods.nispa import state as nispa_state
    from clj.methods.nispa import units as nu
    from test_nispa import _config, _scenario

    sc = _scenario(num_classes=4, per_class=40)
    st = nispa.init(jax.random.PRNGKey(1), _config(), sc)
    task = sc.tasks[1]
    spe = -(-task.num_train // 16)
    st = nispa.begin_task(st, TaskInfo(task_id=1, classes=task.classes, num_steps=2 * spe, steps_per_epoch=spe,
                                       num_classes=sc.num_classes))
    hidden = tuple(jnp.arange(a.shape[0]) % 3 == 0 for a in st.stable[:-1])
    st = st.replace(stable=hidden + (jnp.arange(sc.num_classes) < 2,))
    X, Y, aug = sc.x_train, sc.y_train, st.static.augment
    batches = []
    for k in range(3):
        ix = task.train_idx[16 * k:16 * (k + 1)]
        xr = jnp.asarray(X[ix])
        batches.append({"x": aug(xr, None, train=False), "x_raw": xr, "y": jnp.asarray(Y[ix], jnp.int32),
                        "step": jnp.int32(k), "steps_per_epoch": jnp.int32(spe),
                        "task_size": jnp.int32(task.num_train)})

    def frozen(s):
        static = s.static
        sf = nispa_state.stable_full(static, s.stable)
        return {sp.name: {"kernel": nu.expand(sp, nu.frozen_matrix(sp, sf[l], sf[l + 1]),
                                              s.params[sp.name]["kernel"].shape),
                          "bias": sf[l + 1]} for l, sp in enumerate(static.specs)}

    return Case(st, jax.jit(nispa.train_step), batches, lambda s: s.params, lambda s: s.opt_state, frozen)


def _cil_config(method):
    from clj.config import base_config
    from clj.methods.cil import common as cc
    import ml_collections

    c = base_config()
    c.method = method
    c.dataset = "synthetic"
    c.synthetic.update(dict(image_shape=(8, 8, 3), num_classes=4, train_per_class=8, test_per_class=4))
    c.scenario.increment = 2
    c.model = ml_collections.ConfigDict(dict(name="mlp", hidden=(32, 32)))
    c.optim.update(dict(lr=0.1, momentum=0.9, weight_decay=5e-3))
    c.train.batch_size = 8
    c.train.epochs = 1
    c.replay.buffer_size = 4
    c.cil = section_config("cil", memory_size=6, update_milestones=(), feature_batch_size=16)
    return c


def _cil_scenario():
    from clj.data import load_dataset
    from clj.scenarios import make_scenario

    ds = load_dataset("synthetic", None, seed=0, image_shape=(8, 8, 3), num_classes=4, train_per_class=8,
                      test_per_class=4)
    return make_scenario(ds, "class_il", increment=2)


def _cil_batches(sc, t, n=3):
    out = []
    for k in range(n):
        idx = np.roll(sc.tasks[t].train_idx, -3 * k)[:8]
        x = (jnp.asarray(sc.x_train[idx], jnp.float32) / 255.0 - 0.5) / 0.25
        out.append({"x": x, "x_raw": jnp.asarray(sc.x_train[idx]), "y": jnp.asarray(sc.y_train[idx], jnp.int32),
                    "task_id": jnp.full((8,), -1, jnp.int32), "new_task": jnp.asarray(False)})
    return out


def _info(sc, t):
    return TaskInfo(task_id=t, classes=sc.tasks[t].classes, num_steps=8, steps_per_epoch=1,
                    num_classes=sc.num_classes)


def _head_frozen(s, total=2):
    """The head columns of classes >= ``total`` (iCaRL's and AKR's freeze)."""
    params = s.net.params
    out = _tm(lambda p: jnp.zeros((), bool), params)
    col = jnp.arange(params["head"]["kernel"].shape[1]) >= total
    out = dict(out)
    out["head"] = {"kernel": jnp.broadcast_to(col[None, :], params["head"]["kernel"].shape), "bias": col}
    return out


def _icarl_like(method, config=None):
    """Task 0 of iCaRL / AKR: the head columns of the unseen classes stay at
    their initial values; SGD + momentum + weight decay."""
    sc = _cil_scenario()
    spec = get_spec(method)
    st = spec.init(jax.random.PRNGKey(0), config or _cil_config(method), sc)
    st = spec.begin_task(st, _info(sc, 0))
    return Case(st, jax.jit(spec.train_step), _cil_batches(sc, 0), lambda s: s.net.params,
                lambda s: s.net.opt_state, _head_frozen)


def _akr():
    from test_akr import tiny_config

    c = tiny_config()
    c.optim.weight_decay = 5e-3
    return _icarl_like("akr", c)


def _expand(kind):
    """DER (Yan) or MEMO in task 1: block 0, the head rows of the blocks not
    yet live, the head columns of unseen classes and the unused aux columns
    stay; block 1 (and MEMO's generalized stages) train."""
    from clj.methods.cil import expand
    from test_memo_growth import tiny_config

    c = tiny_config(kind, True)
    c.optim.weight_decay = 5e-3
    sc = _cil_scenario()
    spec = get_spec(kind)
    st = spec.init(jax.random.PRNGKey(0), c, sc)
    for t in range(2):  # two live blocks
        st = spec.begin_task(st, _info(sc, t))

    def frozen(s):
        m = _tm(jnp.logical_not, expand.update_mask(s.static, s.net.params))
        assert all(bool(jnp.all(a[0])) for a in jax.tree_util.tree_leaves(m["spec"]))   # block 0 is frozen
        return m

    return Case(st, jax.jit(spec.train_step), _cil_batches(sc, 1, 2), lambda s: s.net.params,
                lambda s: s.net.opt_state, frozen)


CASES = {
    "serena_exact": _serena,
    "nispa": _nispa,
    "icarl": lambda: _icarl_like("icarl"),
    "akr": _akr,
    # DER (Yan): expand.train_step, as MEMO (whose frozen blocks test_memo_growth checks over real steps)
    "dynamic_er": lambda: _expand("dynamic_er"),
}


def run_case(name):
    """(state before, state after) of case ``name``'s measured steps."""
    case = CASES[name]()
    st = case.state
    for k, b in enumerate(case.batches):
        st, _ = case.step(st, b, jax.random.PRNGKey(1000 + k))
    return case, st


def _params_like(opt_state, params):
    """The params-shaped parts (moments) of an optimizer state."""
    td = jax.tree_util.tree_structure(params)
    is_p = lambda n: not isinstance(n, (jax.Array, np.ndarray)) and jax.tree_util.tree_structure(n) == td  # noqa
    return [n for n in jax.tree_util.tree_leaves(opt_state, is_leaf=is_p) if is_p(n)]


def _canon_bits(a):
    a = np.asarray(a, np.float32)
    return np.where(a == 0, np.float32(0), a).view(np.uint32)


@pytest.mark.parametrize("name", list(CASES))
def test_real_step_keeps_frozen_weights_and_moments(name):
    case, after = run_case(name)
    p0, p1 = case.params(case.state), case.params(after)
    fr = case.frozen(case.state)
    n_frozen, moved = 0, False
    for w0, w1, f in zip(*(jax.tree_util.tree_leaves(t) for t in (p0, p1, fr))):
        f = np.broadcast_to(np.asarray(f), w0.shape)
        n_frozen += int(f.sum())
        np.testing.assert_array_equal(_canon_bits(w0)[f], _canon_bits(w1)[f])
        moved |= bool(np.any(np.asarray(w0)[~f] != np.asarray(w1)[~f]))
    assert n_frozen > 0 and moved
    moments = _params_like(case.opt_state(after), p1)
    assert moments, "no params-shaped optimizer state found"
    for mom in moments:
        for m, f in zip(jax.tree_util.tree_leaves(mom), jax.tree_util.tree_leaves(fr)):
            f = np.broadcast_to(np.asarray(f), m.shape)
            np.testing.assert_array_equal(np.asarray(m)[f], 0.0)


# ------------------------------------------------------------------ the optax piece itself
def _mlp_params():
    from clj.models import get_model

    model = get_model("mlp", 10, hidden=(64, 32))
    return model, model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)), train=False)["params"]


@pytest.mark.parametrize("tx", [
    optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.1, momentum=0.9, nesterov=True)),
    optax.adamw(1e-2, weight_decay=1e-2),
])
def test_masked_optimizer_any_optimizer(tx):
    """Frozen weights bit-identical and their moments zero after 5 steps of
    a loss that pushes every weight; the state is ``tx``'s own; without a
    mask the wrapper is ``tx``."""
    model, params = _mlp_params()
    task = _tm(lambda w: jax.random.bernoulli(jax.random.PRNGKey(w.size), 0.5, w.shape), params)
    frozen = _tm(lambda w: jax.random.bernoulli(jax.random.PRNGKey(w.size + 1), 0.3, w.shape), params)
    upd = sparse.trainable_mask(task, frozen)
    full = sparse.masked_optimizer(tx)
    state = full.init(params)
    assert jax.tree_util.tree_structure(state) == jax.tree_util.tree_structure(tx.init(params))

    def grads(p, key):
        x = jax.random.normal(key, (16, 8, 8, 1))
        def loss(p):
            y = model.apply({"params": sparse.apply_masks(p, task)}, x)
            return jnp.mean(y ** 2) + 0.1 * sum(jnp.sum(w) for w in jax.tree_util.tree_leaves(p))
        return jax.grad(loss)(p)

    @jax.jit
    def step(params, state, key):
        u, state = full.update(grads(params, key), state, params, update_mask=upd)
        return optax.apply_updates(params, u), state

    p = params
    for i in range(5):
        p, state = step(p, state, jax.random.PRNGKey(i))
    moved = False
    for w0, w1, m in zip(*(jax.tree_util.tree_leaves(t) for t in (params, p, upd))):
        m = np.asarray(m)
        np.testing.assert_array_equal(_canon_bits(w0)[~m], _canon_bits(w1)[~m])
        moved |= bool(np.any(np.asarray(w0)[m] != np.asarray(w1)[m]))
    assert moved
    for mom in _params_like(state, params):
        for a, m in zip(jax.tree_util.tree_leaves(mom), jax.tree_util.tree_leaves(upd)):
            np.testing.assert_array_equal(np.asarray(a)[~np.asarray(m)], 0.0)

    @jax.jit
    def unmasked(params):  # no mask: exactly tx
        g = grads(params, jax.random.PRNGKey(0))
        return full.update(g, full.init(params), params)[0], tx.update(g, tx.init(params), params)[0]

    for x, y in zip(*(jax.tree_util.tree_leaves(t) for t in unmasked(params))):
        np.testing.assert_array_equal(x, y)
