"""Runs SERENA's paper settings (both protocols) and the baselines over
seeds, and prints the paper's figure readings (docs/serena.md, "What the
paper reports") beside ours.

    python experiments/serena.py --datasets=digits,mnist [--seeds=3] [--variants=official,task_free,er]

The class order follows the seed, as in the official code (``--fixed_order``
uses seed 0's order for every seed): one program cannot vmap seeds with
different orders, so each seed is its own run (``--out/<dataset>_<variant>/
seed_<s>``), one after another.  With ``--fixed_order`` the seeds run vmapped
in one program (``num_seeds``).  CIFAR settings need the TFDS data prepared
(they are skipped with the loader's message otherwise).

Two final accuracies per run (class-IL, the final model): "row mean", the
mean of the last accuracy-matrix row (every task weighs the same), and
"pooled", the accuracy over all test examples together = the official
code's "Stream T" figure (:func:`clj.methods.serena.serena.official_stream_accuracies`);
they differ when tasks have different test sizes (Split-MNIST: 1,866 to
2,163 per task, by class pair).  ``--json`` writes every seed's per-task numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# Pixel readings of the README figure (docs/serena.md, "What the paper reports"), final accuracy in %.
PAPER = {
    "mnist": {"official": 98.5, "iid_offline": 98.4, "iid_online": 96.4, "er": 92.1},
    "cifar10": {"official": 88.5, "iid_offline": 85.3, "iid_online": 60.2, "er": 42.3},
    "cifar100": {"official": 60.7, "iid_offline": 57.3, "iid_online": 22.1, "er": 21.1},
    "digits": {},
}


def load_config(dataset: str, variant: str):
    from clj.config import load_config as load

    return load(f"serena_{dataset}", variant)


def _seed_row(res: dict) -> dict:
    """One seed's numbers from its results.json dict."""
    from clj.methods.serena.serena import official_stream_accuracies

    final = res["accuracy_matrix"]["class_il"][-1]
    sc = res["scenario"]
    off = official_stream_accuracies(final, sc["test_examples_per_task"])
    order = sc["class_order"]
    pairs, k = [], 0
    for n in sc["classes_per_task"]:
        pairs.append(order[k:k + n])
        k += n
    til = res["accuracy_matrix"].get("task_il")
    return dict(seed=res["seed"], row_mean=100 * sum(final) / len(final), pooled=100 * off["final_pooled"],
                incremental=100 * off["incremental_accuracy"], per_task=[100 * a for a in final],
                task_il_per_task=None if til is None else [100 * a for a in til[-1]],
                tasks=pairs, test_counts=sc["test_examples_per_task"],
                cells=res["extra"].get("serena", {}).get("cell_start_steps"))


def _mean_std(v):
    import numpy as np

    v = np.asarray(v, float)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", default="digits,mnist")
    ap.add_argument("--variants", default="official,task_free,er,iid_online,iid_offline")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--fixed_order", action="store_true", help="seed 0's class order for every seed")
    ap.add_argument("--out", default="runs/serena_experiments")
    ap.add_argument("--json", default="", help="write every seed's numbers here")
    args = ap.parse_args(argv)
    from clj.config import class_order_follows_seed
    from clj.train.loop import Runner

    rows, per_seed = [], []
    for ds in args.datasets.split(","):
        for var in args.variants.split(","):
            c = load_config(ds, var)
            c.progress = False
            c.resume = False
            if args.fixed_order:
                c.scenario.class_order_seed = 0
            wd = os.path.join(args.out, f"{ds}_{var}")
            t0 = time.perf_counter()
            try:
                if class_order_follows_seed(c):   # one run per seed
                    results = []
                    for s in range(args.seeds):
                        c.seed, c.num_seeds = s, 1
                        results.append(Runner(c, os.path.join(wd, f"seed_{s}")).run())
                else:
                    c.num_seeds = args.seeds
                    Runner(c, wd).run()
                    results = [json.load(open(os.path.join(wd, f"seed_{s}", "results.json")))
                               if args.seeds > 1 else json.load(open(os.path.join(wd, "results.json")))
                               for s in range(args.seeds)]
            except FileNotFoundError as e:
                print(f"[skip] {ds} {var}: {str(e).splitlines()[0]}")
                continue
            wall = time.perf_counter() - t0
            seeds = [_seed_row(r) for r in results]
            for r in seeds:
                per_seed.append(dict(dataset=ds, variant=var, **r))
                print(json.dumps(per_seed[-1]), flush=True)
            fgt = [r["metrics"]["class_il"]["forgetting"] or 0.0 for r in results]
            rows.append(dict(dataset=ds, variant=var, row_mean=_mean_std([r["row_mean"] for r in seeds]),
                             pooled=_mean_std([r["pooled"] for r in seeds]),
                             forgetting=100 * sum(fgt) / len(fgt), wall_s=wall,
                             per_seed_order=not args.fixed_order,
                             paper=PAPER.get(ds, {}).get(var)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": rows, "per_seed": per_seed}, f, indent=1)
    print(f"\n| dataset | variant | class order | final acc %, row mean | final acc %, pooled (official) "
          f"| forgetting % | paper % | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        paper = "–" if r["paper"] is None else f"{r['paper']:.1f}"
        order = "per seed" if r["per_seed_order"] else "seed 0's"
        print(f"| {r['dataset']} | {r['variant']} | {order} | {r['row_mean'][0]:.2f} ± {r['row_mean'][1]:.2f} | "
              f"{r['pooled'][0]:.2f} ± {r['pooled'][1]:.2f} | {r['forgetting']:.2f} | {paper} | {r['wall_s']:.0f} |")
    print(f"\nPer task (class-IL, final model; {args.seeds} seeds):")
    for r in per_seed:
        cells = "" if not r["cells"] else f"; cells opened at steps {r['cells']}"
        print(f"{r['dataset']} {r['variant']} seed {r['seed']}: " + ", ".join(
            f"{t} {a:.2f}" for t, a in zip(r["tasks"], r["per_task"])) + cells)


if __name__ == "__main__":
    main()
