"""Exact properties of clj.sparse: densities, random masks, regrowth, storage
(the masked update: tests/test_masked_update.py)."""
import jax
import jax.numpy as jnp
import numpy as np
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


def test_random_regrow_count_traced_and_within_allowed():
    """NISPA's growth: min(k, #candidates) new positions, all inactive and
    allowed, for a traced k (one compile for every k)."""
    mask = sparse.random_mask(jax.random.PRNGKey(0), (20, 10), 50)
    allowed = jnp.arange(200).reshape(20, 10) % 3 != 0
    grow = jax.jit(lambda k: sparse.random_regrow_count(jax.random.PRNGKey(1), mask, k, allowed))
    n_cand = int((~mask & allowed).sum())
    for k in (0, 7, 10_000):
        new = grow(jnp.int32(k))
        grown = new & ~mask
        assert bool(jnp.all(new >= mask)) and not bool((grown & ~allowed).any())
        assert int(grown.sum()) == min(k, n_cand)
    assert grow._cache_size() == 1


def test_pack_unpack_and_bytes():
    m = jax.random.bernoulli(jax.random.PRNGKey(0), 0.3, (13, 7))
    packed = sparse.pack_mask(m)
    assert packed.dtype == jnp.uint8 and packed.shape == (12,)
    np.testing.assert_array_equal(sparse.unpack_mask(packed, (13, 7)), m)
    assert sparse.masks_nbytes({"a": m, "b": jnp.ones((16,), bool)}) == 12 + 2
