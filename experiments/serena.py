"""Runs SERENA's paper settings (both protocols) and the baselines over
seeds, and prints the paper's figure readings (spec §9) beside ours.

    python experiments/serena.py --datasets=digits,mnist [--seeds=3] [--variants=official,task_free,er]

Each (dataset, variant) runs its seeds vmapped in one program
(``num_seeds``) in ``--out/<dataset>_<variant>``; CIFAR settings need the
TFDS data prepared (they are skipped with the loader's message otherwise).
"Stream T" is the official code's final number: the final model's accuracy
pooled over all tasks (the mean of the last accuracy-matrix row, class-IL).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# Pixel readings of the README figure (spec §9), final accuracy in %.
PAPER = {
    "mnist": {"official": 98.5, "iid_offline": 98.4, "iid_online": 96.4, "er": 92.1},
    "cifar10": {"official": 88.5, "iid_offline": 85.3, "iid_online": 60.2, "er": 42.3},
    "cifar100": {"official": 60.7, "iid_offline": 57.3, "iid_online": 22.1, "er": 21.1},
    "digits": {},
}


def load_config(dataset: str, variant: str):
    from clj.config import load_config as load

    return load(f"serena_{dataset}", variant)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", default="digits,mnist")
    ap.add_argument("--variants", default="official,task_free,er,iid_online,iid_offline")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default="runs/serena_experiments")
    args = ap.parse_args(argv)
    from clj.train.loop import Runner

    rows = []
    for ds in args.datasets.split(","):
        for var in args.variants.split(","):
            c = load_config(ds, var)
            c.num_seeds = args.seeds
            c.progress = False
            c.resume = False
            wd = os.path.join(args.out, f"{ds}_{var}")
            t0 = time.perf_counter()
            try:
                out = Runner(c, wd).run()
            except FileNotFoundError as e:
                print(f"[skip] {ds} {var}: {str(e).splitlines()[0]}")
                continue
            wall = time.perf_counter() - t0
            m = out["metrics"]["class_il"]
            get = lambda k: m[k]["mean"] if isinstance(m[k], dict) else m[k]  # noqa: E731
            std = lambda k: m[k]["std"] if isinstance(m[k], dict) else 0.0  # noqa: E731
            rows.append(dict(dataset=ds, variant=var, acc=100 * get("final_average_accuracy"),
                             std=100 * std("final_average_accuracy"),
                             forgetting=100 * (get("forgetting") or 0.0), wall_s=wall,
                             paper=PAPER.get(ds, {}).get(var)))
            print(json.dumps(rows[-1]), flush=True)
    print(f"\n| dataset | variant | ours: final acc % (mean ± std, {args.seeds} seeds) | forgetting % | paper % | wall s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        paper = "–" if r["paper"] is None else f"{r['paper']:.1f}"
        print(f"| {r['dataset']} | {r['variant']} | {r['acc']:.2f} ± {r['std']:.2f} | {r['forgetting']:.2f} | "
              f"{paper} | {r['wall_s']:.0f} |")


if __name__ == "__main__":
    main()
