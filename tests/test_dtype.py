"""``model.dtype``: converted in one place (:func:`clj.models.compute_dtype`),
validated before any work, present in every shipped config, and honoured by
the network of every registered method: with ``bfloat16`` every convolution
and matrix product of the networks computes in bfloat16 while the whole
state (parameters, optimizer state, buffers) stays float32.  The networks
are checked on traced programs (``jax.eval_shape`` / ``jax.make_jaxpr``),
nothing is trained."""
import collections
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from clj.config import MODEL_DTYPES, list_configs, load_config, validate
from clj.errors import ConfigError
from clj.methods import METHODS, get_spec
from clj.methods.common import TaskInfo
from clj.models import compute_dtype

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OPS = ("dot_general", "conv_general_dilated")

# Float32 matrix products a train step may keep in bfloat16 mode: they are
# not the network's (each method's own statistics on float32 values).
F32_DOTS_IN_STEP = {
    "agem": "the gradient projection (dot products of flattened gradients)",
    "gem": "the dual QP of the projection (Gram matrix of the flattened task gradients)",
    "podnet": "the local similarity classifier's cosines (float32 normalised embedding and proxies)",
    "nispa": "the units' mean activations",
    "serena": "the running class means of the routing",
    "ser_derpp": "the spectral-residual saliency targets (image resize)",
    "ser_er_ace": "the spectral-residual saliency targets (image resize)",
    "ser_er": "the spectral-residual saliency targets (image resize)",
    "akr": "the attention module's score layer on float32 features",
    "cope": "the PPP loss's similarities and the prototype means on the float32-normalised embeddings",
}
# ... and in predict: SERENA's nearest-class-mean routing between cells.
F32_DOTS_IN_PREDICT = {"serena": "the distances to the class means that route an example to a cell",
                       "cope": "the similarities to the prototypes (nearest-prototype prediction)",
                       "podnet": "the local similarity classifier's cosines (or the NME distances)"}


def test_compute_dtype_names_dtypes_and_blocks():
    assert MODEL_DTYPES == ("float32", "bfloat16")
    assert compute_dtype("float32") is jnp.float32 and compute_dtype("bfloat16") is jnp.bfloat16
    assert compute_dtype(None) is jnp.float32
    assert compute_dtype(jnp.bfloat16) is jnp.bfloat16 and compute_dtype(np.dtype("float32")) is jnp.float32
    block = ml_collections.ConfigDict(dict(name="resnet32", num_blocks=1))
    assert compute_dtype(block) is jnp.float32  # no field: float32
    block.dtype = "bfloat16"
    assert compute_dtype(block) is jnp.bfloat16
    assert compute_dtype(ml_collections.ConfigDict(dict(method="er", model=block.to_dict()))) is jnp.bfloat16
    for bad in ("float16", "fp32", jnp.float16, 3):
        with pytest.raises(ConfigError, match=r"model\.dtype=.* is invalid; valid: float32, bfloat16\.$"):
            compute_dtype(bad)
    from clj.models import get_model

    assert get_model("mlp", 10, hidden=(8,), dtype="bfloat16").dtype is jnp.bfloat16  # the registry converts too
    with pytest.raises(ConfigError, match="float16"):
        get_model("mlp", 10, dtype="float16")


def test_validate_refuses_an_unknown_dtype():
    c = load_config("derpp_digits")
    c.model.dtype = "float16"
    with pytest.raises(ConfigError) as e:
        validate(c)
    assert str(e.value) == "model.dtype='float16' is invalid; valid: float32, bfloat16."


def test_every_shipped_config_has_model_dtype_float32():
    extra = {"serena_digits": ("official", "er", "iid_online", "iid_offline"), "akr_digits": ("mixup", "icarl", "none")}
    for name in list_configs():
        for variant in (None,) + extra.get(name, ()):
            c = load_config(name, variant)
            assert c.model.get("dtype", None) == "float32", (name, variant)


@pytest.mark.parametrize("name", ["derpp_digits", "memo_digits", "ser_derpp_digits"])
def test_launch_refuses_float16_before_any_work(name, tmp_path):
    wd = tmp_path / "run"
    r = subprocess.run([sys.executable, "launch.py", f"--config=configs/{name}.py", "--config.model.dtype=float16",
                        f"--workdir={wd}"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert "model.dtype='float16'" in lines[0] and "float32, bfloat16" in lines[0]
    assert not wd.exists()


def _config(method, dtype):
    """The method's digits config (SER's bases without one: ser_derpp's),
    saliency net from scratch (no pretraining in init)."""
    names = list_configs()
    c = load_config(f"{method}_digits" if f"{method}_digits" in names else "ser_derpp_digits")
    c.method = method
    if "ser" in c:
        c.ser.sal_init = "scratch"
    c.model.dtype = dtype
    validate(c)
    return c


def _products(jaxpr, out):
    """Counter of (primitive, input dtypes) over dot_general / conv eqns, sub-jaxprs included."""
    for e in jaxpr.eqns:
        if e.primitive.name in OPS:
            out[(e.primitive.name, tuple(str(v.aval.dtype) for v in e.invars))] += 1
        for p in e.params.values():
            for sub in p if isinstance(p, (list, tuple)) else (p,):
                if hasattr(sub, "eqns"):
                    _products(sub, out)
                elif hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
                    _products(sub.jaxpr, out)
    return out


def _traced(method, dtype, scenario):
    """(state shapes after task 1's begin_task, products of a train step,
    products of predict, predict's output aval)."""
    c = _config(method, dtype)
    spec = get_spec(method)
    caps = spec.caps(c)
    t, C = 1, scenario.num_classes
    task = scenario.tasks[t]
    mask = np.zeros(C, bool)
    mask[list(task.classes)] = True
    if caps.static_task_info:
        info = TaskInfo(task_id=t, classes=tuple(task.classes), num_steps=10, steps_per_epoch=5, num_classes=C,
                        class_mask=mask)
    else:
        i32 = lambda v: np.asarray(v, np.int32)  # noqa: E731
        info = TaskInfo(task_id=i32(t), classes=(), num_steps=i32(10), steps_per_epoch=i32(5), num_classes=C,
                        class_mask=mask)
    state = jax.eval_shape(lambda k: spec.begin_task(spec.init(k, c, scenario), info), jax.random.PRNGKey(0))
    B, shape = int(c.train.batch_size), tuple(scenario.image_shape)
    sds = jax.ShapeDtypeStruct
    batch = {"x": sds((B, *shape), jnp.float32), "x_raw": sds((B, *shape), jnp.uint8),
             "y": sds((B,), jnp.int32), "task_id": sds((B,), jnp.int32), "new_task": sds((), jnp.bool_),
             "step": sds((), jnp.int32), "steps_per_epoch": sds((), jnp.int32), "task_size": sds((), jnp.int32)}
    step = jax.make_jaxpr(spec.train_step)(state, batch, jax.random.PRNGKey(1))
    E = 8

    def predict(s, x):
        if spec.prepare_predict is not None:
            s = spec.prepare_predict(s)
        tid = jnp.full((E,), t, jnp.int32) if caps.task_id_at_test or caps.task_id_class_il else None
        kw = {"valid": jnp.ones((E,), bool)} if caps.predict_uses_valid else {}
        return spec.predict(s, x, tid, **kw)

    pred = jax.make_jaxpr(predict)(state, sds((E, *shape), jnp.float32))
    return (state, _products(step.jaxpr, collections.Counter()), _products(pred.jaxpr, collections.Counter()),
            pred.out_avals)


@pytest.fixture(scope="module")
def scenarios():
    from clj.train.loop import load_scenario

    cache = {}

    def get(method):
        c = _config(method, "float32")
        key = (c.dataset, c.scenario.to_json())
        if key not in cache:
            cache[key] = load_scenario(c)
        return cache[key]
    return get


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_computes_in_bfloat16_with_float32_state(method, scenarios):
    state, step, pred, out = _traced(method, "bfloat16", scenarios(method))
    floats = {str(a.dtype) for a in jax.tree.leaves(state) if jnp.issubdtype(a.dtype, jnp.floating)}
    assert floats == {"float32"}, floats  # parameters, optimizer state, buffers
    assert [str(a.dtype) for a in out] == ["float32"]
    for where, ops, allowed in (("train_step", step, F32_DOTS_IN_STEP), ("predict", pred, F32_DOTS_IN_PREDICT)):
        bf16 = sum(n for (_, dts), n in ops.items() if dts == ("bfloat16", "bfloat16"))
        assert bf16 > 0, (where, dict(ops))
        convs = {dts for (p, dts), n in ops.items() if p == "conv_general_dilated"}
        assert convs <= {("bfloat16", "bfloat16")}, (where, dict(ops))  # every convolution is the network's
        other = {dts for (p, dts), n in ops.items() if p == "dot_general" and dts != ("bfloat16", "bfloat16")}
        if method not in allowed:
            assert not other, (where, dict(ops))


@pytest.mark.parametrize("method", ["derpp", "memo", "ser_derpp", "serena"])
def test_float32_default_has_no_bfloat16(method, scenarios):
    state, step, pred, out = _traced(method, "float32", scenarios(method))
    for ops in (step, pred):
        assert ops and not any("bfloat16" in dts for (_, dts) in ops), dict(ops)
