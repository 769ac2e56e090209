"""Tests for clj.models: shapes, exact parameter counts, BN updates, dtypes, registry."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clj.models import (
    MLP,
    MODEL_NAMES,
    RESNET32_FEATURE_DIM,
    ResNet18,
    ResNet32,
    ResNet32Backbone,
    ResNet32Deep,
    ResNet32Shallow,
    SmallCNN,
    count_params,
    feature_dim,
    get_model,
    init_variables,
    param_bytes,
    resnet32_split_param_counts,
)

KEY = jax.random.PRNGKey(0)
FAST_KEY = jax.random.key(0, impl="rbg")

# name -> (small input shape used for forward tests, kwargs, expected feature dim)
# ResNets work on any spatial size divisible by their total stride; 8x8 keeps
# the eager CPU passes fast. The full-width ResNet-18 is only checked through
# jax.eval_shape (no FLOPs) to keep the suite well under its time budget.
CASES = {
    "mlp": ((2, 28, 28, 1), {}, 100),
    "small_cnn": ((2, 8, 8, 1), {}, 128),
    "resnet18": ((2, 32, 32, 3), {}, 512),
    "resnet18_reduced": ((2, 8, 8, 3), {}, 160),
    "resnet18_imagenet": ((2, 32, 32, 3), {"width": 8}, 64),
    "resnet32": ((2, 8, 8, 3), {}, 64),
}
SHAPE_ONLY = {"resnet18"}
BN_MODELS = {"resnet18", "resnet18_reduced", "resnet18_imagenet", "resnet32"}
NUM_CLASSES = 7

_INIT_CACHE = {}


def _shapes(model, input_shape):
    return jax.eval_shape(
        lambda k: model.init(k, jnp.zeros(input_shape, jnp.float32)), KEY
    )


def _variables(name):
    """float32 variables for CASES[name], initialised once per session."""
    if name not in _INIT_CACHE:
        shape, kwargs, _ = CASES[name]
        model = get_model(name, NUM_CLASSES, **kwargs)
        if name in SHAPE_ONLY:
            _INIT_CACHE[name] = _shapes(model, shape)
        else:
            # jit + the "rbg" PRNG keeps CPU compile time of the ResNet
            # initialisers low; init_variables itself is tested below.
            init = jax.jit(lambda k: model.init(k, jnp.zeros(shape, jnp.float32)))
            _INIT_CACHE[name] = dict(init(FAST_KEY))
    return _INIT_CACHE[name]


def _apply(model, variables, x, name, **kw):
    if name in SHAPE_ONLY:
        return jax.eval_shape(lambda v, x: model.apply(v, x, **kw), variables, x)
    return model.apply(variables, x, **kw)


def test_registry_covers_all_names():
    assert set(MODEL_NAMES) == set(CASES)


@pytest.mark.parametrize("name", sorted(CASES))
def test_forward_shapes_and_features(name):
    shape, kwargs, dim = CASES[name]
    model = get_model(name, NUM_CLASSES, **kwargs)
    assert model.num_classes == NUM_CLASSES
    assert model.feature_dim == dim == feature_dim(model)
    variables = _variables(name)
    assert set(variables["params"].keys()) == {"backbone", "head"}
    assert variables["params"]["head"]["kernel"].shape == (dim, NUM_CLASSES)
    assert ("batch_stats" in variables) == (name in BN_MODELS)

    x = jax.random.normal(jax.random.PRNGKey(1), shape, jnp.float32)
    logits = _apply(model, variables, x, name, train=False)
    assert logits.shape == (2, NUM_CLASSES) and logits.dtype == jnp.float32
    logits2, feats = _apply(model, variables, x, name, train=False, return_features=True)
    assert feats.shape == (2, dim) and feats.dtype == jnp.float32
    if name in SHAPE_ONLY:
        return
    np.testing.assert_allclose(logits, logits2, rtol=1e-6, atol=1e-6)
    # Head over the features reproduces the logits.
    head = variables["params"]["head"]
    np.testing.assert_allclose(
        feats @ head["kernel"] + head["bias"], logits, rtol=1e-4, atol=1e-4
    )
    assert np.all(np.isfinite(np.asarray(logits)))


def test_small_cnn_28x28_and_bn_option():
    model = SmallCNN(num_classes=10, use_bn=True)
    variables = init_variables(model, KEY, (2, 28, 28, 1))
    assert "batch_stats" in variables
    out = model.apply(variables, jnp.ones((2, 28, 28, 1)), train=False)
    assert out.shape == (2, 10)
    assert "batch_stats" not in init_variables(SmallCNN(num_classes=10), KEY, (2, 8, 8, 1))


def test_mlp_param_count():
    shapes = _shapes(MLP(num_classes=10, hidden=(100, 100)), (1, 28, 28, 1))
    expected = 784 * 100 + 100 + 100 * 100 + 100 + 100 * 10 + 10
    assert expected == 89_610
    assert count_params(shapes["params"]) == 89_610
    assert count_params(shapes["params"]["head"]) == 1_010


def test_mlp_xavier_uniform_init_is_mammoths():
    """``model.weight_init="xavier_uniform"``: every weight inside Mammoth's bound
    sqrt(6 / (fan_in + fan_out)) with the uniform's variance (a^2 / 3), biases 0;
    the default stays Flax's LeCun normal (variance 1 / fan_in)."""
    from clj.config import base_config, validate
    from clj.errors import ConfigError

    x = jnp.zeros((1, 28, 28, 1))
    params = MLP(num_classes=10, hidden=(100, 100), weight_init="xavier_uniform").init(KEY, x)["params"]
    layers = [params["backbone"]["fc0"], params["backbone"]["fc1"], params["head"]]
    for layer, (fi, fo) in zip(layers, [(784, 100), (100, 100), (100, 10)]):
        w = np.asarray(layer["kernel"])
        a = np.sqrt(6.0 / (fi + fo))
        assert w.shape == (fi, fo) and np.abs(w).max() <= a
        assert abs(w.var() / (a * a / 3) - 1) < 0.1
        assert not np.asarray(layer["bias"]).any()
    w0 = np.asarray(MLP(num_classes=10, hidden=(100, 100)).init(KEY, x)["params"]["backbone"]["fc0"]["kernel"])
    assert abs(w0.var() * 784 - 1) < 0.1
    c = base_config()
    c.model.weight_init = "glorot"
    with pytest.raises(ConfigError, match="model.weight_init='glorot' is unknown; valid: lecun_normal, xavier_uniform"):
        validate(c)
    c.model.weight_init = "xavier_uniform"
    c.model.name = "small_cnn"
    with pytest.raises(ConfigError, match="does not apply to model.name='small_cnn'"):
        validate(c)


def test_resnet18_param_counts():
    shapes = _shapes(ResNet18(num_classes=10), (1, 32, 32, 3))
    assert count_params(shapes["params"]) == 11_173_962
    assert count_params(shapes["params"]["head"]) == 512 * 10 + 10
    reduced = _shapes(get_model("resnet18_reduced", 10), (1, 32, 32, 3))
    assert reduced["params"]["head"]["kernel"].shape == (160, 10)
    assert count_params(reduced["params"]["backbone"]["stem_conv"]) == 3 * 3 * 3 * 20


def test_resnet32_param_counts_and_split():
    shapes = _shapes(ResNet32(num_classes=10), (1, 32, 32, 3))
    backbone = shapes["params"]["backbone"]
    assert count_params(backbone) == 463_504
    assert count_params(shapes["params"]) == 463_504 + 64 * 10 + 10
    assert count_params(backbone["shallow"]) == 112_016
    assert count_params(backbone["deep"]) == 351_488
    # stem: conv 3*3*3*16 + BN (scale, bias) 2*16
    stem = {k: v for k, v in backbone["shallow"].items() if k.startswith("stem")}
    assert count_params(stem) == 432 + 32
    split = resnet32_split_param_counts()
    assert split == {"shallow": 112_016, "deep": 351_488, "total": 463_504}
    assert split["shallow"] + split["deep"] == 463_504
    # Option-A shortcuts are parameter-free.
    for stage in ("stage_2",):
        assert set(backbone["shallow"][stage]["block_0"]) == {"conv1", "bn1", "conv2", "bn2"}
    assert set(backbone["deep"]["stage_3"]["block_0"]) == {"conv1", "bn1", "conv2", "bn2"}


def test_resnet32_shallow_deep_compose_to_backbone():
    model = ResNet32(num_classes=NUM_CLASSES)
    variables = _variables("resnet32")
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 8, 8, 3))
    _, feats = model.apply(variables, x, return_features=True)

    def sub(part):
        return {
            "params": variables["params"]["backbone"][part],
            "batch_stats": variables["batch_stats"]["backbone"][part],
        }

    h = ResNet32Shallow().apply(sub("shallow"), x)
    assert h.shape == (2, 4, 4, 32)
    f = ResNet32Deep().apply(sub("deep"), h)
    assert f.shape == (2, 64)
    np.testing.assert_allclose(f, feats, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["resnet32", "small_cnn_bn"])
def test_batch_stats_update_in_train_mode(name):
    if name == "small_cnn_bn":
        model, shape = SmallCNN(num_classes=NUM_CLASSES, use_bn=True), (2, 8, 8, 1)
        variables = init_variables(model, KEY, shape)
    else:
        model, shape = get_model(name, NUM_CLASSES), CASES[name][0]
        variables = _variables(name)
    x = 3.0 + 2.0 * jax.random.normal(jax.random.PRNGKey(3), shape)
    (logits, feats), updates = model.apply(
        variables, x, train=True, return_features=True, mutable=["batch_stats"]
    )
    assert logits.shape == (2, NUM_CLASSES) and feats.shape == (2, model.feature_dim)
    assert set(updates) == {"batch_stats"}
    old = jax.tree_util.tree_leaves(variables["batch_stats"])
    new = jax.tree_util.tree_leaves(updates["batch_stats"])
    assert len(old) == len(new) > 0
    assert any(not np.allclose(a, b) for a, b in zip(old, new))
    assert jax.tree_util.tree_structure(variables["batch_stats"]) == jax.tree_util.tree_structure(
        updates["batch_stats"]
    )
    # Eval mode does not need (or change) mutable collections.
    out = model.apply({**variables, **updates}, x, train=False)
    assert out.shape == (2, NUM_CLASSES)


def test_batchnorm_momentum():
    model = SmallCNN(num_classes=2, use_bn=True)
    variables = init_variables(model, KEY, (2, 8, 8, 1))
    x = jax.random.normal(jax.random.PRNGKey(4), (2, 8, 8, 1))
    _, updates = model.apply(variables, x, train=True, mutable=["batch_stats"])
    # First conv has no bias when use_bn=True; running mean = 0.9*0 + 0.1*batch_mean.
    assert "bias" not in variables["params"]["backbone"]["conv0"]
    kernel = variables["params"]["backbone"]["conv0"]["kernel"]
    y = jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    expected_mean = 0.1 * jnp.mean(y, axis=(0, 1, 2))
    np.testing.assert_allclose(
        updates["batch_stats"]["backbone"]["bn0"]["mean"], expected_mean, rtol=1e-4, atol=1e-5
    )


@pytest.mark.parametrize("name", sorted(CASES))
def test_bfloat16_compute_returns_float32(name):
    shape, kwargs, dim = CASES[name]
    model = get_model(name, NUM_CLASSES, dtype=jnp.bfloat16, **kwargs)
    # Parameters (and BN statistics) are stored in float32 even for bf16 compute.
    for leaf in jax.tree_util.tree_leaves(_shapes(model, shape)):
        assert leaf.dtype == jnp.float32
    # ... so the float32 variables of the float32 model can be used directly.
    variables = _variables(name)
    x = jax.random.normal(jax.random.PRNGKey(5), shape)
    # The ResNet-18 variants are checked by shape/dtype only (resnet32 covers
    # the numeric bf16 + BatchNorm path) to keep CPU compile time down.
    mode = "resnet18" if name.startswith("resnet18") else name
    logits, feats = _apply(model, variables, x, mode, train=False, return_features=True)
    assert logits.dtype == jnp.float32 and logits.shape == (2, NUM_CLASSES)
    assert feats.dtype == jnp.float32 and feats.shape == (2, dim)
    if mode in SHAPE_ONLY:
        return
    assert np.all(np.isfinite(np.asarray(logits)))
    ref = get_model(name, NUM_CLASSES, **kwargs).apply(variables, x)
    np.testing.assert_allclose(logits, ref, rtol=0.1, atol=0.1 * float(jnp.abs(ref).max()) + 0.05)
    if name in BN_MODELS:
        logits_t, upd = model.apply(variables, x, train=True, mutable=["batch_stats"])
        assert logits_t.dtype == jnp.float32
        for leaf in jax.tree_util.tree_leaves(upd["batch_stats"]):
            assert leaf.dtype == jnp.float32


def test_count_params_and_param_bytes():
    tree = {"a": jnp.zeros((3, 4), jnp.float32), "b": {"c": jnp.zeros((5,), jnp.bfloat16)}}
    assert count_params(tree) == 17
    assert param_bytes(tree) == 12 * 4 + 5 * 2
    shapes = _shapes(MLP(num_classes=10), (1, 28, 28, 1))
    assert param_bytes(shapes["params"]) == 4 * 89_610
    assert count_params({}) == 0


def test_unknown_model_name():
    with pytest.raises(ValueError) as exc:
        get_model("resnet99", 10)
    msg = str(exc.value)
    assert "resnet99" in msg
    for name in MODEL_NAMES:
        assert name in msg


def test_registry_kwargs_forwarded():
    assert get_model("mlp", 3, hidden=(50, 20)).feature_dim == 20
    assert get_model("resnet18", 3).width == 64
    assert get_model("resnet18_reduced", 3).width == 20
    assert get_model("resnet18_reduced", 3, width=10).feature_dim == 80
    assert get_model("small_cnn", 3, width=8).width == 8


def test_growing_backbones_come_from_the_registry():
    """MEMO / DER (Yan) cut their backbone through the registry's ``split``:
    MEMO shares stem + stages 1-2 and replicates stage 3, DER replicates the
    whole backbone; a backbone without a split is refused by name."""
    import ml_collections

    from clj.errors import ConfigError
    from clj.models import growing
    from clj.models.registry import get_split, model_names

    assert model_names(growing=True) == ("resnet18_imagenet", "resnet32")
    gen, spec, d = get_split("resnet32", shared=True, num_blocks=1)
    assert (gen, spec, d) == (ResNet32Shallow(1), ResNet32Deep(1), RESNET32_FEATURE_DIM)
    assert get_split("resnet32", shared=False, num_blocks=2)[:2] == (None, ResNet32Backbone(2))
    with pytest.raises(ValueError, match="'mlp' cannot grow; valid names are: resnet18_imagenet, resnet32"):
        get_split("mlp", shared=True)
    cfg = ml_collections.ConfigDict(dict(name="mlp"))
    with pytest.raises(ConfigError, match="model.name='mlp' is not supported by memo; valid: resnet18_imagenet, "
                                          "resnet32"):
        growing.split_modules("memo", cfg)
    with pytest.raises(ConfigError, match="kind='der' is unknown"):
        growing.build("der", cfg, 2, 4, 3)
