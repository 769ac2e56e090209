"""loop.seed_batching: a device's runs batched (vmap) or one after another
(lax.map) give every run the result it has alone (clj.train.seeds)."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from clj.config import ConfigError, base_config, validate
from clj.train import Runner
from clj.train.seeds import SEED_BATCHING, check_seed_batching, over_runs
from conftest import small_config


def test_vmap_is_the_default_and_a_bad_value_is_one_line():
    assert base_config().loop.seed_batching == "vmap" and SEED_BATCHING == ("vmap", "map")
    assert check_seed_batching("map") == "map"
    with pytest.raises(ValueError, match="loop.seed_batching='scan' is invalid; valid: vmap, map"):
        check_seed_batching("scan")


def test_a_bad_seed_batching_is_one_line_before_any_work():
    with pytest.raises(ConfigError, match=r"loop.seed_batching='pmap' is unknown; valid: vmap, map\.$"):
        validate(small_config("er", **{"loop.seed_batching": "pmap"}))


def test_over_runs_map_equals_vmap_with_shared_and_per_run_arguments():
    w = jax.random.normal(jax.random.PRNGKey(0), (3, 4, 5))  # per run
    b = jax.random.normal(jax.random.PRNGKey(1), (3, 5))     # per run
    x = jax.random.normal(jax.random.PRNGKey(2), (7, 4))     # shared

    def f(w, x, b):
        return {"y": jnp.tanh(x @ w + b), "n": jnp.sum(w)}

    v = jax.jit(over_runs(f, (0, None, 0), "vmap"))(w, x, b)
    m = jax.jit(over_runs(f, (0, None, 0), "map"))(w, x, b)
    assert m["y"].shape == (3, 7, 5) and m["n"].shape == (3,)
    for k in v:
        np.testing.assert_allclose(m[k], v[k], rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="each entry must be 0 or None"):
        over_runs(f, (1, None, 0), "map")


def _class_il(wd, s):
    return np.array(json.load(open(f"{wd}/seed_{s}/results.json"))["accuracy_matrix"]["class_il"], float)


def _serena_config(**over):
    from test_serena import _cfg  # SERENA's digits config of its own tests

    # one class order for both seeds (SERENA's default follows the seed); random
    # new-cell init (the faithful zero init can leave this tiny MLP's cells dead)
    return _cfg("official", **{"serena.new_cell_init": "reinit_random", "scenario.class_order_seed": 0, **over})


@pytest.mark.parametrize("method, over, atol", [
    # a convolutional network with BN (the case the CPU default exists for), a replay buffer
    # (lr 0.03: at 0.1 this tiny CNN is chaotic enough that float rounding alone, vmapped or
    # not, changes its last tasks' accuracies; two tasks of 5 classes)
    # both differ from a run alone by float rounding only (XLA compiles the batched step, and
    # the per-run copies stacked in one program, differently from a lone run's): a test
    # example or two may flip
    ("derpp", {"model.name": "small_cnn", "model.use_bn": True, "optim.lr": 0.03, "scenario.increment": 5},
     {"map": 0.025, "vmap": 0.025}),
    # SERENA's MLP conditions its cell switch on common.any_seed (a psum over the seed vmap,
    # each run's own flag under map); its vmapped seeds differ from runs alone by float
    # rounding (test_serena)
    ("serena", {}, {"map": 0.02, "vmap": 0.02}),
])
def test_runs_one_after_another_equal_batched_runs_and_runs_alone(method, over, atol, tmp_path):
    """Two seeds one after another (map) and batched (vmap) each equal a run
    of its own."""
    def cfg(**o):
        if method == "serena":
            return _serena_config(**{"num_seeds": 2, "seed": 3, **over, **o})
        c = small_config(method, **{"num_seeds": 2, "seed": 3, **over, **o})
        if over.get("model.name") == "small_cnn":
            del c.model["hidden"]
        return c

    for mode in ("map", "vmap"):
        r = Runner(cfg(**{"loop.seed_batching": mode}), str(tmp_path / mode))
        assert r.seed_batching == mode
        r.run()
    for s in (3, 4):
        Runner(cfg(num_seeds=1, seed=s), str(tmp_path / f"alone{s}")).run()
        alone = np.array(json.load(open(tmp_path / f"alone{s}" / "results.json"))["accuracy_matrix"]["class_il"])
        for mode in ("map", "vmap"):
            np.testing.assert_allclose(_class_il(tmp_path / mode, s), alone, atol=atol[mode], err_msg=mode)
