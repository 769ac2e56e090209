"""Exemplar memory, herding, the memory-aligned budget, weight aligning and
distillation (issue 6)."""
import jax.numpy as jnp
import numpy as np
import pytest

from clj.methods import sections
from clj.methods.cil.section import CIL
from clj.methods.sections import section_config
from clj.methods.cil import common as cc
from clj.models import resnet32_split_param_counts
from clj.replay import exemplars as ex


def test_herding_equals_brute_force():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(23, 6)).astype(np.float32)
    idx, ok = ex.herding_select(jnp.asarray(feats), jnp.ones(23, bool), 9)
    assert np.asarray(ok).all()
    assert np.asarray(idx).tolist() == ex.herding_reference(feats.astype(np.float64), 9)
    assert len(set(np.asarray(idx).tolist())) == 9  # without replacement


def test_herding_per_class_with_early_stop():
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(20, 4)).astype(np.float32)
    labels = np.array([0] * 3 + [1] * 17, np.int32)
    rng.shuffle(labels)
    idx, ok = ex.herding_classes(jnp.asarray(feats), jnp.asarray(labels), jnp.asarray([0, 1]), 5)
    idx, ok = np.asarray(idx), np.asarray(ok)
    for k, c in enumerate([0, 1]):
        rows = np.flatnonzero(labels == c)
        ref = [int(rows[j]) for j in ex.herding_reference(feats[rows].astype(np.float64), 5)]
        assert idx[k][ok[k]].tolist() == ref
    assert ok[0].tolist() == [True, True, True, False, False]  # class 0 ran out after 3
    assert ok[1].all()


def test_reduce_then_construct_keeps_herding_order():
    mem = ex.init_memory(10, (2, 2, 1), 4, 3)
    x = jnp.arange(8, dtype=jnp.uint8).reshape(8, 1, 1, 1) * jnp.ones((8, 2, 2, 1), jnp.uint8)
    # classes 0 and 1, 4 exemplars each, herding order given by idx
    idx = jnp.asarray([[3, 1, 0, 2], [7, 6, 4, 5]], jnp.int32)
    ok = jnp.ones((2, 4), bool)
    mem = ex.add_exemplars(mem, x, idx, ok, jnp.asarray([0, 1]))
    assert int(mem.count()) == 8
    mem = ex.reduce_memory(mem, 2)
    assert int(mem.count()) == 4
    assert np.asarray(mem.y[:4]).tolist() == [0, 0, 1, 1]
    assert np.asarray(mem.x[:4, 0, 0, 0]).tolist() == [3, 1, 7, 6]
    assert np.asarray(mem.y[4:]).tolist() == [-1] * 6
    # construct a new class with one invalid (ran-out) step
    mem = ex.add_exemplars(mem, x, jnp.asarray([[5, 2]]), jnp.asarray([[True, False]]), jnp.asarray([2]))
    assert int(mem.count()) == 5
    assert int(mem.y[4]) == 2 and int(mem.x[4, 0, 0, 0]) == 5 and int(mem.rank[4]) == 0


def test_class_means_and_nme():
    f = jnp.asarray([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0], [5.0, 5.0]])
    y = jnp.asarray([0, 1, 1, -1])
    means = ex.class_means(f, y, y >= 0, 3)
    np.testing.assert_allclose(np.asarray(means[0]), [1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(np.asarray(means[1])), 1.0, atol=1e-6)
    assert np.all(np.asarray(means[2]) == 0)  # no exemplars
    s = ex.nme_scores(jnp.asarray([[3.0, 0.1], [0.1, 3.0]]), means[:2])
    assert np.asarray(jnp.argmax(s, 1)).tolist() == [0, 1]


def test_quota_and_errors():
    assert [ex.per_class_quota(c, 3312) for c in (10, 20, 100)] == [331, 165, 33]
    assert ex.per_class_quota(50, 2000, fixed_memory=True, memory_per_class=20) == 20
    with pytest.raises(ValueError, match="memory_size=5"):
        ex.per_class_quota(10, 5)
    with pytest.raises(ValueError, match="valid: dynamic_er, single, memo"):
        ex.fair_exemplars("dual", 1, 2, 3)


def test_resnet32_counts_and_fair_budget_table():
    c = resnet32_split_param_counts()
    assert (c["total"], c["shallow"], c["deep"]) == (463504, 112016, 351488)
    from clj.models.growing import split_param_counts
    import ml_collections
    mine = split_param_counts("memo", ml_collections.ConfigDict({"name": "resnet32", "num_blocks": 5}), (32, 32, 3))
    assert mine == c

    def memo(T):
        return ex.fair_exemplars("memo", c["total"], T, 3072, 2000, c["shallow"], c["deep"])

    # CIFAR-100 settings: B0 Inc10 (T=10), B0 Inc5 (20), B50 Inc10 (6), B50 Inc5 (11)
    assert [memo(T) for T in (10, 20, 6, 11)] == [3312, 4771, 2729, 3458]
    assert ex.fair_exemplars("single", c["total"], 10, 3072) == 7431
    assert ex.fair_exemplars("dynamic_er", c["total"], 10, 3072) == 2000
    # 603 CIFAR images per ResNet-32
    assert (c["total"] * 4) // 3072 == 603


def test_weight_align_scales_only_new_columns():
    rng = np.random.default_rng(0)
    k = jnp.asarray(rng.normal(size=(6, 8)).astype(np.float32))
    k = k.at[:, 3:5].multiply(3.0)
    out = np.asarray(cc.weight_align(k, 3, 5))
    kin = np.asarray(k)
    np.testing.assert_array_equal(out[:, :3], kin[:, :3])   # old columns
    np.testing.assert_array_equal(out[:, 5:], kin[:, 5:])   # unseen columns
    n = np.linalg.norm(out, axis=0)
    np.testing.assert_allclose(n[3:5].mean(), n[:3].mean(), rtol=1e-5)
    ratio = out[:, 3:5] / kin[:, 3:5]
    np.testing.assert_allclose(ratio, ratio[0, 0], rtol=1e-5)  # one common gamma


def test_kd_loss_matches_manual():
    rng = np.random.default_rng(0)
    new = rng.normal(size=(4, 6)).astype(np.float32)
    old = rng.normal(size=(4, 6)).astype(np.float32)
    T = 2.0
    got = float(cc.kd_loss(jnp.asarray(new), jnp.asarray(old), 3, T))

    def sm(z):
        e = np.exp(z - z.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    p = sm(old[:, :3] / T)
    lp = np.log(sm(new[:, :3] / T))
    assert got == pytest.approx(float(-(p * lp).sum(1).mean()), rel=1e-5)


def test_bad_config_values_are_named():
    from clj.config import ConfigError, base_config

    c = base_config()
    c.cil = section_config("cil", predict="knn")
    with pytest.raises(ConfigError, match="cil.predict='knn'"):
        sections.block(c, CIL)
    c.cil = section_config("cil", budget="huge")
    with pytest.raises(ConfigError, match="cil.budget='huge'"):
        sections.block(c, CIL)


def test_cifar_configs_resolve_the_fair_budgets():
    """The CIFAR-100 configs' budgets come out of the parameter counts of the
    configured models (no data needed: a scenario stand-in with the shapes)."""
    import types

    from clj.config import load_config
    from clj.models.growing import split_param_counts
    from clj.methods.cil.icarl import resolve_memory_size

    got = {}
    for method, setting, T in [("memo", "b0inc10", 10), ("memo", "b0inc5", 20), ("memo", "b50inc10", 6),
                               ("memo", "b50inc5", 11), ("icarl", "b0inc10", 10), ("wa", "b0inc10", 10),
                               ("dynamic_er", "b0inc10", 10)]:
        c = load_config(f"{method}_cifar100_{setting}")
        sc = types.SimpleNamespace(image_shape=(32, 32, 3), num_tasks=T, num_classes=100)
        kind = {"memo": "memo", "dynamic_er": "dynamic_er"}.get(method, "single")
        counts = split_param_counts(kind, c.model, (32, 32, 3)) if kind != "single" else None
        got[(method, setting)] = resolve_memory_size(c, sc, kind, sections.block(c, CIL), counts)
    assert [got[("memo", s)] for s in ("b0inc10", "b0inc5", "b50inc10", "b50inc5")] == [3312, 4771, 2729, 3458]
    assert got[("icarl", "b0inc10")] == got[("wa", "b0inc10")] == 7431
    assert got[("dynamic_er", "b0inc10")] == 2000
