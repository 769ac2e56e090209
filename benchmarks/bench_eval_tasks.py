"""The loop's evaluation with ``loop.eval_tasks="all"`` against ``"seen"``.

    python benchmarks/bench_eval_tasks.py                                         # AKR, Fashion-MNIST B0 Inc2
    python benchmarks/bench_eval_tasks.py --config=configs/derpp_digits.py --repeats=5

Builds the config's :class:`clj.train.loop.Runner` and its initial State (the
weights do not change the cost of a forward pass), then times
``Runner.evaluate(state, upto=t)`` for every t (the ``"seen"`` evaluation
after task t: the test sets of tasks 0..t) and ``Runner.evaluate(state)``
(``"all"``: every task's test set). The first call of each compiles; the
table gives the compile call apart and the median of ``--repeats`` more
calls, in seconds of wall time, and the evaluation jit's cache size at the
end (one program serves every prefix). A run evaluates T times with
``seen`` (after each task) and T + 1 times with ``all`` (after each task
and once before training, forward transfer's baseline).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _timed(fn) -> float:
    import jax

    t0 = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - t0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="configs/akr_fmnist_b0inc2.py:attentive,200,10")
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args(argv)
    if a.repeats < 1:
        raise SystemExit(f"--repeats={a.repeats} is invalid: it must be >= 1.")

    import jax

    from clj.config import load_config
    from clj.train.loop import Runner

    path, _, variant = a.config.partition(":")
    c = load_config(path, variant or None)
    c.progress = False
    c.plots = False
    with tempfile.TemporaryDirectory() as wd:
        r = Runner(c, wd)
        state = r.init_state()
        T = r.scenario.num_tasks
        rows = []
        for label, upto in [(f"seen, after task {t}", t) for t in range(T)] + [("all", None)]:
            first = _timed(lambda: r.evaluate(state, upto=upto)["class_il"])
            rest = [_timed(lambda: r.evaluate(state, upto=upto)["class_il"]) for _ in range(a.repeats)]
            rows.append((label, first, statistics.median(rest)))
        compiles = r._eval_counts_fn()._cache_size() if r.placement == "device" else None
        seen_total = sum(m for _, _, m in rows[:-1])
        all_total = (T + 1) * rows[-1][2]
    print(f"{a.config} on {jax.devices()[0].platform} ({len(jax.devices())} device(s)), "
          f"{c.num_seeds} seed(s), {T} tasks")
    print()
    print("| evaluation | first call s (compile included) | median s |")
    print("|---|---|---|")
    for label, first, med in rows:
        print(f"| {label} | {first:.2f} | {med:.2f} |")
    print()
    print(f"per run (steady state): seen {seen_total:.1f} s, all {all_total:.1f} s "
          f"(ratio {seen_total / all_total:.2f}; test sets evaluated: T(T+1)/2 against T(T+1), "
          f"ratio 0.50); evaluation programs compiled: {compiles}")


if __name__ == "__main__":
    main()
