"""Per-task train-step time of MEMO and DER (Yan): the live old blocks under
``vmap`` over the stacked block axis with the gradient of every parameter
(``cil.growth="vmap"``, the earlier version) against a loop over the live
blocks differentiating only the trainable subtree (``"loop"``).

    python benchmarks/bench_memo_step.py [--methods=memo,dynamic_er] [--tasks=0,1,2,3,4] [--steps=3]

Fashion-MNIST B0 Inc2 shapes (``configs/<method>_fmnist_b0inc2.py``: 28x28x1,
ResNet-8, B=32 in PyCIL batching, 5 tasks), one seed.  Task t has t + 1 live
blocks; the state is grown with ``begin_task`` (no training in between: the
step's cost does not depend on the values).  The two versions are timed in
turn for each task (same period of machine load).  Prints compile s and
s/step per (method, task, version).  Timings depend on the machine's load;
they are never asserted in tests.
"""
import argparse
import dataclasses
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from clj.config import load_config  # noqa: E402
from clj.methods.cil import expand  # noqa: E402
from clj.methods.common import TaskInfo  # noqa: E402
from clj.train.loop import load_scenario  # noqa: E402


def time_step(state, batch, steps: int) -> tuple[float, float]:
    """(compile + first step s, steady s/step) of the jitted train step."""
    fn = jax.jit(expand.train_step)
    t = time.perf_counter()
    s2, m = fn(state, batch, jax.random.PRNGKey(1))
    jax.block_until_ready(m)
    comp = time.perf_counter() - t
    t = time.perf_counter()
    for k in range(steps):
        s2, m = fn(s2, batch, jax.random.PRNGKey(2 + k))
    jax.block_until_ready(m)
    return comp, (time.perf_counter() - t) / steps


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--methods", default="memo,dynamic_er")
    ap.add_argument("--tasks", default="0,1,2,3,4")
    ap.add_argument("--steps", type=int, default=3)
    a = ap.parse_args()
    tasks = [int(t) for t in a.tasks.split(",")]
    print(f"backend {jax.default_backend()}, {os.cpu_count()} cpus, load {os.getloadavg()[0]:.1f}")
    print(f"{'method':<11} {'task':>4} {'blocks':>6} {'version':<5} {'compile s':>9} {'s/step':>8}")
    for method in a.methods.split(","):
        c = load_config(f"{method}_fmnist_b0inc2")
        sc = load_scenario(c)
        kind = "memo" if method == "memo" else "der"
        s = expand.init(jax.random.PRNGKey(0), c, sc, kind)
        B = int(c.train.batch_size)
        for t in range(max(tasks) + 1):
            s = expand.begin_task(s, TaskInfo(t, sc.tasks[t].classes, 10, 2, sc.num_classes))
            if t not in tasks:
                continue
            idx = sc.tasks[t].train_idx[:B]
            batch = {"x": s.static.augment(jnp.asarray(sc.x_train[idx])), "y": jnp.asarray(sc.y_train[idx], jnp.int32)}
            for version in ("vmap", "loop"):
                sv = s.replace(static=dataclasses.replace(s.static, growth=version))
                comp, per = time_step(sv, batch, a.steps)
                print(f"{method:<11} {t:>4} {s.static.live:>6} {version:<5} {comp:9.1f} {per:8.3f}  "
                      f"(load {os.getloadavg()[0]:.1f})", flush=True)


if __name__ == "__main__":
    main()
