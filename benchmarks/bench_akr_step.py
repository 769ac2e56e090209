"""Compile time and steady-state time of one train step (phase 1, Split-digits,
ResNet-8, B=32 + exemplars) for iCaRL, Mixup and AKR (two attention archs).

    python benchmarks/bench_akr_step.py [--seeds=1] [--steps=20]

Prints one line per variant: compile s, ms/step.  Timings depend on the
machine's load; they are never asserted in tests.
"""
import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from clj.configs.akr_common import digits_config  # noqa: E402
from clj.methods.akr import akr  # noqa: E402
from clj.methods.cil import icarl  # noqa: E402
from clj.methods.common import TaskInfo  # noqa: E402
from clj.train.loop import load_scenario  # noqa: E402


def bench(mod, c, sc, seeds, steps):
    keys = jax.random.split(jax.random.PRNGKey(0), seeds)
    st = jax.vmap(lambda k: mod.init(k, c, sc))(keys)
    t0 = sc.tasks[0]
    info0 = TaskInfo(0, t0.classes, 10, 9, sc.num_classes)
    st = jax.vmap(lambda s: mod.begin_task(s, info0))(st)
    data = {"x": jnp.asarray(sc.x_train[t0.train_idx]), "y": jnp.asarray(sc.y_train[t0.train_idx], jnp.int32)}
    st = jax.jit(jax.vmap(lambda s, d: mod.end_task(s, {**d, "info": info0}), in_axes=(0, None)))(st, data)
    t1 = sc.tasks[1]
    info1 = TaskInfo(1, t1.classes, 100, 9, sc.num_classes)
    st = jax.vmap(lambda s: mod.begin_task(s, info1))(st)
    idx = t1.train_idx[:32]
    aug = lambda x: (x.astype(jnp.float32) / 255.0)  # noqa: E731
    batch = {"x": aug(jnp.asarray(sc.x_train[idx])), "x_raw": jnp.asarray(sc.x_train[idx]),
             "y": jnp.asarray(sc.y_train[idx], jnp.int32), "task_id": jnp.full((32,), -1, jnp.int32),
             "new_task": jnp.asarray(False)}
    fn = jax.jit(jax.vmap(mod.train_step, in_axes=(0, None, 0)))
    rk = jax.random.split(jax.random.PRNGKey(1), seeds)
    t = time.perf_counter()
    st2, m = fn(st, batch, rk)
    jax.block_until_ready(m)
    comp = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(steps):
        st2, m = fn(st2, batch, rk)
    jax.block_until_ready(m)
    return comp, 1000 * (time.perf_counter() - t) / steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--variants", default="icarl,mixup,akr_trunk,akr_mlp")
    a = ap.parse_args()
    sc = load_scenario(digits_config("mixup"))
    for v in a.variants.split(","):
        if v == "icarl":
            c, mod = digits_config("icarl"), icarl
        else:
            c, mod = digits_config("mixup" if v == "mixup" else "attentive"), akr
            if v == "akr_mlp":
                c.akr.attn_arch = "feature_mlp"
        comp, ms = bench(mod, c, sc, a.seeds, a.steps)
        print(f"{v:<10} seeds={a.seeds} compile {comp:6.1f} s   {ms:7.1f} ms/step   ({jax.default_backend()})",
              flush=True)


if __name__ == "__main__":
    main()
