"""The runtime: one compile of the training chunk per run, masked tail steps,
the seeds x data mesh, what a method's spec lets it see."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clj.train import Runner, choose_chunk, mesh_shape
from conftest import run_with_devices, small_config


def test_choose_chunk_minimises_masked_steps_and_calls():
    assert choose_chunk([1267] * 5, 200) == 181          # 1267 = 7 x 181: nothing masked
    assert choose_chunk([85, 85, 85, 85, 84], 200) == 85  # one call per task, one masked step in the last
    assert choose_chunk([3], 200) == 3
    assert choose_chunk([10, 10], 4) in (4, 2)
    k = choose_chunk([23, 22, 23], 7)
    assert 1 <= k <= 7
    with pytest.raises(ValueError, match="max_len"):
        choose_chunk([], 4)


def test_mesh_shape_rules():
    assert mesh_shape(1, 4) == (1, 4)
    assert mesh_shape(4, 4) == (4, 1)
    assert mesh_shape(8, 4) == (4, 1)
    assert mesh_shape(2, 4) == (1, 4)
    assert mesh_shape(3, 4) == (1, 4)
    assert mesh_shape(4, 4, "data") == (1, 4)
    with pytest.raises(ValueError, match="num_seeds"):
        mesh_shape(3, 4, "seeds")
    with pytest.raises(ValueError, match="loop.mesh"):
        mesh_shape(1, 4, "rows")


def test_one_chunk_compile_and_masked_tail_equals_step_by_step(tmp_path):
    """Task lengths that are not multiples of the chunk: the last chunk's extra
    steps are no-ops, the chunk compiles once, and the accuracy matrices equal a
    reference run one step per call (no masking at all)."""
    cfg = small_config("derpp", **{"loop.steps_per_call": 7, "num_seeds": 2})
    r = Runner(cfg, str(tmp_path / "chunked"))
    steps = [p.steps for p in r.plans]
    assert any(s % r.K for s in steps), (steps, r.K)
    chunked = r.run()
    assert r._chunk_fn()._cache_size() == 1
    ref_cfg = small_config("derpp", **{"loop.steps_per_call": 1, "num_seeds": 2})
    ref_r = Runner(ref_cfg, str(tmp_path / "ref"))
    assert ref_r.K == 1
    ref = ref_r.run()
    for s in (0, 1):
        a = json.load(open(tmp_path / "chunked" / f"seed_{s}" / "results.json"))
        b = json.load(open(tmp_path / "ref" / f"seed_{s}" / "results.json"))
        for k in ("class_il", "task_il"):
            np.testing.assert_allclose(a["accuracy_matrix"][k], b["accuracy_matrix"][k], atol=1e-6)
        assert a["steps"] == b["steps"]
        # pooled accuracy by hand: test examples of every task, weighted by count
        R, n = np.array(a["accuracy_matrix"]["class_il"]), np.array(a["extra"]["test_examples_per_task"])
        np.testing.assert_allclose(a["metrics"]["class_il"]["final_average_accuracy_pooled"],
                                   (R[-1] * n).sum() / n.sum())
        np.testing.assert_allclose(a["metrics"]["class_il"]["final_average_accuracy"], R[-1].mean())
    assert chunked["seeds"] == ref["seeds"] == [0, 1]


def _spy_spec(base: str, **caps):
    """The spec of ``base`` whose train_step records, at trace time, the batch
    keys it was given and, at run time, the task ids it saw."""
    import dataclasses

    from clj.methods import get_spec

    spec = get_spec(base)
    seen = {"keys": set(), "task_ids": []}

    def train_step(state, batch, rng):
        seen["keys"].update(batch)
        jax.debug.callback(lambda t: seen["task_ids"].append(np.asarray(t).copy()), batch["task_id"])
        return spec.train_step(state, batch, rng)

    c = dataclasses.replace(spec.caps(None) if not callable(spec.capabilities) else spec.capabilities, **caps)
    return spec.replace(train_step=train_step, capabilities=c), seen


@pytest.mark.parametrize("kind,caps,expect", [
    ("data_incremental", {}, set()),
    ("data_incremental", {"step_info": True}, set()),   # asked, but the stream hides boundaries
    ("class_il", {"step_info": True}, {"step", "steps_per_epoch", "task_size"}),
    ("class_il", {}, set()),
])
def test_batches_carry_only_what_the_spec_asks(monkeypatch, tmp_path, kind, caps, expect):
    import clj.train.loop as loop

    spec, seen = _spy_spec("er", **caps)
    monkeypatch.setattr(loop, "get_spec", lambda name: spec)
    cfg = small_config("er", **{"scenario.kind": kind})
    Runner(cfg, str(tmp_path / "run")).run()
    jax.effects_barrier()
    assert seen["keys"] - {"x", "x_raw", "y", "task_id"} == expect
    ids = np.concatenate([t.reshape(-1) for t in seen["task_ids"]])
    if kind == "data_incremental":
        assert np.all(ids == -1), "a data-incremental stream must hide the task id"
    else:
        assert ids.max() == 4


def test_reveal_boundaries_refused_for_a_method_that_does_not_see_them(tmp_path):
    from clj.config import ConfigError

    cfg = small_config("er", **{"scenario.kind": "data_incremental", "scenario.reveal_boundaries": True})
    with pytest.raises(ConfigError, match="reveal_boundaries"):
        Runner(cfg, str(tmp_path / "x"))


def test_bfloat16_compute_float32_state(tmp_path):
    cfg = small_config("derpp", **{"model.dtype": "bfloat16"})
    r = Runner(cfg, str(tmp_path / "bf16"))
    st = r.init_state()
    assert {a.dtype for a in jax.tree.leaves(st.net.params)} == {jnp.dtype("float32")}
    out = r.run()
    ref = Runner(small_config("derpp"), str(tmp_path / "f32")).run()
    a = out["metrics"]["class_il"]["final_average_accuracy"]
    b = ref["metrics"]["class_il"]["final_average_accuracy"]
    assert a > 0.5 and abs(a - b) < 0.1, (a, b)


def test_seeds_sharded_over_devices_equal_one_device(tmp_path):
    """4 seeds on 4 devices: each device holds one seed's state, and the
    accuracy matrices equal 4 seeds on 1 device; 1 seed on 4 devices (batch
    and evaluation sharded over the data axis) equals 1 device."""
    code = f"""
import jax, json, numpy as np
from jax.sharding import PartitionSpec as P
from conftest import small_config
from clj.train import Runner
assert jax.device_count() == 4
r4 = Runner(small_config('derpp', num_seeds=4), '{tmp_path}/four')
assert (r4.n_seed_dev, r4.n_data_dev) == (4, 1)
st = r4.init_state()
for leaf in jax.tree.leaves(st):
    assert leaf.sharding.spec == P('seed'), leaf.sharding
    assert {{s.data.shape[0] for s in leaf.addressable_shards}} == {{1}}
    assert len({{s.device for s in leaf.addressable_shards}}) == 4
a = r4.run()
for leaf in jax.tree.leaves(r4.final_state):
    assert {{s.data.shape[0] for s in leaf.addressable_shards}} == {{1}}
b = Runner(small_config('derpp', num_seeds=4), '{tmp_path}/one', devices=jax.devices()[:1]).run()
# evaluation sharded over the data axis equals unsharded evaluation of the same state
rd = Runner(small_config('derpp', num_seeds=1), '{tmp_path}/d4')
assert (rd.n_seed_dev, rd.n_data_dev) == (1, 4)
r1 = Runner(small_config('derpp', num_seeds=1), '{tmp_path}/d1', devices=jax.devices()[:1])
s1 = r1.init_state()
seen = np.ones(10, bool)
e4 = rd.evaluate(jax.device_put(s1, rd._state_sharding), seen)
e1 = r1.evaluate(s1, seen)
print(json.dumps([[json.load(open(f'{tmp_path}/{{d}}/seed_{{s}}/results.json'))['accuracy_matrix']
                   for s in range(4)] for d in ('four', 'one')]
                 + [{{k: v.tolist() for k, v in e4.items()}}, {{k: v.tolist() for k, v in e1.items()}}]))
"""
    four, one, e4, e1 = json.loads(run_with_devices(code).strip().splitlines()[-1])
    for a, b in zip(four, one):
        for k in ("class_il", "task_il"):
            np.testing.assert_allclose(a[k], b[k], atol=1e-6)
    for k in e1:
        np.testing.assert_allclose(e4[k], e1[k], atol=1e-6)


@pytest.mark.parametrize("name,variant", [("serena_digits", "official"), ("nispa_digits", None)])
def test_bfloat16_networks_of_serena_and_nispa(name, variant):
    """model.dtype=bfloat16: SERENA's and NISPA's networks compute in bfloat16,
    keep float32 parameters, and return float32 logits."""
    from clj.config import load_config
    from clj.methods import get_spec
    from clj.train.loop import load_scenario

    c = load_config(name, variant) if variant else load_config(name)
    c.model.dtype = "bfloat16"
    sc = load_scenario(c)
    spec = get_spec(c.method)
    st = jax.eval_shape(lambda k: spec.init(k, c, sc), jax.random.PRNGKey(0))
    floats = {str(a.dtype) for a in jax.tree.leaves(st) if jnp.issubdtype(a.dtype, jnp.floating)}
    assert floats == {"float32"}, floats
    x = jnp.zeros((4, *sc.image_shape), jnp.float32)
    out = jax.eval_shape(lambda k: spec.predict(spec.init(k, c, sc), x, None), jax.random.PRNGKey(0))
    assert out.dtype == jnp.float32 and out.shape == (4, sc.num_classes)
    jaxpr = str(jax.make_jaxpr(lambda k: spec.predict(spec.init(k, c, sc), x, None))(jax.random.PRNGKey(0)))
    assert "bf16" in jaxpr  # the forward pass computes in bfloat16
