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


# ------------------------------------------------- ImageNet-style transforms
import math  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import pytest  # noqa: E402
from scipy import stats  # noqa: E402

from clj.config import (AUGMENT_DEFAULTS, AUGMENT_NORMALIZATIONS, AUGMENT_PRESETS, ConfigError,  # noqa: E402
                        base_config, resolve_augment, validate)
from clj.data.augment import (NORMALIZATION_STATS, center_crop, random_brightness, resize_shorter_side,  # noqa: E402
                              resized_crop, sample_resized_crop_boxes)
from clj.methods.common import augment_from_config  # noqa: E402

SCENARIO = SimpleNamespace(mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3), dataset_name="test")
# jitted once per shape: one compilation instead of one per operation (CPU test time)
boxes_of = jax.jit(sample_resized_crop_boxes, static_argnums=(1, 2, 3, 4, 5))
crop_of = jax.jit(resized_crop, static_argnums=(2,))


def _image(h, w):
    """The test image of the torchvision references below: float [1, h, w, 1]."""
    i, j = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return jnp.asarray(((i * 7 + j * 13) % 256 / 255.0 * (1 + (i % 3)) / 3).astype(np.float32))[None, :, :, None]


# torchvision 0.28 (CPU torch 2.13), float tensor, antialias=True, on _image(10, 14):
#   F.resized_crop(x, 1, 2, 7, 11, [4, 5], InterpolationMode.BILINEAR, antialias=True)
TV_CROP_DOWN = [[0.148098, 0.226611, 0.317647, 0.408684, 0.487196],
                [0.125961, 0.181359, 0.245595, 0.30983, 0.365229],
                [0.213615, 0.290118, 0.378823, 0.467529, 0.544032],
                [0.174467, 0.227856, 0.28976, 0.351665, 0.405054]]
#   F.resized_crop(x, 2, 3, 4, 5, [6, 7], InterpolationMode.BILINEAR, antialias=True)
TV_CROP_UP = [[0.207843, 0.236975, 0.273389, 0.309804, 0.346218, 0.382633, 0.411765],
              [0.143137, 0.162558, 0.186835, 0.211111, 0.235388, 0.259664, 0.279085],
              [0.094553, 0.105882, 0.120044, 0.134205, 0.148366, 0.162527, 0.173856],
              [0.159041, 0.176844, 0.199097, 0.221351, 0.243604, 0.265857, 0.28366],
              [0.23268, 0.256956, 0.287302, 0.317647, 0.347993, 0.378338, 0.402614],
              [0.290196, 0.319328, 0.355742, 0.392157, 0.428571, 0.464986, 0.494118]]
#   F.center_crop(F.resize(x, 6, InterpolationMode.BILINEAR, antialias=True), 5)
TV_RESIZE_CENTER = [[0.103007, 0.145409, 0.18587, 0.228273, 0.272941],
                    [0.196102, 0.265359, 0.331445, 0.400703, 0.473662],
                    [0.180627, 0.232571, 0.282135, 0.334078, 0.388797],
                    [0.239922, 0.302996, 0.363181, 0.426255, 0.492699],
                    [0.2654, 0.324764, 0.381409, 0.440773, 0.503309]]


def test_resized_crop_and_eval_resize_equal_torchvision():
    """Crop + bilinear (antialiased) resize, shrinking and enlarging, and
    Resize(6) + CenterCrop(5), against torchvision's outputs on the same image."""
    x = jnp.concatenate([_image(10, 14), _image(10, 14)[:, :, ::-1]])  # second image: the box must not leak
    down = crop_of(x, jnp.asarray([[1, 2, 7, 11], [1, 1, 7, 11]], jnp.int32), (4, 5))
    np.testing.assert_allclose(down[0, :, :, 0], TV_CROP_DOWN, atol=2e-6)
    np.testing.assert_allclose(down[1, :, ::-1, 0], TV_CROP_DOWN, atol=2e-6)  # the mirrored box of the mirror
    up = crop_of(x[:1], jnp.asarray([[2, 3, 4, 5]], jnp.int32), (6, 7))
    np.testing.assert_allclose(up[0, :, :, 0], TV_CROP_UP, atol=2e-6)
    ev = jax.jit(lambda x: center_crop(resize_shorter_side(x, 6), 5))(x[:1])
    np.testing.assert_allclose(ev[0, :, :, 0], TV_RESIZE_CENTER, atol=2e-6)


def _truncated_cdfs(scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """CDFs of the area fraction s and of log(w / h) = l of the first box
    that fits a square image: (s, l) uniform on scale x log(ratio) restricted
    to s * exp(|l|) <= 1 (w and h within the side)."""
    a, b = scale
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    s = np.linspace(a, b, 200_001)
    ds = np.minimum(hi, -np.log(s)) - np.maximum(lo, np.log(s))  # length of the allowed l at s
    ls = np.linspace(lo, hi, 200_001)
    dl = np.minimum(b, np.exp(-np.abs(ls))) - a  # length of the allowed s at l

    def cdf(grid, dens):
        c = np.concatenate([[0.0], np.cumsum((dens[1:] + dens[:-1]) / 2 * np.diff(grid))])
        return lambda v: np.interp(v, grid, c / c[-1])

    return cdf(s, ds), cdf(ls, dl)


def test_resized_crop_boxes_follow_torchvision_distribution():
    """KS tests (4000 boxes, fixed key) of the area fractions and log aspect
    ratios against the truncated uniform / log-uniform laws; the same test
    rejects a ratio drawn uniformly instead of log-uniformly."""
    n, side = 4000, 1000
    boxes = np.asarray(boxes_of(jax.random.PRNGKey(0), n, side, side))
    top, left, h, w = boxes.T
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= side).all() and (left + w <= side).all()
    area = h * w / side ** 2
    log_ratio = np.log(w / h)
    cdf_s, cdf_l = _truncated_cdfs()
    assert stats.kstest(area, cdf_s).pvalue > 0.01
    assert stats.kstest(log_ratio, cdf_l).pvalue > 0.01
    assert area.min() >= 0.079 and log_ratio.min() >= math.log(3 / 4) - 0.01 and log_ratio.max() <= math.log(4 / 3) + 0.01
    # power: a uniform (not log-uniform) ratio, the same truncation, is rejected
    rs = np.random.RandomState(0)
    s_, r_ = rs.uniform(0.08, 1.0, 40_000), rs.uniform(3 / 4, 4 / 3, 40_000)
    keep = s_ * np.maximum(r_, 1 / r_) <= 1
    assert stats.kstest(np.log(r_[keep][:n]), cdf_l).pvalue < 1e-4
    # the offsets are uniform over the free range
    u = (top + 0.5) / (side - h + 1)
    assert stats.kstest(u[h < side // 2], "uniform").pvalue > 0.01


def test_resized_crop_fallback_is_torchvision_centre_crop():
    """No candidate fits (a wide image, areas near 1): the centred box at the
    nearest allowed ratio, as torchvision's fallback."""
    boxes = np.asarray(boxes_of(jax.random.PRNGKey(1), 5, 100, 400, (0.9, 1.0)))
    np.testing.assert_array_equal(boxes, [[0, 133, 100, 133]] * 5)  # w = round(100 * 4/3), left = (400-133)//2
    boxes = np.asarray(boxes_of(jax.random.PRNGKey(1), 3, 50, 50, (1.0, 1.0), (2.0, 3.0)))
    np.testing.assert_array_equal(boxes, [[12, 0, 25, 50]] * 3)  # tall-for-the-ratio image: h = round(50 / 2)


def test_brightness_factor_law_and_range():
    """ColorJitter(brightness=b): factors uniform in [max(0, 1-b), 1+b]
    (KS), outputs clipped to [0, 1]."""
    b = 63 / 255
    x = jnp.full((3000, 1, 1, 1), 0.25, jnp.float32)
    bright = jax.jit(random_brightness, static_argnums=(2,))
    f = np.asarray(bright(x, jax.random.PRNGKey(2), b))[:, 0, 0, 0] / 0.25
    assert f.min() >= 1 - b - 1e-6 and f.max() <= 1 + b + 1e-6
    assert stats.kstest(f, "uniform", args=(1 - b, 2 * b)).pvalue > 0.01
    y = np.asarray(bright(jnp.linspace(0, 1, 64).reshape(64, 1, 1, 1) * jnp.ones((64, 4, 4, 3)),
                          jax.random.PRNGKey(3), 1.5))  # factor in [0, 2.5]
    assert y.min() >= 0.0 and y.max() <= 1.0 and (y == 1.0).any()


def test_presets_are_one_switch_each_and_defaults_unchanged():
    c = base_config()
    assert augment_from_config(c.augment, SCENARIO) == Augment(mean=SCENARIO.mean, std=SCENARIO.std)
    assert set(AUGMENT_NORMALIZATIONS) == {"dataset", *NORMALIZATION_STATS}
    want = {
        "pycil_cifar": dict(crop_pad=4, flip=True, brightness=63 / 255, resized_crop=0, eval_resize=0, eval_crop=0),
        "mammoth_cifar": dict(crop_pad=4, flip=True, brightness=0.0, resized_crop=0, eval_resize=0, eval_crop=0),
        "pycil_imagenet": dict(crop_pad=0, flip=True, brightness=0.0, resized_crop=224, eval_resize=256,
                               eval_crop=224),
        "memo_imagenet1k": dict(crop_pad=0, flip=True, brightness=63 / 255, resized_crop=224, eval_resize=256,
                                eval_crop=224),
    }
    assert set(want) == set(AUGMENT_PRESETS)
    for name, fields in want.items():
        c = base_config()
        c.augment.preset = name
        validate(c)
        a = augment_from_config(c.augment, SCENARIO)
        assert {k: getattr(a, k) for k in fields} == fields, name
        stats_ = NORMALIZATION_STATS["imagenet" if "imagenet" in name else "cifar100"]
        assert (a.mean, a.std) == stats_ and a.normalize
        assert a.crop_scale == (0.08, 1.0) and a.crop_ratio == (3 / 4, 4 / 3)


def test_preset_conflicts_and_bad_values_are_refused():
    c = base_config()
    c.augment.preset = "pycil_cifar"
    c.augment.crop_pad = 2
    with pytest.raises(ConfigError, match="augment.crop_pad=2 is set together with augment.preset='pycil_cifar'"):
        validate(c)
    for field, value, msg in [("preset", "autoaugment", "augment.preset='autoaugment' is unknown"),
                              ("crop_scale", (0.5, 0.2), "augment.crop_scale=.* is invalid"),
                              ("crop_ratio", (0.0, 1.0), "augment.crop_ratio=.* is invalid"),
                              ("brightness", -0.1, "augment.brightness=-0.1 is invalid"),
                              ("normalization", "mnist", "augment.normalization='mnist' is unknown"),
                              ("resized_crop", -1, "augment.resized_crop=-1 is invalid")]:
        c = base_config()
        c.augment[field] = value
        with pytest.raises(ConfigError, match=msg):
            validate(c)
    c = base_config()
    c.augment.crop_pad, c.augment.resized_crop = 4, 24
    with pytest.raises(ConfigError, match="choose one random crop"):
        validate(c)
    assert resolve_augment({}) == {**AUGMENT_DEFAULTS, "crop_scale": (0.08, 1.0), "crop_ratio": (0.75, 4 / 3)}


@pytest.mark.parametrize("pair,shape", [(("mammoth_cifar", "pycil_cifar"), (4, 32, 32, 3)),
                                        (("pycil_imagenet", "memo_imagenet1k"), (2, 256, 320, 3))])
def test_presets_give_their_transforms(pair, shape):
    """Shapes, value ranges, determinism under a fixed key; the jittered
    preset is the plain one times a per-image factor in [1-b, 1+b], clipped
    (the same key draws the same crop and flip); the ImageNet evaluation is
    resize 256 + centre crop 224."""
    x = jnp.asarray(np.random.RandomState(0).randint(0, 256, shape), jnp.uint8)
    key = jax.random.PRNGKey(5)
    plain, jit_ = (augment_from_config(ml_collections_preset(p), SCENARIO) for p in pair)
    out = {}
    for name, a in zip(pair, (plain, jit_)):
        f = jax.jit(lambda x, k, a=a: a(x, k, train=True))
        y = f(x, key)
        np.testing.assert_array_equal(y, f(x, key))
        assert not np.allclose(y, f(x, jax.random.PRNGKey(6)))
        side = 224 if "imagenet" in name else 32
        assert y.shape == (shape[0], side, side, 3) and y.dtype == jnp.float32
        raw = y * jnp.asarray(a.std) + jnp.asarray(a.mean)  # back to [0, 1]
        assert float(raw.min()) >= -1e-5 and float(raw.max()) <= 1 + 1e-5
        out[name] = np.asarray(raw)
        ev = jax.eval_shape(lambda x, a=a: a(x, None, train=False), x)
        assert ev.shape == (shape[0], side, side, 3)
    b = 63 / 255
    ratio = out[pair[1]].reshape(shape[0], -1) / np.maximum(out[pair[0]].reshape(shape[0], -1), 1e-6)
    unclipped = (out[pair[0]].reshape(shape[0], -1) > 0.05) & (out[pair[1]].reshape(shape[0], -1) < 0.999)
    for i in range(shape[0]):
        r = ratio[i][unclipped[i]]
        assert r.max() - r.min() < 1e-3 and 1 - b - 1e-4 <= r.mean() <= 1 + b + 1e-4
    if "imagenet" in pair[0]:  # evaluation: Resize(256) of 256x320 is the identity, then the centre 224x224
        ev = np.asarray(jax.jit(lambda x: plain(x, None, train=False))(x)) * np.asarray(plain.std) \
            + np.asarray(plain.mean)
        np.testing.assert_allclose(ev, np.asarray(x[:, 16:240, 48:272], np.float32) / 255, atol=1e-5)


def ml_collections_preset(name):
    c = base_config()
    c.augment.preset = name
    return c.augment


def test_augment_vmaps_over_seed_keys():
    a = augment_from_config(ml_collections_preset("memo_imagenet1k"), SCENARIO)
    x = jnp.asarray(np.random.RandomState(1).randint(0, 256, (2, 40, 48, 3)), jnp.uint8)
    a = dataclasses_replace(a, resized_crop=16, eval_resize=20, eval_crop=16)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    y = jax.jit(jax.vmap(lambda k: a(x, k, train=True)))(keys)
    assert y.shape == (3, 2, 16, 16, 3) and not np.allclose(y[0], y[1])
    ev = jax.eval_shape(lambda x: a(x, None, train=False), x)
    assert a.output_shape((40, 48, 3), train=False) == (16, 16, 3) == ev.shape[1:]


def dataclasses_replace(a, **kw):
    import dataclasses

    return dataclasses.replace(a, **kw)


def test_loop_runs_an_augment_that_resizes(tmp_path):
    """The loop trains on RandomResizedCrop + flip + jitter outputs and
    evaluates on resize + centre crop outputs of another size than the
    stored 8x8 digits (ResNet-8: global pooling), above chance (task-IL,
    5 classes per task: 0.2); a model whose parameters depend on the input
    size is refused before any work."""
    from clj.config import validate_with_data
    from clj.train import Runner
    from clj.train.loop import load_scenario
    from tests.conftest import small_config

    c = small_config("finetune", **{"model.name": "resnet32", "scenario.increment": 5, "augment.resized_crop": 16,
                                    "augment.eval_resize": 16, "augment.eval_crop": 16, "augment.flip": True,
                                    "augment.brightness": 0.2})
    c.model.num_blocks = 1
    del c.model["hidden"]
    validate(c)
    res = Runner(c, str(tmp_path)).run()
    assert res["metrics"]["task_il"]["final_average_accuracy"] >= 0.3
    bad = small_config("finetune", **{"augment.resized_crop": 16})
    with pytest.raises(ConfigError, match="augment resizes the 8x8 images of digits to 8x8 and 16x16, but "
                                          "model.name='mlp' depends on the input size"):
        validate_with_data(bad, load_scenario(bad))


def test_a_preset_accepts_its_own_values():
    """The CIFAR-100 configs (crop pad 4 + flip) take the PyCIL preset as
    they are; another crop pad is refused."""
    from clj.config import load_config

    c = load_config("memo_cifar100_b0inc10")
    c.augment.preset = "pycil_cifar"
    r = resolve_augment(c.augment)
    assert (r["crop_pad"], r["flip"], r["brightness"], r["normalization"]) == (4, True, 63 / 255, "cifar100")
    c.augment.crop_pad = 2
    with pytest.raises(ConfigError, match=r"augment.crop_pad=2 is set together with augment.preset='pycil_cifar', "
                                          r"which fixes the whole transform \(augment.crop_pad=4\)"):
        resolve_augment(c.augment)


def test_new_augment_fields_keep_workdir_fingerprints():
    """At their defaults the new fields are left out of a run's identity, so
    the default workdir of an existing config (and its resume) is unchanged;
    a preset changes it."""
    import ml_collections

    from clj.workdir import fingerprint

    c = base_config()
    old = base_config()
    old.augment = ml_collections.ConfigDict(dict(crop_pad=0, flip=False, normalize=True))
    assert fingerprint(c) == fingerprint(old)
    c.augment.preset = "pycil_cifar"
    assert fingerprint(c) != fingerprint(old)
