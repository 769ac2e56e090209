"""Exact properties of clj.sparse: densities, the masked update, rewiring."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from clj import sparse
from clj.models import get_model


def _params():
    model = get_model("mlp", 10, hidden=(64, 32))
    return model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)), train=False)["params"]


def test_erk_budget_and_caps():
    shapes = {"a": (64, 3, 3, 3), "b": (256, 256, 3, 3), "c": (512, 10)}
    d = sparse.erk_densities(shapes, 0.05)
    n = {k: np.prod(s) for k, s in shapes.items()}
    assert abs(sum(d[k] * n[k] for k in shapes) - 0.05 * sum(n.values())) < 1e-6 * sum(n.values())
    assert all(0 < v <= 1 for v in d.values())
    # Smaller layers get higher density (ERK raw score).
    assert d["a"] > d["b"]


@pytest.mark.parametrize("dist", ["erk", "uniform"])
def test_init_masks_exact_density(dist):
    params = _params()
    dens = sparse.layer_densities(params, 0.2, dist)
    masks = sparse.init_masks(jax.random.PRNGKey(1), params, 0.2, dist)
    for p, m in jax.tree_util.tree_flatten_with_path(masks)[0]:
        name = sparse.path_name(p)
        if name in dens:
            assert int(m.sum()) == sparse.count_for(dens[name], m.size)
        else:
            assert bool(m.all())


def test_init_masks_respects_allowed():
    params = _params()
    allowed = jax.tree_util.tree_map(lambda w: jnp.arange(w.size).reshape(w.shape) % 2 == 0, params)
    masks = sparse.init_masks(jax.random.PRNGKey(2), params, 0.3, "uniform", allowed=allowed)
    for p, m in jax.tree_util.tree_flatten_with_path(masks)[0]:
        if sparse.default_maskable(p, m):
            a = jnp.arange(m.size).reshape(m.shape) % 2 == 0
            assert not bool((m & ~a).any())
            assert int(m.sum()) == sparse.count_for(0.3, m.size)


@pytest.mark.parametrize("d", [0.0, -0.1, 1.5])
def test_bad_density_refused(d):
    with pytest.raises(ValueError, match="density"):
        sparse.layer_densities(_params(), d)


@pytest.mark.parametrize("tx", [
    optax.sgd(0.1, momentum=0.9),
    optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.1)),
    optax.chain(optax.add_decayed_weights(5e-4), optax.sgd(0.1, momentum=0.9, nesterov=True)),
    optax.adam(1e-2),
])
def test_frozen_weights_bit_identical(tx):
    params = _params()
    task = sparse.init_masks(jax.random.PRNGKey(3), params, 0.5, "uniform")
    frozen = sparse.init_masks(jax.random.PRNGKey(4), params, 0.3, "uniform")
    upd = sparse.trainable_mask(task, frozen)
    full = optax.chain(tx, sparse.masked_updates())
    state = full.init(params)

    @jax.jit
    def step(params, state, key):
        x = jax.random.normal(key, (16, 8, 8, 1))
        def loss(p):
            y = get_model("mlp", 10, hidden=(64, 32)).apply({"params": sparse.apply_masks(p, task)}, x)
            return jnp.mean(y ** 2) + 0.1 * sum(jnp.sum(w) for w in jax.tree_util.tree_leaves(p))
        g = jax.grad(loss)(params)
        u, state = full.update(g, state, params, update_mask=upd)
        return optax.apply_updates(params, u), state

    p = params
    for i in range(25):
        p, state = step(p, state, jax.random.PRNGKey(i))
    moved = False
    for w0, w1, m in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(p),
                         jax.tree_util.tree_leaves(upd)):
        np.testing.assert_array_equal(np.asarray(w0)[~np.asarray(m)], np.asarray(w1)[~np.asarray(m)])
        moved |= bool(np.any(np.asarray(w0)[np.asarray(m)] != np.asarray(w1)[np.asarray(m)]))
    assert moved  # the trainable weights did train


def test_reset_moments_zeroes_selected_entries():
    params = _params()
    tx = optax.chain(optax.add_decayed_weights(1e-4), optax.sgd(0.1, momentum=0.9))
    state = tx.init(params)
    g = jax.tree_util.tree_map(jnp.ones_like, params)
    _, state = tx.update(g, state, params)
    reset = jax.tree_util.tree_map(lambda w: jnp.arange(w.size).reshape(w.shape) < 5, params)
    new = sparse.reset_moments(tx, state, reset)
    trace, old = new[1][0].trace, state[1][0].trace
    for t, o, r in zip(jax.tree_util.tree_leaves(trace), jax.tree_util.tree_leaves(old),
                       jax.tree_util.tree_leaves(reset)):
        assert bool(jnp.all(t[r] == 0)) and bool(jnp.all(t[~r] == o[~r])) and bool(jnp.all(o != 0))


@pytest.mark.parametrize("mode", ["set", "rigl"])
def test_prune_regrow_keeps_exact_count(mode):
    key = jax.random.PRNGKey(0)
    w = jax.random.normal(key, (40, 30))
    g = jax.random.normal(jax.random.PRNGKey(1), (40, 30))
    mask = sparse.random_mask(jax.random.PRNGKey(2), (40, 30), 300)
    frozen = sparse.random_mask(jax.random.PRNGKey(3), (40, 30), 100) & mask
    fn = jax.jit(lambda r, w, m: sparse.prune_and_regrow(r, w, m, 50, mode, grads=g, prunable=~frozen))
    res = fn(jax.random.PRNGKey(4), w, mask)
    assert int(res.mask.sum()) == 300
    assert int(res.dropped.sum()) == 50 and int(res.grown.sum()) == 50
    assert not bool((res.grown & res.dropped).any())
    assert not bool((res.dropped & frozen).any())  # frozen connections are never dropped
    # dropped weights are the 50 smallest-magnitude droppable ones
    droppable = np.asarray(mask & ~frozen)
    mags = np.abs(np.asarray(w))[droppable]
    thr = np.sort(mags)[49]
    assert np.all(np.abs(np.asarray(w))[np.asarray(res.dropped)] <= thr)
    if mode == "rigl":
        cand = np.asarray(~mask)
        best = np.sort(np.abs(np.asarray(g))[cand])[::-1][:50]
        np.testing.assert_allclose(np.sort(np.abs(np.asarray(g))[np.asarray(res.grown)])[::-1], best)


def test_pack_unpack_and_bytes():
    m = jax.random.bernoulli(jax.random.PRNGKey(0), 0.3, (13, 7))
    packed = sparse.pack_mask(m)
    assert packed.dtype == jnp.uint8 and packed.shape == (12,)
    np.testing.assert_array_equal(sparse.unpack_mask(packed, (13, 7)), m)
    assert sparse.masks_nbytes({"a": m, "b": jnp.ones((16,), bool)}) == 12 + 2


def test_ownership_first_owner_kept():
    own = sparse.init_ownership({"w": jnp.zeros((4,))})
    own = sparse.update_ownership(own, {"w": jnp.array([1, 1, 0, 0], bool)}, 0)
    own = sparse.update_ownership(own, {"w": jnp.array([0, 1, 1, 0], bool)}, 1)
    np.testing.assert_array_equal(own["w"], [0, 0, 1, -1])
