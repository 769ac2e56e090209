"""The loop end to end on real data (Split-digits): accuracy floors, resume,
vmapped seeds, sharded execution."""
import json
import os

import numpy as np
import pytest

from clj.train import Runner
from conftest import run_with_devices, small_config


def _run(cfg, wd):
    return Runner(cfg, wd).run()


@pytest.fixture(scope="module")
def digits_results(tmp_path_factory):
    """finetune / ER / DER++ / joint with the shipped digits configs."""
    from clj.config import load_config

    out = {}
    for m in ("finetune", "er", "derpp", "joint"):
        cfg = load_config(f"{m}_digits")
        cfg.progress = False
        cfg.plots = m == "derpp"
        wd = str(tmp_path_factory.mktemp(m))
        out[m] = (_run(cfg, wd), wd)
    return out


def test_digits_accuracy_floors(digits_results):
    acc = {m: r["metrics"]["class_il"]["final_average_accuracy"] for m, (r, _) in digits_results.items()}
    assert acc["joint"] >= 0.95, acc
    assert acc["derpp"] >= 0.80 and acc["derpp"] >= acc["finetune"] + 0.50, acc
    assert acc["finetune"] < acc["er"] < acc["joint"] + 0.01, acc
    til = digits_results["derpp"][0]["metrics"]["task_il"]["final_average_accuracy"]
    assert til >= acc["derpp"]


def test_results_folder(digits_results):
    res, wd = digits_results["derpp"]
    for f in ("results.json", "config.json", "metrics.jsonl", "accuracy_matrix_class_il.png",
              "accuracy_curves_class_il.png"):
        assert os.path.getsize(os.path.join(wd, f)) > 0, f
    on_disk = json.load(open(os.path.join(wd, "results.json")))
    R = np.array(on_disk["accuracy_matrix"]["class_il"])
    assert R.shape == (5, 5)
    np.testing.assert_allclose(on_disk["metrics"]["class_il"]["final_average_accuracy"], R[-1].mean())
    # class-IL masks unseen classes: future tasks score 0 before they are trained
    assert np.all(R[np.triu_indices(5, 1)] == 0)
    assert on_disk["memory_bytes"]["buffer"] == 200 * (64 + 4 + 10 * 4 + 4) + 4
    assert len(on_disk["wall_time_s"]["per_task"]) == 5


def test_killed_and_resumed_equals_uninterrupted(tmp_path):
    full = _run(small_config("derpp"), str(tmp_path / "full"))
    wd = str(tmp_path / "killed")
    stopped = _run(small_config("derpp", stop_after_task=2), wd)
    assert stopped == {"stopped_after_task": 2}
    resumed = _run(small_config("derpp"), wd)
    for k in ("class_il", "task_il"):
        np.testing.assert_array_equal(resumed["accuracy_matrix"][k], full["accuracy_matrix"][k])


def test_eval_tasks_seen_measures_the_lower_triangle_only(tmp_path):
    """loop.eval_tasks="seen": the trained tasks' accuracies equal an "all" run's
    bit for bit, later tasks are not measured (NaN, null on disk), FWT is None,
    the other metrics are the "all" run's, and the evaluation compiles once."""
    full = _run(small_config("derpp", num_seeds=2), str(tmp_path / "all"))
    r = Runner(small_config("derpp", num_seeds=2, **{"loop.eval_tasks": "seen"}), str(tmp_path / "seen"))
    seen = r.run()
    assert r._eval_fn._cache_size() == 1
    upper = np.triu_indices(5, 1)
    for s in (0, 1):
        a = json.load(open(tmp_path / "all" / f"seed_{s}" / "results.json"))
        b = json.load(open(tmp_path / "seen" / f"seed_{s}" / "results.json"))
        assert b["random_init_accuracy"] is None and a["random_init_accuracy"] is not None
        for k in ("class_il", "task_il", "class_il_top5"):
            Ra = np.array(a["accuracy_matrix"][k], float)
            Rb = np.array(b["accuracy_matrix"][k], float)  # null -> nan
            assert np.isnan(Rb[upper]).all() and not np.isnan(Ra).any()
            np.testing.assert_array_equal(np.tril(Rb), np.tril(Ra))
            for m, v in a["metrics"][k].items():
                assert b["metrics"][k][m] == (None if m == "fwt" else v), (k, m)
    assert a["metrics"]["class_il"]["fwt"] is not None
    np.testing.assert_array_equal(seen["metrics"]["class_il"]["final_average_accuracy"]["mean"],
                                  full["metrics"]["class_il"]["final_average_accuracy"]["mean"])


def test_vmapped_seeds_equal_separate_runs(tmp_path):
    both = _run(small_config("er", num_seeds=2, seed=5), str(tmp_path / "both"))
    assert both["seeds"] == [5, 6]
    for s in (5, 6):
        alone = _run(small_config("er", seed=s), str(tmp_path / f"s{s}"))
        vm = json.load(open(tmp_path / "both" / f"seed_{s}" / "results.json"))
        np.testing.assert_allclose(vm["accuracy_matrix"]["class_il"], alone["accuracy_matrix"]["class_il"],
                                   atol=1e-6)
    assert os.path.exists(tmp_path / "both" / "summary.json")


def test_sharded_equals_single_device(tmp_path):
    code = f"""
import jax, json, numpy as np
from conftest import small_config
from clj.train import Runner
assert jax.device_count() == 4
r4 = Runner(small_config('derpp'), '{tmp_path}/four')
assert r4.shard_batch and r4.n_dev == 4
a = r4.run()
b = Runner(small_config('derpp'), '{tmp_path}/one', devices=jax.devices()[:1]).run()
print(json.dumps([a['accuracy_matrix'], b['accuracy_matrix']]))
"""
    a, b = json.loads(run_with_devices(code).strip().splitlines()[-1])
    for k in ("class_il", "task_il"):
        np.testing.assert_allclose(a[k], b[k], atol=1e-6)


@pytest.mark.parametrize("objective", ["er", "der", "derpp"])
def test_empty_buffer_step_equals_stream_only_step(objective):
    """The replay step is branch-free (no lax.cond on "buffer empty"); with an
    empty buffer it must still equal finetune's stream-only step: same loss,
    same parameters (float tolerance) and identical BatchNorm statistics for
    DER/DER++, whose replay passes are skipped in the statistics."""
    import jax
    import jax.numpy as jnp

    from clj.methods import get_method

    def first_step(method):
        c = small_config(method, **{"model.name": "small_cnn", "model.use_bn": True})
        del c.model["hidden"]
        r = Runner(c, "/tmp/clj_unused")
        st = jax.tree.map(lambda a: a[0], r.init_state())
        ix = jnp.arange(16)
        batch = {"x": r.augment(r.X[ix], None, train=False), "x_raw": r.X[ix], "y": r.Y[ix],
                 "task_id": jnp.zeros((16,), jnp.int32), "new_task": True,
                 "step": jnp.int32(0), "steps_per_epoch": jnp.int32(10), "task_size": jnp.int32(100)}
        new, metrics = jax.jit(get_method(method).train_step)(st, batch, jax.random.PRNGKey(3))
        return new.net, metrics

    ref, m_ref = first_step("finetune")
    got, m_got = first_step(objective)
    np.testing.assert_allclose(m_got["loss"], m_ref["loss"], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(got.params), jax.tree.leaves(ref.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert jax.tree.leaves(got.batch_stats), "the test needs a model with BatchNorm"
    for a, b in zip(jax.tree.leaves(got.batch_stats), jax.tree.leaves(ref.batch_stats)):
        if objective == "er":
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        else:
            np.testing.assert_array_equal(a, b)


def test_any_seed_is_unbatched_or_over_the_seed_axis():
    """common.any_seed: OR over the loop's seed vmap (an unbatched predicate,
    so a lax.cond on it stays a conditional); the flag itself outside it."""
    import jax
    import jax.numpy as jnp

    from clj.methods.common import SEED_AXIS, any_seed

    f = jax.vmap(any_seed, axis_name=SEED_AXIS)
    np.testing.assert_array_equal(f(jnp.array([False, True, False])), [True, True, True])
    np.testing.assert_array_equal(f(jnp.array([False, False])), [False, False])
    assert bool(jax.jit(any_seed)(jnp.bool_(True))) and not bool(jax.jit(any_seed)(jnp.bool_(False)))
    calls = []

    def step(flag, x):
        def costly(x):
            jax.debug.callback(lambda: calls.append(1))
            return jnp.where(flag, x + 1, x)
        return jax.lax.cond(any_seed(flag), costly, lambda x: x, x)

    out = jax.vmap(step, axis_name=SEED_AXIS)(jnp.array([False, True]), jnp.zeros(2))
    np.testing.assert_array_equal(out, [0.0, 1.0])
    jax.vmap(step, axis_name=SEED_AXIS)(jnp.array([False, False]), jnp.zeros(2))
    jax.effects_barrier()
    assert len(calls) == 1, "the branch must run only when some seed needs it"


def test_class_il_top5_matrix(digits_results):
    """PyCIL's top-5 curve: y among the 5 highest scores of the seen classes.
    With <= 5 classes seen (tasks 1-2 of 2 classes) it is exactly 1 on seen
    tasks; it is never below top-1 and 0 on tasks not yet seen."""
    res, _ = digits_results["er"]
    R1 = np.array(res["accuracy_matrix"]["class_il"])
    R5 = np.array(res["accuracy_matrix"]["class_il_top5"])
    assert R5.shape == R1.shape == (5, 5)
    assert np.all(R5 >= R1 - 1e-12)
    np.testing.assert_array_equal(R5[0, :1], 1.0)
    np.testing.assert_array_equal(R5[1, :2], 1.0)
    assert np.all(R5[np.triu_indices(5, 1)] == 0)
    assert "class_il_top5" in res["metrics"]
