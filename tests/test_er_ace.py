"""ER-ACE (clj.methods.baselines.er_ace): the ACE mask (docs/baselines.md) and the step."""
import jax
import jax.numpy as jnp
import numpy as np

from clj.methods.baselines import er_ace


def test_mask_present_and_open_tail():
    seen = jnp.zeros((10,), bool).at[jnp.array([0, 1, 2])].set(True)
    active, new_seen = er_ace.ace_mask(seen, jnp.array([3, 3, 5], jnp.int32))
    # max seen = 5 < 9: columns >= 5 open; 3 present; 0, 1, 2, 4 masked.
    np.testing.assert_array_equal(np.asarray(active), [0, 0, 0, 1, 0, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(np.asarray(new_seen), [1, 1, 1, 1, 0, 1, 0, 0, 0, 0])


def test_mask_no_open_tail_at_last_class():
    seen = jnp.zeros((4,), bool)
    active, _ = er_ace.ace_mask(seen, jnp.array([3, 1], jnp.int32))
    np.testing.assert_array_equal(np.asarray(active), [0, 1, 0, 1])


def test_masked_logits_only_when_applied():
    logits = jnp.arange(8, dtype=jnp.float32).reshape(2, 4)
    active = jnp.array([True, False, True, False])
    same = er_ace.masked_logits(logits, active, jnp.array(False))
    np.testing.assert_array_equal(np.asarray(same), np.asarray(logits))
    m = np.asarray(er_ace.masked_logits(logits, active, jnp.array(True)))
    assert (m[:, [1, 3]] == np.finfo(np.float32).min).all()
    np.testing.assert_array_equal(m[:, [0, 2]], np.asarray(logits)[:, [0, 2]])
    # finfo.min (not -inf) keeps the CE finite.
    ce = jax.nn.log_softmax(jnp.asarray(m))
    assert np.isfinite(np.asarray(ce[:, [0, 2]])).all()
