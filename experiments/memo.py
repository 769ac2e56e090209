"""The memory-aligned comparison of MEMO (Zhou et al., ICLR 2023, Table 14 /
spec Sec. 7.1): Replay, iCaRL, WA, DER and MEMO at one byte budget.

    python experiments/memo.py --setting=fmnist_b0inc2 --workdir=runs/memo_exp
    python experiments/memo.py --setting=cifar100_b0inc10 --workdir=runs/memo_cifar   # GPU, TFDS CIFAR-100

Runs every method's ``configs/<method>_<setting>.py`` through the loop (a run
whose workdir has results.json is reused), then prints average incremental
and last class-IL accuracy (CNN rule), exemplars, exemplar / model / total
bytes and wall time, with the paper's numbers beside ours where the paper
has the setting.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

METHODS = ("replay", "icarl", "wa", "dynamic_er", "memo")
# Paper (MEMO, App. Table 14; CIFAR-100 B0 Inc10, 23.5 MB): (avg, last) in %.
PAPER = {"cifar100_b0inc10": {"replay": (69.98, 55.61), "icarl": (70.94, 58.52), "wa": (69.55, 59.26),
                              "dynamic_er": (71.47, 60.26), "memo": (72.37, 61.98)}}


def load_config(method: str, setting: str):
    from clj.config import load_config as load

    return load(f"{method}_{setting}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setting", default="fmnist_b0inc2")
    ap.add_argument("--workdir", default="runs/memo_exp")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--no-run", action="store_true", help="only tabulate existing results")
    args = ap.parse_args(argv)
    rows = []
    for m in args.methods.split(","):
        wd = os.path.join(args.workdir, f"{args.setting}_{m}")
        res_path = os.path.join(wd, "results.json")
        if not os.path.exists(res_path) and not args.no_run:
            from clj.train import run

            c = load_config(m, args.setting)
            c.plots = False
            run(c, wd)
        if not os.path.exists(res_path):
            print(f"{m}: no results in {wd}")
            continue
        r = json.load(open(res_path))
        met = r["metrics"]["class_il"]
        rows.append((m, 100 * met["average_incremental_accuracy"], 100 * met["final_average_accuracy"],
                     r["extra"].get("exemplars"), r["memory_bytes"], r["wall_time_s"]["total"]))
    paper = PAPER.get(args.setting, {})
    print(f"setting {args.setting} (class-IL, CNN rule; bytes: exemplars uint8 + 4 B/param, FC excluded)")
    print(f"{'method':<11} {'avg inc':>8} {'last':>7} {'paper avg/last':>15} {'exemplars':>9} "
          f"{'ex. bytes':>10} {'model bytes':>11} {'total':>10} {'wall s':>7}")
    for m, avg, last, n_ex, mem, wall in rows:
        p = paper.get(m)
        ps = f"{p[0]:.2f}/{p[1]:.2f}" if p else "-"
        print(f"{m:<11} {avg:8.2f} {last:7.2f} {ps:>15} {n_ex:>9} {mem['buffer']:>10} {mem['model']:>11} "
              f"{mem['total']:>10} {wall:7.1f}")


if __name__ == "__main__":
    main()
