"""The cluttered-object benchmark (clj.data.clutter): masks are the pasted
object's exact support, generation is deterministic per seed, the cache
round-trips, and the source is reachable through load_dataset."""
import numpy as np
import pytest

from clj.data import clutter
from conftest import requires_data


def _objects(n, seed=0):
    """Random 28x28 'objects': a filled blob with a zero margin."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 28, 28), np.uint8)
    x[:, 5:23, 7:21] = rng.integers(1, 256, (n, 18, 14))
    return x, rng.integers(0, 10, n)


def test_mask_is_the_pasted_objects_support():
    obj, y = _objects(40)
    pool = np.random.default_rng(1).integers(0, 256, (30, 28, 28)).astype(np.uint8)
    p = clutter.ClutterParams(canvas=40, num_train=40, num_test=1, noise_std=20.0)
    img, mask, layer, bg = clutter.composite(obj, y, pool, p, np.random.default_rng(0), train=True,
                                             chunk=16, return_layers=True)
    assert img.shape == mask.shape == (40, 40, 40) and img.dtype == np.uint8 and mask.dtype == bool
    np.testing.assert_array_equal(mask, layer > 0)
    np.testing.assert_array_equal(img[~mask], bg[~mask])  # outside the object: the clutter only
    full = layer == 255
    np.testing.assert_array_equal(img[full], 255)  # opaque ink shows the object only
    assert (bg > 0).mean() > 0.2  # there is clutter
    # At scale 1 (28 px) the object layer is the object itself, translated.
    p1 = clutter.ClutterParams(canvas=40, obj_min=0.7, obj_max=0.7, num_clutter=0, noise_std=0.0)
    img1, mask1 = clutter.composite(obj, y, pool, p1, np.random.default_rng(3), train=False)
    for i in range(5):
        rows, cols = np.nonzero(mask1[i])
        r0, c0 = rows.min() - 5, cols.min() - 7  # the blob starts at (5, 7) in the object
        np.testing.assert_array_equal(img1[i, r0:r0 + 28, c0:c0 + 28], obj[i])
        assert mask1[i].sum() == (obj[i] > 0).sum()
    # Spurious patch: training images only, at the class's column.
    ps = clutter.ClutterParams(canvas=40, spurious_patch=3, num_clutter=0, noise_std=0.0)
    tr, _ = clutter.composite(obj, y, pool, ps, np.random.default_rng(0), train=True)
    te, _ = clutter.composite(obj, y, pool, ps, np.random.default_rng(0), train=False)
    for i in range(5):
        c = int(y[i]) * 3
        assert (tr[i, :3, c:c + 3] == 255).all()
    assert not (tr[:, :3] == te[:, :3]).all()


def test_blur_masks():
    m = np.zeros((2, 16, 16), bool)
    m[0, 5:9, 6:10] = True
    s = clutter.blur_masks(m, 2.0)
    np.testing.assert_allclose(s.sum(axis=(1, 2)), 1.0, rtol=1e-5)
    np.testing.assert_allclose(s[1], 1.0 / 256)  # empty mask -> uniform
    assert np.unravel_index(np.argmax(s[0]), (16, 16)) in {(6, 7), (6, 8), (7, 7), (7, 8)}
    np.testing.assert_allclose(s[0][:14], s[0][13::-1], atol=1e-7)  # symmetric about row 6.5, like the mask
    np.testing.assert_allclose(clutter.blur_masks(m, 0.0)[0][m[0]], 1.0 / 16)


@requires_data("mnist", "fashion_mnist")
def test_deterministic_per_seed_cached_and_registered(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    kw = dict(canvas=32, num_train=64, num_test=32)
    a = clutter.load_clutter("clutter_mnist", seed=3, cache=False, **kw)
    b = clutter.load_clutter("clutter_mnist", seed=3, **kw)  # generates and writes the cache
    c = clutter.load_clutter("clutter_mnist", seed=4, cache=False, **kw)
    for f in ("x_train", "y_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a.dataset, f), getattr(b.dataset, f))
    np.testing.assert_array_equal(a.mask_train, b.mask_train)
    assert not np.array_equal(a.dataset.x_train, c.dataset.x_train)
    np.testing.assert_array_equal(a.dataset.y_train, c.dataset.y_train)  # the same objects, new placements
    files = list((tmp_path / "clj" / "clutter").glob("clutter_mnist-*.npz"))
    assert len(files) == 1
    d = clutter.load_clutter("clutter_mnist", seed=3, **kw)  # from the cache
    np.testing.assert_array_equal(d.dataset.x_test, a.dataset.x_test)
    np.testing.assert_array_equal(d.mask_test, a.mask_test)
    assert a.dataset.image_shape == (32, 32, 1) and a.dataset.num_classes == 10
    from clj.data import DATASETS, load_dataset

    assert "clutter_mnist" in DATASETS and "clutter_fashion_mnist" in DATASETS
    e = load_dataset("clutter_mnist", seed=3, **kw)
    np.testing.assert_array_equal(e.x_train, a.dataset.x_train)
    with pytest.raises(TypeError, match="unexpected option"):
        load_dataset("clutter_mnist", size=3)
    with pytest.raises(ValueError, match="canvas=8"):
        load_dataset("clutter_mnist", canvas=8)


@requires_data("mnist", "fashion_mnist")
def test_spurious_patch_marks_training_images_only(tmp_path, monkeypatch):
    """The spurious-feature test's premise: with ``spurious_patch`` the training
    composites carry the class's white square and nothing else changes; the
    test composites are exactly those of the plain benchmark (a leak into the
    test split would make the patch a valid cue and void the test)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    kw = dict(canvas=40, num_train=64, num_test=32)
    q = 4
    plain = clutter.load_clutter("clutter_mnist", seed=0, cache=False, **kw).dataset
    spur = clutter.load_clutter("clutter_mnist", seed=0, cache=False, spurious_patch=q, **kw).dataset
    np.testing.assert_array_equal(spur.x_test, plain.x_test)
    np.testing.assert_array_equal(spur.y_train, plain.y_train)
    patch = np.zeros(plain.x_train.shape, bool)
    for i, c in enumerate(plain.y_train):
        patch[i, :q, int(c) * q:(int(c) + 1) * q] = True
    assert (spur.x_train[patch] == 255).all()
    np.testing.assert_array_equal(spur.x_train[~patch], plain.x_train[~patch])
    assert (plain.x_train[patch] != 255).mean() > 0.3  # the patch is new information, not already there
    # The config path (config.clutter -> the run's scenario) carries the same split.
    from clj.preflight import load_scenario
    from clj.configs.ser_clutter_common import clutter_config

    c = clutter_config("derpp")  # data seed 0
    c.clutter.update(dict(spurious_patch=q, **kw))
    sc = load_scenario(c)
    np.testing.assert_array_equal(sc.x_test, plain.x_test)
