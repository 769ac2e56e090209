"""Times the loop's own compiled training chunk (shared by the benchmark scripts)."""
from __future__ import annotations

import time

import jax
import numpy as np


def time_chunk(r, state, calls: int) -> dict:
    """Compiles ``r``'s chunk (a :class:`clj.train.Runner`) and times ``calls``
    calls of it after one warm-up call, on random indices of task 0.

    Returns:
      dict: ``compile_s`` (lower + compile, s), ``steps_per_s`` (steps of one
      seed's stream per second; all seeds advance together), ``seed_steps_per_s``
      (steps x seeds per second), ``images_per_s`` (stream images x seeds per
      second; replay draws not counted), ``K``, ``unroll``, ``seeds``.
    """
    K, S, B = r.K, r.S, r.B
    n = r.scenario.x_train.shape[0]
    rng = np.random.default_rng(0)
    idx = [jax.device_put(rng.integers(0, n, (S, K, B), dtype=np.int32)) for _ in range(calls + 1)]
    keys = jax.numpy.stack([jax.random.PRNGKey(s) for s in r.seeds])
    big = np.int32(10 ** 9)  # no masked steps
    args = lambda c: (r.X, r.Y, idx[c], keys, np.int32(c * K), big, np.int32(0), np.int32(n // B),  # noqa: E731
                      np.int32(n))
    fn = r._chunk_fn()
    t0 = time.perf_counter()
    compiled = fn.lower(state, *args(0)).compile()
    compile_s = time.perf_counter() - t0
    state, _ = compiled(state, *args(0))
    jax.block_until_ready(state)
    t0 = time.perf_counter()
    for c in range(1, calls + 1):
        state, _ = compiled(state, *args(c))
    jax.block_until_ready(state)
    dt = time.perf_counter() - t0
    steps = calls * K
    return {"compile_s": round(compile_s, 2), "steps_per_s": round(steps / dt, 3),
            "seed_steps_per_s": round(S * steps / dt, 3), "images_per_s": round(S * steps * B / dt, 1),
            "K": K, "unroll": r.unroll, "seeds": S}
