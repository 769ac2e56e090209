"""Runs NISPA with the paper's settings over the paper's seeds and prints the
reference numbers beside ours.

    python experiments/nispa.py --bench fashion_mnist [--seeds 0,19] [--out runs/nispa_exp]
    python experiments/nispa.py --bench ef_mnist --data_dir /path/to/emnist   # GPU advised
    python experiments/nispa.py --bench cifar10                                # GPU

Reference numbers: the paper's result table could not be retrieved
(specs/nispa.md §7.2); what is printed is the authors' committed seed-0
output of their official code (specs/nispa.md §7.1): task-IL ACC 91.72 %
on EF-MNIST and 91.28 % on CIFAR-10.  ``--seeds`` defaults to the paper's
0, 19, 42, 2022, 31415.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PAPER_SEEDS = (0, 19, 42, 2022, 31415)
REFERENCE = {  # official code, seed 0, task-IL ACC in % (specs/nispa.md §7.1)
    "ef_mnist": {"acc": 91.72, "per_task": [96.73, 90.85, 94.56, 90.36, 86.09], "phases": [15, 10, 7, 5, 12]},
    "cifar10": {"acc": 91.28, "per_task": [95.50, 83.95, 87.30, 96.00, 93.65], "phases": [9, 8, 10, 15, 18]},
    "cifar100": None,
    "fashion_mnist": None,
    "digits": None,
}


def ef_mnist_scenario(data_dir: str | None):
    """EMNIST-balanced (labels 0-46) followed by Fashion-MNIST (47-56), tasks of
    [10, 13, 13, 11, 10] classes in label order, task-IL (specs/nispa.md §2.1).

    Raises:
      FileNotFoundError: the EMNIST or Fashion-MNIST files are missing.
    """
    from clj.data import load_dataset
    from clj.scenarios import Scenario, Task

    em = load_dataset("emnist", data_dir, split="balanced")
    fm = load_dataset("fashion_mnist", None)
    xtr = np.concatenate([em.x_train, fm.x_train])
    ytr = np.concatenate([np.asarray(em.y_train), np.asarray(fm.y_train) + 47]).astype(np.int32)
    xte = np.concatenate([em.x_test, fm.x_test])
    yte = np.concatenate([np.asarray(em.y_test), np.asarray(fm.y_test) + 47]).astype(np.int32)
    tasks, start = [], 0
    for t, n in enumerate((10, 13, 13, 11, 10)):
        cls = tuple(range(start, start + n))
        start += n
        tasks.append(Task(t, cls, np.flatnonzero((ytr >= cls[0]) & (ytr <= cls[-1])),
                          np.flatnonzero((yte >= cls[0]) & (yte <= cls[-1]))))
    return Scenario(kind="task_il", dataset_name="ef_mnist", x_train=xtr, y_train=ytr, x_test=xte, y_test=yte,
                    num_classes=57, class_order=np.arange(57), tasks=tuple(tasks), mean=(0.0,), std=(1.0,))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", default="fashion_mnist", choices=sorted(REFERENCE))
    ap.add_argument("--seeds", default=",".join(map(str, PAPER_SEEDS)))
    ap.add_argument("--data_dir", default=None)
    ap.add_argument("--out", default="runs/nispa_exp")
    args = ap.parse_args()
    from clj.train.loop import Runner, load_scenario

    cfg_mod = importlib.import_module(f"configs.nispa_{args.bench}")
    rows = []
    scenario = None
    for seed in [int(s) for s in args.seeds.split(",")]:
        c = cfg_mod.get_config()
        c.seed = seed
        c.progress = False
        if args.data_dir:
            c.data_dir = args.data_dir
        if scenario is None:
            scenario = ef_mnist_scenario(args.data_dir) if args.bench == "ef_mnist" else load_scenario(c)
        res = Runner(c, os.path.join(args.out, f"{args.bench}_seed{seed}"), scenario=scenario).run()
        m = res["metrics"]["task_il"]
        rows.append((seed, 100 * m["final_average_accuracy"], 100 * m["forgetting"],
                     res["extra"]["nispa"]["phases_per_task"], res["wall_time_s"]["total"]))
        print(f"seed {seed}: task-IL ACC {rows[-1][1]:.2f} %, forgetting {rows[-1][2]:.2f}, "
              f"phases {rows[-1][3]}, {rows[-1][4]:.0f} s", flush=True)
    accs = np.array([r[1] for r in rows])
    ref = REFERENCE[args.bench]
    print(f"\n| {args.bench} | task-IL ACC (%) | forgetting | phases per task |")
    print("|---|---|---|---|")
    if ref:
        print(f"| official code, seed 0 (authors' xlsx) | {ref['acc']:.2f} | 0 | {ref['phases']} |")
    else:
        print("| paper | n/a (not reported / not retrieved) | | |")
    print(f"| clj, seeds {args.seeds} | {accs.mean():.2f} ± {accs.std():.2f} | "
          f"{np.mean([r[2] for r in rows]):.2f} | {rows[0][3]} (seed {rows[0][0]}) |")
    json.dump({"bench": args.bench, "rows": rows}, open(os.path.join(args.out, f"{args.bench}_table.json"), "w"))


if __name__ == "__main__":
    main()
