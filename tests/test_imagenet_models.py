"""ImageNet-scale networks: ResNet-18 with the ImageNet stem (torchvision's
``resnet18``), its MEMO / DER (Yan) cut as PyCIL makes it, and SER's
modulated ResNet-18 with the ImageNet stem at 288x384.

The parameter counts of PyCIL (commit 87cc4110d60765dc3f64af7ef7a693efed8418ff)
and torchvision were computed in the reference environment with CPU torch::

    OMP_NUM_THREADS=1 /work/venvs/ref/bin/python - <<'EOF'
    import sys, torch, torchvision
    sys.path.insert(0, "/work/refs/G-U-N+PyCIL")
    from convs.memo_resnet import get_resnet18_imagenet
    from convs.resnet import resnet18
    n = lambda m: sum(p.numel() for p in m.parameters())
    g, s = get_resnet18_imagenet()                 # MEMO's memo_resnet18
    print(n(g), n(s))                              # 2782784 8393728
    a = dict(dataset="imagenet100", model_name="der", init_cls=10, increment=10)
    print(n(resnet18(args=a)))                     # 11176512 (DER's backbone, B0: 7x7 stem)
    a["init_cls"] = 50
    print(n(resnet18(args=a)))                     # 11168832 (B50: PyCIL's 3x3 stem + max-pool)
    print(n(torchvision.models.resnet18()))        # 11689512
    EOF
"""
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from clj.errors import ConfigError
from clj.models import count_params, get_model, resnet18_split_param_counts
from clj.models import growing
from clj.models.registry import get_split
from clj.models.resnet import ResNet18, ResNet18Backbone, ResNet18Deep, ResNet18Shallow
from clj.models.saliency import ModulatedResNet18, SaliencyNet, input_multiple

TORCHVISION_RESNET18_1000 = 11_689_512   # torchvision.models.resnet18(): parameters() incl. BN scale/bias
PYCIL_MEMO_GENERALIZED = 2_782_784       # convs/memo_resnet.py GeneralizedResNet_imagenet (conv1..layer3)
PYCIL_MEMO_SPECIALIZED = 8_393_728       # convs/memo_resnet.py SpecializedResNet_imagenet (layer4)
PYCIL_DER_RESNET18_B0 = 11_176_512       # convs/resnet.py resnet18, ImageNet, init_cls == increment
PYCIL_RESNET18_B50 = 11_168_832          # the same with init_cls != increment (3x3 conv + max-pool)

KEY = jax.random.PRNGKey(0)
FAST_KEY = jax.random.key(0, impl="rbg")  # cheap ResNet initialisers on the CPU


def _count(module, shape, **kw):
    v = jax.eval_shape(lambda k: module.init(k, jnp.zeros(shape, jnp.float32), **kw), KEY)
    return count_params(v["params"]), v


def test_resnet18_imagenet_has_torchvision_parameter_count():
    n, v = _count(get_model("resnet18_imagenet", 1000), (1, 224, 224, 3))
    assert n == TORCHVISION_RESNET18_1000
    bb = v["params"]["backbone"]
    assert bb["stem_conv"]["kernel"].shape == (7, 7, 3, 64)
    assert count_params(v["params"]["head"]) == 512 * 1000 + 1000
    # the stem is a model field of every ResNet-18; the parameter tree is the same
    assert _count(ResNet18(1000, stem="imagenet"), (1, 224, 224, 3))[0] == TORCHVISION_RESNET18_1000
    assert _count(get_model("resnet18", 1000, stem="conv3_maxpool"), (1, 224, 224, 3))[0] \
        == PYCIL_RESNET18_B50 + 513_000


def test_memo_and_der_split_match_pycil():
    gen, spec, d = get_split("resnet18_imagenet", shared=True)
    assert d == 512 and isinstance(gen, ResNet18Shallow) and isinstance(spec, ResNet18Deep)
    n_gen, vg = _count(gen, (1, 224, 224, 3))
    h = jax.eval_shape(lambda v: gen.apply(v, jnp.zeros((1, 224, 224, 3))), vg)
    assert h.shape == (1, 14, 14, 256)  # layer3's map: stride 16
    n_spec, _ = _count(spec, h.shape)
    assert (n_gen, n_spec) == (PYCIL_MEMO_GENERALIZED, PYCIL_MEMO_SPECIALIZED)
    assert resnet18_split_param_counts() == {"shallow": PYCIL_MEMO_GENERALIZED, "deep": PYCIL_MEMO_SPECIALIZED,
                                             "total": PYCIL_DER_RESNET18_B0}
    cfg = ml_collections.ConfigDict(dict(name="resnet18_imagenet", dtype="float32"))
    assert growing.split_param_counts("memo", cfg, (224, 224, 3)) == resnet18_split_param_counts()
    none, whole, d = growing.split_modules("dynamic_er", cfg)  # DER (Yan): the whole backbone per task
    assert none is None and d == 512 and _count(whole, (1, 224, 224, 3))[0] == PYCIL_DER_RESNET18_B0
    assert growing.split_modules("memo", cfg)[0].dtype == jnp.float32
    assert growing.split_modules("memo", ml_collections.ConfigDict(dict(
        name="resnet18_imagenet", dtype="bfloat16", width=8)))[1] == ResNet18Deep(8, jnp.bfloat16)
    with pytest.raises(ConfigError, match="model.num_blocks=5 does not apply"):
        growing.split_modules("memo", ml_collections.ConfigDict(dict(name="resnet18_imagenet", num_blocks=5)))
    with pytest.raises(ConfigError, match="model.stem='vit' is unknown"):
        growing.split_modules("memo", ml_collections.ConfigDict(dict(name="resnet18_imagenet", stem="vit")))


def test_shallow_then_deep_is_the_backbone():
    """The cut composes back to the plain backbone (same parameter names)."""
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 64, 64, 3))
    bb = ResNet18Backbone(width=4, stem="imagenet")

    @jax.jit
    def both(k, x):  # one compiled program
        v = bb.init(k, x)
        sub = lambda keep: {c: {n: t for n, t in v[c].items() if keep(n)} for c in v}  # noqa: E731
        h = ResNet18Shallow(4).apply(sub(lambda n: n != "stage_4"), x)
        return bb.apply(v, x), h, ResNet18Deep(4).apply(sub(lambda n: n == "stage_4"), h)

    f, h, g = both(FAST_KEY, x)
    assert h.shape == (2, 4, 4, 16)
    np.testing.assert_allclose(g, f, rtol=1e-5, atol=1e-5)


def test_growing_net_over_resnet18_imagenet():
    """MEMO's growing network over the ImageNet ResNet-18 (small width):
    T blocks of stage 4, features T * 8 * width."""
    cfg = ml_collections.ConfigDict(dict(name="resnet18_imagenet", width=4, dtype="float32"))
    net = growing.build("memo", cfg, num_tasks=2, num_classes=4, aux_width=3)

    @jax.jit
    def run(k):
        params, stats = net.init(k, k, (32, 32, 3))
        return params, net.features(params, stats, jnp.ones((2, 32, 32, 3)), live=1, gen_train=True, train=False)

    params, (feats, _, f_new) = run(FAST_KEY)
    assert set(params) == {"gen", "spec", "head", "aux"} and net.D == 32
    assert params["spec"]["stage_4"]["block_0"]["conv1"]["kernel"].shape == (2, 3, 3, 16, 32)
    assert feats.shape == (2, 64) and f_new.shape == (2, 32)
    assert np.all(np.asarray(feats[:, 32:]) == 0)  # block 1 not live yet


def test_forward_224_batch_2():
    model = get_model("resnet18_imagenet", 100)
    x = jax.random.normal(jax.random.PRNGKey(2), (2, 224, 224, 3))
    logits, feats = jax.jit(lambda k, x: model.apply(model.init(k, x[:1]), x, return_features=True))(FAST_KEY, x)
    assert logits.shape == (2, 100) and feats.shape == (2, 512)
    assert logits.dtype == feats.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(logits)))


def test_bfloat16_compute_float32_parameters():
    """``model.dtype=bfloat16``: computation in bfloat16 (the stem's
    convolution and max-pool included), float32 parameters, BN statistics
    and logits (resnet32 in tests/test_models.py covers the numeric
    bfloat16 + BatchNorm path)."""
    model = get_model("resnet18_imagenet", 10, width=4, dtype="bfloat16")
    x = jax.random.normal(jax.random.PRNGKey(3), (2, 64, 64, 3))

    @jax.jit
    def run(k, x):
        v = model.init(k, x)
        out, upd = model.apply(v, x, train=True, mutable=["batch_stats"])
        return v, out, upd

    v, out, upd = run(FAST_KEY, x)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(v))
    assert out.dtype == jnp.float32 and np.all(np.isfinite(np.asarray(out)))
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(upd))
    stem = jax.make_jaxpr(lambda v, x: model.apply(v, x))(v, x)
    assert "bf16[2,16,16,4]" in str(stem)  # the max-pooled stem output is computed in bfloat16


def test_ser_modulated_resnet18_imagenet_stem_at_288x384():
    """SER's two networks with the ImageNet stem on one 288x384 image: the
    encoder's five pre-ReLU features have the classifier's shapes, the
    saliency map is input-sized, the classifier runs modulated."""
    x = jax.random.normal(jax.random.PRNGKey(4), (1, 288, 384, 3))
    sal = SaliencyNet(width=64, stem="imagenet")
    cls = ModulatedResNet18(100, width=64, stem="imagenet")

    @jax.jit
    def run(k, x):  # one compiled program: both inits, the saliency pass, the modulated logits
        sv = sal.init({"params": k, "dropout": k}, x)
        cv = cls.init(k, x)
        pred, feats = sal.apply(sv, x)
        return cv, pred, feats, cls.apply(cv, x, sal_feats=feats)

    cv, pred, feats, logits = run(FAST_KEY, x)
    assert count_params(cv["params"]) == TORCHVISION_RESNET18_1000 - 900 * 513  # 100-class head
    assert pred.shape == (1, 288, 384, 1) and float(pred.min()) > 0 and float(pred.max()) < 1
    assert [f.shape[1:3] for f in feats] == [(144, 192), (72, 96), (36, 48), (18, 24), (9, 12)]
    assert logits.shape == (1, 100) and np.all(np.isfinite(np.asarray(logits)))
    assert input_multiple("imagenet") == 32 and input_multiple("cifar") == 8


def test_ser_cifar_stem_at_288x384_shapes():
    """SER's code's own stem (3x3, no pool) at 288x384: the shapes of
    docs/ser.md's table (shape-only: ~130 GFLOP per forward)."""
    x = jax.ShapeDtypeStruct((1, 288, 384, 3), jnp.float32)
    sal = SaliencyNet(width=64)
    sv = jax.eval_shape(lambda k: sal.init({"params": k, "dropout": k}, jnp.zeros(x.shape)), KEY)
    pred, feats = jax.eval_shape(sal.apply, sv, x)
    assert pred.shape == (1, 288, 384, 1)
    assert [f.shape[1:] for f in feats] == [(288, 384, 64), (288, 384, 64), (144, 192, 128), (72, 96, 256),
                                            (36, 48, 512)]


def test_ser_init_with_the_imagenet_stem():
    """``model.name='resnet18_imagenet'`` gives SER's networks the ImageNet
    stem and pads digits (8x8) to a multiple of 32; an unknown stem and any
    augmentation are refused by the config check."""
    from clj.config import base_config, validate
    from clj.methods.ser import ser
    from clj.train.loop import load_scenario

    c = base_config()
    c.method = "ser_er"
    c.dataset = "digits"
    c.model = dict(name="resnet18_imagenet", width=4)
    c.replay.buffer_size = 20
    c.ser = ser.ser_config()
    c.ser.sal_init = "scratch"
    validate(c)
    sc = load_scenario(c)
    st = jax.eval_shape(lambda k: ser.init(k, c, sc, "er"), jax.random.PRNGKey(0))  # shapes only
    assert st.static.in_shape == (32, 32, 1) and st.static.pad == (24, 24)
    assert st.cls.model.stem == "imagenet" and st.sal.model.stem == "imagenet"
    assert st.cls.params["backbone"]["stem_conv"]["kernel"].shape == (7, 7, 1, 4)
    bad = c.copy_and_resolve_references()
    bad.model.stem = "conv3_maxpool"
    with pytest.raises(ConfigError, match="model.stem='conv3_maxpool' is unknown"):
        validate(bad)
    bad = c.copy_and_resolve_references()
    bad.augment.preset = "pycil_imagenet"
    with pytest.raises(ConfigError, match="augment.flip=True: SER trains without augmentation"):
        validate(bad)


def test_stem_names_mirror_and_config_check():
    """The JAX-free config check knows the stems of clj.models.resnet and
    refuses a stem on a model without one."""
    from clj import config as cfg
    from clj.config import base_config, validate
    from clj.methods.ser.section import SER_STEMS
    from clj.models.resnet import RESNET_STEMS

    assert cfg.RESNET_STEMS == RESNET_STEMS and set(SER_STEMS) <= set(RESNET_STEMS)
    c = base_config()
    c.model = dict(name="resnet18", stem="imagenet", dtype="float32")
    validate(c)
    c.model.stem = "vit"
    with pytest.raises(ConfigError, match="model.stem='vit' is unknown; valid: cifar, imagenet, conv3_maxpool"):
        validate(c)
    c.model = dict(name="mlp", stem="imagenet")
    with pytest.raises(ConfigError, match="model.stem='imagenet' does not apply to model.name='mlp'"):
        validate(c)
