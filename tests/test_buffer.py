"""Reservoir sampling: exact bookkeeping and uniform inclusion probability."""
import jax
import jax.numpy as jnp
import numpy as np

from clj.replay.buffer import init_buffer, reservoir_add, reservoir_slots, sample_indices


def _stream(buf, key, n_batches, B):
    def body(b, i):
        x = jnp.zeros((B, 1, 1, 1), jnp.uint8)
        y = (i * B + jnp.arange(B)).astype(jnp.int32)  # label = stream position
        return reservoir_add(b, jax.random.fold_in(key, i), x, y), None
    buf, _ = jax.lax.scan(body, buf, jnp.arange(n_batches))
    return buf


def test_fills_in_order_then_counts():
    buf = init_buffer(20, (1, 1, 1))
    buf = _stream(buf, jax.random.PRNGKey(0), 1, 10)
    assert int(buf.num_seen) == 10 and int(buf.size()) == 10
    np.testing.assert_array_equal(buf.y[:10], np.arange(10))
    buf = _stream(buf, jax.random.PRNGKey(1), 5, 10)
    assert int(buf.num_seen) == 60 and int(buf.size()) == 20


def test_reservoir_inclusion_uniform():
    """After N offers each example is kept with probability M/N (chi-square
    test over 4,000 independent streams, fixed seed)."""
    M, B, nb = 20, 10, 20
    N = B * nb
    trials = 4000
    keys = jax.random.split(jax.random.PRNGKey(42), trials)
    bufs = jax.jit(jax.vmap(lambda k: _stream(init_buffer(M, (1, 1, 1)), k, nb, B)))(keys)
    ys = np.asarray(bufs.y)                                   # [trials, M]
    assert all(len(set(r)) == M for r in ys[:50])              # no duplicates in a buffer
    counts = np.bincount(ys.reshape(-1), minlength=N)
    expected = trials * M / N                                  # 400 per example
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    # df = N - 1 = 199: the 99.9% quantile of chi2(199) is about 273.
    assert chi2 < 273, chi2
    # early and late examples alike (no position bias)
    assert abs(counts[:20].mean() - counts[-20:].mean()) < 0.1 * expected


def test_batch_collisions_later_example_wins():
    # Past capacity, every example of a batch draws a slot; where two draw the
    # same slot only the later keeps it.
    slots = reservoir_slots(jax.random.PRNGKey(3), jnp.int32(1000), 512, 4)
    s = np.asarray(slots)
    kept = s[s < 4]
    assert len(kept) == len(set(kept.tolist()))                # each slot written at most once
    assert len(kept) == 4                                      # 512 draws hit all 4 slots


def test_collision_rule_matches_sequential_reference():
    """Compare the vectorised insert with a sequential loop using the same draws."""
    M, B = 5, 64
    key = jax.random.PRNGKey(7)
    num_seen = 10
    pos = num_seen + np.arange(B)
    u = np.asarray(jax.random.uniform(key, (B,), jnp.float32))
    r = np.minimum(np.floor(u * (pos + 1).astype(np.float32)).astype(int), pos)
    ref = -np.ones(M, int)
    for i in range(B):                                         # Algorithm R, one by one
        if r[i] < M:
            ref[r[i]] = i
    slots = np.asarray(reservoir_slots(key, jnp.int32(num_seen), B, M))
    got = -np.ones(M, int)
    for i, sl in enumerate(slots):
        if sl < M:
            got[sl] = i
    np.testing.assert_array_equal(got, ref)


def test_sample_without_replacement_and_padding():
    buf = init_buffer(50, (1, 1, 1))
    buf = _stream(buf, jax.random.PRNGKey(0), 1, 10)           # 10 filled
    idx, valid = sample_indices(buf, jax.random.PRNGKey(1), 16)
    idx, valid = np.asarray(idx), np.asarray(valid)
    assert valid.sum() == 10 and len(set(idx[valid].tolist())) == 10
    assert (idx < 10).all()
    buf = _stream(buf, jax.random.PRNGKey(2), 10, 10)          # full
    idx, valid = sample_indices(buf, jax.random.PRNGKey(3), 16)
    assert np.asarray(valid).all() and len(set(np.asarray(idx).tolist())) == 16
    empty = init_buffer(8, (1, 1, 1))
    _, valid = sample_indices(empty, jax.random.PRNGKey(0), 4)
    assert not np.asarray(valid).any()
