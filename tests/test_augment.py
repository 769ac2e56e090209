import jax
import jax.numpy as jnp
import numpy as np

from clj.data.augment import Augment, permute_pixels, random_crop, random_flip, rotate


def test_normalize_and_eval_is_deterministic():
    x = jnp.full((2, 4, 4, 3), 255, jnp.uint8)
    aug = Augment(mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), crop_pad=2, flip=True)
    out = aug(x, None, train=False)
    np.testing.assert_allclose(out, 2.0)


def test_crop_is_a_shifted_window():
    x = jnp.arange(2 * 6 * 6, dtype=jnp.float32).reshape(2, 6, 6, 1) + 1
    out = random_crop(x, jax.random.PRNGKey(0), 2)
    assert out.shape == x.shape
    for b in range(2):
        o = np.asarray(out[b, :, :, 0])
        nz = o[o > 0]
        # every non-padding value comes from the same image, in order
        assert set(nz.tolist()) <= set(np.asarray(x[b]).reshape(-1).tolist())


def test_flip_flips_some_and_keeps_others():
    x = jnp.arange(64 * 3, dtype=jnp.float32).reshape(64, 1, 3, 1)
    out = np.asarray(random_flip(x, jax.random.PRNGKey(1)))
    flipped = (out == np.asarray(x)[:, :, ::-1]).all(axis=(1, 2, 3))
    same = (out == np.asarray(x)).all(axis=(1, 2, 3))
    assert (flipped | same).all() and flipped.any() and same.any()


def test_permute_and_rotate():
    x = jnp.arange(16, dtype=jnp.uint8).reshape(1, 4, 4, 1)
    np.testing.assert_array_equal(permute_pixels(x, jnp.arange(16)), x)
    p = jnp.arange(16)[::-1]
    np.testing.assert_array_equal(permute_pixels(x, p).reshape(-1), np.arange(16)[::-1])
    np.testing.assert_array_equal(rotate(x, jnp.float32(0.0)), x)
    r360 = rotate(x, jnp.float32(360.0))
    np.testing.assert_allclose(np.asarray(r360, np.int32), np.asarray(x, np.int32), atol=1)
