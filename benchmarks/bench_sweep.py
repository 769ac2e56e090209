"""A hyperparameter grid x seeds as one vmapped program against the same runs
one after another (a shell loop over ``launch.py``, one process each).

    python benchmarks/bench_sweep.py                                  # derpp_mnist, 4 lr x 2 alpha x 5 seeds
    python benchmarks/bench_sweep.py --config=configs/derpp_digits.py --lr=0.05,0.1 --alpha=0.1,0.3 \\
        --seeds=2 --set train.epochs=1 --separate_limit=4

Prints a markdown table and one JSON line per mode: wall seconds of the whole
grid, and per run.  ``--separate_limit=N`` times only the first N separate runs
and extrapolates to all of them (marked "estimated").  The first grid program
and the first separate run pay their compiles; JAX's persistent compilation
cache (the loop's default) is left on for both, as a user would have it.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="configs/derpp_mnist.py")
    ap.add_argument("--lr", default="0.01,0.03,0.1,0.2")
    ap.add_argument("--alpha", default="0.1,0.3")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--set", action="append", default=[], help="FIELD=VALUE for every run (repeatable)")
    ap.add_argument("--mode", choices=["both", "grid", "separate"], default="both")
    ap.add_argument("--separate_limit", type=int, default=0, help="time only this many separate runs (0 = all)")
    ap.add_argument("--workdir", default="")
    a = ap.parse_args()

    from clj.config import load_config
    from clj.sweep import parse_grid, run_sweep
    from clj.sweep.grid import apply_overrides, parse_value, _field

    base = load_config(os.path.join(ROOT, a.config) if not os.path.isabs(a.config) else a.config)
    sets = {}
    for s in a.set + ["progress=False", "plots=False"]:
        k, v = s.split("=", 1)
        sets[k] = parse_value(_field(base, k), v, k)
    base = apply_overrides(base, sets)
    grid = parse_grid([f"optim.lr={a.lr}", f"replay.alpha={a.alpha}"], base)
    n_points = len(grid["optim.lr"]) * len(grid["replay.alpha"])
    n_runs = n_points * a.seeds
    wd = a.workdir or tempfile.mkdtemp(prefix="bench_sweep_")
    import jax

    dev = f"{jax.devices()[0].device_kind} ({jax.default_backend()}, {len(jax.devices())} device(s))"
    print(f"{a.config}: {n_points} points x {a.seeds} seeds = {n_runs} runs on {dev}; overrides {sets}")
    rows = []
    if a.mode in ("both", "grid"):
        t0 = time.perf_counter()
        out = run_sweep(apply_overrides(base, {"num_seeds": a.seeds}), grid, os.path.join(wd, "grid"))
        wall = time.perf_counter() - t0
        assert not out["failed"], out
        rows.append({"mode": "grid: one vmapped program", "programs": len(out["ran"]), "runs": n_runs,
                     "wall_s": wall, "per_run_s": wall / n_runs, "estimated": False})
    if a.mode in ("both", "separate"):
        todo = [(lr, al, s) for lr in grid["optim.lr"] for al in grid["replay.alpha"]
                for s in range(int(base.seed), int(base.seed) + a.seeds)]
        limit = a.separate_limit or len(todo)
        t0 = time.perf_counter()
        for i, (lr, al, s) in enumerate(todo[:limit]):
            cmd = [sys.executable, "launch.py", f"--config={a.config}", f"--config.optim.lr={lr}",
                   f"--config.replay.alpha={al}", f"--config.seed={s}", "--config.num_seeds=1",
                   f"--workdir={os.path.join(wd, 'separate', f'{i}')}"]
            cmd += [f"--config.{x}" for x in a.set]
            cmd += ["--config.progress=False", "--config.plots=False"]
            subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True)
        wall = time.perf_counter() - t0
        rows.append({"mode": "separate: launch.py one after another", "programs": len(todo), "runs": len(todo),
                     "wall_s": wall * len(todo) / limit, "per_run_s": wall / limit, "estimated": limit < len(todo),
                     "timed_runs": limit})
    print("| mode | programs | runs | wall s | s / run |\n|---|---|---|---|---|")
    for r in rows:
        est = " (estimated from %d runs)" % r["timed_runs"] if r.get("estimated") else ""
        print(f"| {r['mode']} | {r['programs']} | {r['runs']} | {r['wall_s']:.1f}{est} | {r['per_run_s']:.2f} |")
    for r in rows:
        print(json.dumps({"config": a.config, "device": dev, **r}))


if __name__ == "__main__":
    main()
