"""Class-IL fidelity to PyCIL / MEMO (issue 14, items 1-5): the replay share
from what is stored, PyCIL's batching, WA's two losses, per-epoch schedules,
growth as a loop over the live blocks."""
import dataclasses
import math
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from clj.methods import sections
from clj.methods.cil.section import CIL
from clj.methods.sections import section_config
from clj.config import base_config, load_config
from clj.methods.cil import common as cc
from clj.methods.cil import expand
from clj.methods.cil import icarl
from clj.methods.common import OptimSpec, TaskInfo
from clj.replay import exemplars as ex

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _static(**kw):
    base = dict(memory_size=1000, batch_size=32, class_sizes=(30, 30, 30, 30), num_classes=4,
                task_classes=((0, 1), (2, 3)), init_epochs=2.0, epochs=3.0)
    base.update(kw)
    return icarl.Static(**base)


def _info(t, classes, steps=10, spe=2):
    return TaskInfo(task_id=t, classes=classes, num_steps=steps, steps_per_epoch=spe, num_classes=4)


# ------------------------------------------------------------------ item 1
def test_replay_share_from_stored_exemplars_when_quota_exceeds_class_size():
    # quota floor(1000 / 2) = 500 per class, but a class has only 30 images: 60 stored, not 1000
    st = icarl.task_statics(_static(batching="concat"), _info(1, (2, 3), spe=2))
    assert (st.known, st.total, st.n_new, st.n_mem) == (2, 4, 60, 60)
    assert st.replay == round(32 * 60 / 64) == 30  # was min(512, round(32 * 1000 / 64)) = 500
    assert st.quota == 250
    # a quota below the class size stores the quota
    st = icarl.task_statics(_static(memory_size=40), _info(1, (2, 3), spe=2))
    assert st.n_mem == 2 * 20
    # fixed per-class memory
    st = icarl.task_statics(_static(fixed_memory=True, memory_per_class=50), _info(1, (2, 3), spe=2))
    assert st.n_mem == 60
    assert cc.stored_exemplars((5, 7, 100), 3, 6, 1000) == 5 + 6 + 6
    assert cc.stored_exemplars((5, 7, 100), 3, 6, 12) == 12  # capacity
    assert cc.stored_exemplars((5, 7), 0, 6, 12) == 0


def test_herding_stores_min_of_quota_and_class_size():
    # the count the statics predict is what update_memory stores (quota 10 > 4 and 6 images)
    x = jnp.asarray(np.random.default_rng(0).integers(0, 255, (10, 2, 2, 1)), jnp.uint8)
    y = jnp.asarray([0] * 4 + [1] * 6, jnp.int32)
    mem = ex.init_memory(20, (2, 2, 1), 2, 4)
    mem = jax.jit(lambda mem, x, y: ex.update_memory(mem, lambda f: f.reshape(f.shape[0], -1),
                                                     lambda b: b.astype(jnp.float32) / 255.0, x, y, (0, 1), 10,
                                                     2, 8))(mem, x, y)
    assert int(mem.count()) == cc.stored_exemplars((4, 6), 2, 10, 20) == 10


# ------------------------------------------------------------------ item 2
def test_pycil_batch_plan_by_hand():
    # CIFAR-100 B0 Inc5, single backbone, task 1: 2500 new + 2500 stored, B=128
    p = cc.batch_plan("pycil", 128, 2500, 2500, 170)
    assert p == {"steps": 170 * 40, "steps_per_epoch": 40, "new_per_step": 64, "replay": 64}
    p = cc.batch_plan("pycil", 128, 1000, 0, 200)  # task 0: only new data
    assert p == {"steps": 200 * 8, "steps_per_epoch": 8, "new_per_step": 128, "replay": 0}
    p = cc.batch_plan("pycil", 32, 600, 1710, 8)  # Fashion-MNIST B0 Inc2 task 3
    assert p["steps_per_epoch"] == math.ceil(2310 / 32) == 73 and p["new_per_step"] == round(32 * 600 / 2310)
    assert p["new_per_step"] + p["replay"] == 32
    p = cc.batch_plan("concat", 32, 600, 600, 8)
    assert p == {"steps": 150, "steps_per_epoch": 19, "new_per_step": 32, "replay": round(32 * 600 / 608)}


def test_pycil_mixed_batch_shapes_and_each_exemplar_once_per_epoch():
    n_mem, B = 24, 16
    static = _static(batching="pycil", batch_size=B, memory_size=24, class_sizes=(12, 12, 20, 20), init_epochs=2.0,
                     epochs=2.0)
    st = icarl.task_statics(static, _info(1, (2, 3)))
    # 40 new + 24 stored = 64 = 4 batches of 16: 10 new + 6 exemplars each
    assert (st.n_new, st.n_mem, st.steps_per_epoch, st.steps, st.new_per_step, st.replay) == (40, 24, 4, 8, 10, 6)
    static = dataclasses.replace(static, st=st)
    mem = ex.init_memory(24, (2, 2, 1), 4, 4)
    x = jnp.arange(24, dtype=jnp.uint8)[:, None, None, None] * jnp.ones((1, 2, 2, 1), jnp.uint8)
    mem = mem.replace(x=x, y=jnp.repeat(jnp.arange(2, dtype=jnp.int32), 12),
                      rank=jnp.tile(jnp.arange(12, dtype=jnp.int32), 2))
    batch = {"x": jnp.full((B, 2, 2, 1), -1.0), "y": jnp.full((B,), 3, jnp.int32)}
    key = jax.random.PRNGKey(5)
    draw = jax.jit(lambda k, rng: icarl.mixed_batch(static, mem, key, k, batch, rng))
    seen = []
    for k in range(st.steps):
        xb, yb, wb = draw(jnp.int32(k), jax.random.PRNGKey(100 + k))
        assert xb.shape == (B, 2, 2, 1) and yb.shape == (B,) and bool(wb.all())
        assert bool((xb[:10] == -1.0).all()) and bool((yb[:10] == 3).all())  # the loop batch's first 10 rows
        assert bool((yb[10:] < 2).all())                                      # then 6 exemplars
        seen.append((np.asarray(xb[10:, 0, 0, 0]) * 255).round().astype(int))  # x / 255
    for e in range(2):  # every exemplar exactly once per epoch, in a fresh order each epoch
        assert sorted(np.concatenate(seen[4 * e: 4 * e + 4]).tolist()) == list(range(24))
    assert not np.array_equal(np.concatenate(seen[:4]), np.concatenate(seen[4:]))


def test_planned_runner_index_stream_gives_fresh_new_examples_per_step():
    import types

    from clj.train.loop import Runner

    r = object.__new__(Runner)
    r.B = 16
    r.plans = [None, types.SimpleNamespace(new_per_step=10)]
    pool = np.arange(100, 140)
    idx = r._index_stream(0, 1, pool, 8)  # 2 epochs of 4 steps x 10 new examples
    assert idx.shape == (8, 16)
    heads = idx[:, :10].reshape(-1)
    assert sorted(heads[:40].tolist()) == list(range(100, 140))  # epoch 1: each example once
    assert sorted(heads[40:].tolist()) == list(range(100, 140))  # epoch 2
    assert np.array_equal(idx[:, 10:], idx[:, :6])               # padding repeats the row


# ------------------------------------------------------------------ item 3
def _mlp_config(method, **cil):
    c = base_config()
    c.method = method
    c.dataset = "synthetic"
    c.model = ml_collections.ConfigDict(dict(name="mlp", hidden=(16,)))
    c.optim.update(dict(lr=0.1, momentum=0.9))
    c.train.batch_size = 8
    c.cil = section_config("cil", memory_size=8, feature_batch_size=8, **cil)
    return c


def _tiny_scenario():
    from clj.data import load_dataset
    from clj.scenarios import make_scenario

    ds = load_dataset("synthetic", None, seed=0, image_shape=(4, 4, 1), num_classes=4, train_per_class=6,
                      test_per_class=2)
    return make_scenario(ds, "class_il", increment=2)


def test_wa_loss_variants():
    sc = _tiny_scenario()
    s = icarl.init(jax.random.PRNGKey(0), _mlp_config("wa"), sc, "wa")
    assert s.static.wa_loss == "kd2"  # the default: the code behind the MEMO paper's WA numbers
    s = icarl.begin_task(s, _info(0, (0, 1), steps=1, spe=2))
    tr = sc.tasks[0].train_idx
    s = jax.jit(lambda s, x, y: icarl.end_task(s, {"x": x, "y": y, "info": _info(0, (0, 1))}))(
        s, jnp.asarray(sc.x_train[tr]), jnp.asarray(sc.y_train[tr]))
    s = icarl.begin_task(s, _info(1, (2, 3), steps=1, spe=2))
    idx = sc.tasks[1].train_idx[:8]
    batch = {"x": s.static.augment(jnp.asarray(sc.x_train[idx])), "y": jnp.asarray(sc.y_train[idx], jnp.int32)}
    # kd2: CE + 2 KD; lambda: (1 - l) CE + l KD with l = known / total = 2 / 4
    for wa_loss, weights in (("kd2", (1.0, 2.0)), ("lambda", (0.5, 0.5))):
        sv = s.replace(static=dataclasses.replace(s.static, wa_loss=wa_loss))
        assert tuple(float(v) for v in icarl.loss_weights(sv.static, None, sv.tc, sv.static.phase)) == weights
        _, m = jax.jit(icarl.train_step)(sv, batch, jax.random.PRNGKey(1))
        assert float(m["kd"]) > 0
        np.testing.assert_allclose(float(m["loss"]), weights[0] * float(m["ce"]) + weights[1] * float(m["kd"]),
                                   rtol=1e-6)
    # iCaRL and Replay are unaffected by the switch
    for obj, w in (("icarl", (1.0, 1.0)), ("replay", (1.0, 0.0))):
        st = dataclasses.replace(s.static, objective=obj, kd_weight=1.0, wa_loss="lambda")
        assert tuple(float(v) for v in icarl.loss_weights(st, None, s.tc, s.static.phase)) == w


# ------------------------------------------------------------------ item 4
def test_cosine_steps_per_epoch_and_scheduler_switch():
    spec = cc.EpochOptimSpec(lr=0.1, schedule="cosine", t_max=4.0)
    lrs = [float(spec.lr_at(jnp.int32(k), jnp.int32(12), jnp.int32(3))) for k in range(12)]
    expect = [0.1 * 0.5 * (1 + math.cos(math.pi * (k // 3) / 4)) for k in range(12)]
    np.testing.assert_allclose(lrs, expect, rtol=1e-6)  # constant inside an epoch
    assert lrs[2] == lrs[0] and lrs[3] < lrs[2]
    c = base_config()
    c.optim.update(dict(lr=0.1, schedule="multistep", milestones=(6, 9)))
    c.train.init_epochs, c.train.epochs = 10, 8
    init, upd = cc.optim_specs(c, sections.block(c, CIL))
    assert (init.schedule, upd.schedule, init.t_max, upd.t_max) == ("multistep", "multistep", 10.0, 8.0)
    c.cil = section_config("cil", scheduler="cosine")  # MEMO's --scheduler cosine: task 0 too
    init, upd = cc.optim_specs(c, sections.block(c, CIL))
    assert (init.schedule, upd.schedule, init.t_max, upd.t_max) == ("cosine", "cosine", 10.0, 8.0)
    c.cil = section_config("cil", scheduler="cosine", t_max=170)
    assert cc.optim_specs(c, sections.block(c, CIL))[1].t_max == 170.0
    c.cil = section_config("cil", update_schedule="cosine")  # later tasks only
    init, upd = cc.optim_specs(c, sections.block(c, CIL))
    assert (init.schedule, upd.schedule) == ("multistep", "cosine")
    assert isinstance(init, OptimSpec)
    from clj.config import ConfigError
    for bad in (dict(scheduler="cos"), dict(batching="mixed"), dict(wa_loss="kd"), dict(growth="scan")):
        c.cil = section_config("cil", **bad)
        with pytest.raises(ConfigError, match=f"cil.{list(bad)[0]}="):
            sections.block(c, CIL)


def test_cifar_paper_configs_epochs_and_batching():
    r = load_config("replay_cifar100_b0inc10")
    assert (r.train.epochs, tuple(r.cil.update_milestones), r.train.init_epochs) == (70, (30, 50), 200)
    for m in ("icarl", "wa", "memo", "dynamic_er"):
        c = load_config(f"{m}_cifar100_b0inc10")
        assert c.train.epochs == 170 and c.cil.batching == "pycil" and c.train.batch_size == 128
    assert load_config("memo_fmnist_b0inc2").cil.batching == "pycil"


# ------------------------------------------------------------------ item 5
def test_growth_loop_equals_vmap_and_freezes_old_blocks():
    from clj.data import load_dataset
    from clj.scenarios import make_scenario
    from test_memo_growth import tiny_config

    c = tiny_config("memo", True)
    ds = load_dataset("synthetic", None, seed=0, image_shape=(8, 8, 3), num_classes=4, train_per_class=4,
                      test_per_class=1)
    sc = make_scenario(ds, "class_il", increment=2)
    s = expand.init(jax.random.PRNGKey(0), c, sc, "memo")
    for t in range(2):  # 2 live blocks
        s = expand.begin_task(s, TaskInfo(t, sc.tasks[t].classes, 10, 2, 4))
    p = dict(s.net.params)  # make the blocks differ (block 0 stays)
    leaves, tdef = jax.tree_util.tree_flatten(p["spec"])
    ks = jax.random.split(jax.random.PRNGKey(3), len(leaves))
    grow = lambda a: (jnp.arange(a.shape[0]) > 0).reshape((-1,) + (1,) * (a.ndim - 1))  # noqa: E731
    p["spec"] = jax.tree_util.tree_unflatten(
        tdef, [a + 0.05 * jax.random.normal(k, a.shape) * grow(a) for a, k in zip(leaves, ks)])
    s = s.replace(net=s.net.replace(params=p))
    s_v = s.replace(static=dataclasses.replace(s.static, network=dataclasses.replace(s.static.network, growth="vmap")))
    assert s.static.network.growth == "loop" and s.static.live == 2
    idx = sc.tasks[1].train_idx[:8]
    x = jnp.asarray(sc.x_train[idx], jnp.float32) / 255.0
    batch = {"x": x, "y": jnp.asarray(sc.y_train[idx], jnp.int32)}
    out_l, m_l = jax.jit(expand.train_step)(s, batch, jax.random.PRNGKey(1))
    out_v, m_v = jax.jit(expand.train_step)(s_v, batch, jax.random.PRNGKey(1))
    np.testing.assert_allclose(float(m_l["loss"]), float(m_v["loss"]), rtol=1e-5)  # the same forward
    assert float(m_l["aux"]) > 0
    take = lambda tree, i: jax.tree_util.tree_map(lambda a: a[i], tree)  # noqa: E731
    leaves_of = lambda tree: jax.tree_util.tree_leaves(tree)  # noqa: E731
    for i in (0,):  # the old block and its BN statistics: bit-identical
        for new, old in ((out_l.net.params["spec"], p["spec"]), (out_l.net.batch_stats["spec"],
                                                                s.net.batch_stats["spec"])):
            assert all(bool(jnp.array_equal(a, b)) for a, b in zip(leaves_of(take(new, i)), leaves_of(take(old, i))))
    # the same update of every parameter as the vmap version (gen trains through the old blocks)
    for a, b in zip(leaves_of(out_l.net.params), leaves_of(out_v.net.params)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert not all(bool(jnp.array_equal(a, b)) for a, b in zip(leaves_of(out_l.net.params["gen"]),
                                                                leaves_of(p["gen"])))
    assert not all(bool(jnp.array_equal(a, b)) for a, b in zip(leaves_of(take(out_l.net.params["spec"], 1)),
                                                                leaves_of(take(p["spec"], 1))))


@pytest.mark.parametrize("name", ["icarl_digits", "memo_digits"])
def test_fair_budget_configs_plan_their_tasks(name, tmp_path):
    """The shipped fair-budget configs build the loop's task plans (the plan
    reads one seed's State as shapes, so ``init`` is traced: the budget must
    come from host integers)."""
    from clj.config import load_config
    from clj.train import Runner

    r = Runner(load_config(name), str(tmp_path / name))
    assert len(r.plans) == 5 and all(p.steps > 0 for p in r.plans)
    assert r._state_info.static.memory_size > 0


@pytest.mark.parametrize("method", ["wa", "lucir"])  # PODNet and AKR keep the same State.tc / static.phase split
def test_tasks_after_the_first_share_one_compiled_chunk(method, tmp_path):
    """Under ``"pycil"`` batching a task's counts (known / total classes,
    stored exemplars, new rows per step, ...) are arrays of the State
    (``State.tc``), so a 4-task run compiles its training chunk and its
    evaluation twice each (task 0: the init phase with no exemplars; tasks
    1-3 share one program), not once per task."""
    from clj.train import Runner
    from test_memo_growth import tiny_config

    c = tiny_config(method)
    c.synthetic.num_classes = 8
    c.cil.batching = "pycil"
    c.cil.memory_size = 8
    r = Runner(c, str(tmp_path / method))
    res = r.run()
    assert len({p.new_per_step for p in r.plans[1:]}) > 1  # the later tasks differ in their counts
    assert r._chunk._cache_size() == 2 and r._eval_fn._cache_size() == 2
    assert res["extra"]["exemplars_per_class"] == 1  # 8 slots over 8 classes after the last task
