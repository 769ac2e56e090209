"""Compile time and per-step time of one jitted SER step vs its base method.

    python benchmarks/bench_ser_step.py --config=configs/ser_derpp_digits.py --steps=50

Prints init, compile and mean step times (ms) for ``<base>`` and ``ser_<base>``
on batches of the config's dataset.  Numbers depend on the machine and its
load; they are not asserted anywhere.
"""
import argparse
import os
import runpy
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402


def bench(config, steps):
    from clj.methods import get_method
    from clj.methods.common import augment_from_config
    from clj.train.loop import load_scenario

    sc = load_scenario(config)
    method = get_method(config.method)
    B = int(config.train.batch_size)
    t = time.perf_counter()
    state = jax.jit(lambda k: method.init(k, config, sc))(jax.random.PRNGKey(0))
    jax.block_until_ready(state)
    t_init = time.perf_counter() - t
    aug = augment_from_config(config.augment, sc)
    x_raw = jnp.asarray(sc.x_train[:B])
    batch = {"x": aug(x_raw), "x_raw": x_raw, "y": jnp.asarray(sc.y_train[:B].astype("int32")),
             "task_id": jnp.zeros((B,), jnp.int32), "new_task": jnp.asarray(False)}
    t = time.perf_counter()
    step = jax.jit(method.train_step).lower(state, batch, jax.random.PRNGKey(1)).compile()
    t_compile = time.perf_counter() - t
    state, _ = step(state, batch, jax.random.PRNGKey(2))
    jax.block_until_ready(state)
    t = time.perf_counter()
    for i in range(steps):
        state, m = step(state, batch, jax.random.PRNGKey(i))
    jax.block_until_ready(state)
    return t_init, t_compile, 1000 * (time.perf_counter() - t) / steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/ser_derpp_digits.py")
    ap.add_argument("--steps", type=int, default=50)
    args = ap.parse_args()
    base_cfg = runpy.run_path(args.config)["get_config"]()
    base = base_cfg.method.replace("ser_", "")
    print(f"backend={jax.default_backend()} devices={len(jax.devices())} config={args.config}")
    for method in (base, f"ser_{base}"):
        c = runpy.run_path(args.config)["get_config"]()
        c.method = method
        i, comp, ms = bench(c, args.steps)
        print(f"{method:>12}: init {i:6.1f} s  compile {comp:6.1f} s  step {ms:7.2f} ms")


if __name__ == "__main__":
    main()
