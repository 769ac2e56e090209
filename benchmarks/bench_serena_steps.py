"""SERENA's online train steps per second beside reservoir ER's, same device,
same stream (batch 10), compile excluded.

    python benchmarks/bench_serena_steps.py [--dataset=digits] [--steps=200]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def steps_per_second(config, steps: int) -> float:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from clj.train.loop import Runner

    r = Runner(config, tempfile.mkdtemp())
    state = r.init_state()
    state = jax.jit(jax.vmap(lambda s: r.method.begin_task(s, r._task_info(0, steps, steps))))(state)
    pool = r.scenario.tasks[0].train_idx
    idx = jax.device_put(np.stack([r._index_stream(s, 0, pool, steps) for s in r.seeds]))
    keys = jnp.stack([jax.random.PRNGKey(s) for s in r.seeds])
    K = r.K if steps % r.K == 0 else 1
    fn = r._chunk_fn(K)
    extra = (jnp.int32(steps), jnp.int32(pool.shape[0]))  # steps per epoch, task size (loop signature)
    st, _ = fn(state, r.X, r.Y, idx[:, :K], keys, jnp.int32(0), jnp.int32(0), *extra)  # compile
    jax.block_until_ready(st)
    t0 = time.perf_counter()
    for i in range(0, steps, K):
        st, _ = fn(st, r.X, r.Y, idx[:, i:i + K], keys, jnp.int32(i), jnp.int32(0), *extra)
    jax.block_until_ready(st)
    return steps / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", default="digits")
    ap.add_argument("--steps", type=int, default=200)
    args = ap.parse_args()
    import jax

    from clj.config import load_config

    for var in ("task_free", "official", "er"):
        c = load_config(f"serena_{args.dataset}", var)
        c.num_seeds = 1
        c.progress = False
        print(f"{args.dataset} {var:10s} {c.model.name:16s} {steps_per_second(c, args.steps):8.1f} steps/s "
              f"on {jax.default_backend()} ({jax.devices()[0].device_kind})", flush=True)


if __name__ == "__main__":
    main()
