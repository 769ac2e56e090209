"""The memory-aligned comparison of MEMO (Zhou et al., ICLR 2023, Table 14 /
spec Sec. 7.1): Replay, iCaRL, WA, DER and MEMO at one byte budget.

    python experiments/memo.py --setting=fmnist_b0inc2 --workdir=runs/memo_exp
    python experiments/memo.py --setting=cifar100_b0inc10 --workdir=runs/memo_cifar   # GPU, TFDS CIFAR-100

Runs every method's ``configs/<method>_<setting>.py`` through the loop (a run
whose workdir has results.json is reused; ``--num_seeds`` seeds in one
vmapped program), then prints average incremental
and last class-IL accuracy (CNN rule; mean +- std over seeds), exemplars,
exemplar / model / total bytes and wall time per task, with the paper's
numbers beside ours where the paper has the setting.

``cil.batching="pycil"`` needs the loop to take each task's step count and
new examples per step from the method (``task_steps``); :class:`PlannedRunner`
does that on top of the loop's Runner.
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


def run_planned(config, workdir: str) -> dict:
    """Runs ``config``; the loop follows the method's ``task_steps`` plan
    (PyCIL's mixed batches when ``cil.batching='pycil'``)."""
    from clj.train.loop import Runner

    return Runner(config, workdir).run()


def load_config(method: str, setting: str):
    from clj.config import load_config as load

    return load(f"{method}_{setting}")


def _seed_results(wd: str) -> list[dict]:
    """results.json of every seed of a run folder (one file or seed_*/)."""
    import glob

    one = os.path.join(wd, "results.json")
    if os.path.exists(one):
        return [json.load(open(one))]
    return [json.load(open(p)) for p in sorted(glob.glob(os.path.join(wd, "seed_*", "results.json")))]


def partial_table(workdir: str, setting: str, methods) -> list[str]:
    """Lines for runs that have not finished: from each run's latest task
    checkpoint, the accuracy on the seen classes after every completed task
    (class-IL, mean +- sample std over seeds) and the wall time per task."""
    import glob

    import numpy as np

    lines = []
    for m in methods:
        metas = sorted(glob.glob(os.path.join(workdir, f"{setting}_{m}", "checkpoints", "*", "meta", "metadata")),
                       key=lambda p: int(p.split(os.sep)[-3]))
        if not metas:
            lines.append(f"{m}: no task finished")
            continue
        d = json.load(open(metas[-1]))
        rows = np.asarray(d["acc"]["class_il"])  # [tasks done, S, T]
        cells = []
        for t in range(d["completed_tasks"]):
            a = 100 * rows[t][:, : t + 1].mean(1)  # per seed: mean over the seen tasks (equal test sizes)
            sd = a.std(ddof=1) if a.size > 1 else 0.0
            cells.append(f"{a.mean():.2f} +- {sd:.2f}")
        wall = " / ".join(f"{w:.0f}" for w in d["wall_time"])
        lines.append(f"{m}: {d['completed_tasks']} tasks, {rows.shape[1]} seeds; acc after each task: "
                     f"{' | '.join(cells)}; wall s per task: {wall}")
    return lines


def main(argv=None):
    import numpy as np

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setting", default="fmnist_b0inc2")
    ap.add_argument("--workdir", default="runs/memo_exp")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--num_seeds", type=int, default=3, help="seeds, vmapped in one program")
    ap.add_argument("--no-run", action="store_true", help="only tabulate existing results")
    ap.add_argument("--partial", action="store_true", help="tabulate unfinished runs from their checkpoints")
    args = ap.parse_args(argv)
    if args.partial:
        print("\n".join(partial_table(args.workdir, args.setting, args.methods.split(","))))
        return
    rows = []
    for m in args.methods.split(","):
        wd = os.path.join(args.workdir, f"{args.setting}_{m}")
        if not _seed_results(wd) and not args.no_run:
            c = load_config(m, args.setting)
            c.plots = False
            c.num_seeds = args.num_seeds
            run_planned(c, wd)
        res = _seed_results(wd)
        if not res:
            print(f"{m}: no results in {wd}")
            continue
        avg = np.array([100 * r["metrics"]["class_il"]["average_incremental_accuracy"] for r in res])
        last = np.array([100 * r["metrics"]["class_il"]["final_average_accuracy"] for r in res])
        r = res[0]
        wall = r["wall_time_s"]
        rows.append((m, avg, last, r["extra"].get("exemplars"), r["memory_bytes"], wall))
    paper = PAPER.get(args.setting, {})
    print(f"setting {args.setting} (class-IL, CNN rule; mean +- sample std over seeds; bytes: exemplars uint8 + "
          "4 B/param, FC excluded; wall: all seeds in one program)")
    print(f"{'method':<11} {'seeds':>5} {'avg inc':>14} {'last':>14} {'paper avg/last':>15} {'exemplars':>9} "
          f"{'ex. bytes':>10} {'model bytes':>11} {'total':>10} {'wall s':>7}  per task s")
    for m, avg, last, n_ex, mem, wall in rows:
        p = paper.get(m)
        ps = f"{p[0]:.2f}/{p[1]:.2f}" if p else "-"
        per = " / ".join(f"{w:.0f}" for w in wall.get("per_task", []))
        dd = min(1, len(avg) - 1)  # sample std over seeds
        print(f"{m:<11} {len(avg):>5} {avg.mean():7.2f}+-{avg.std(ddof=dd):5.2f} {last.mean():7.2f}+-"
              f"{last.std(ddof=dd):5.2f} "
              f"{ps:>15} {n_ex:>9} {mem['buffer']:>10} {mem['model']:>11} {mem['total']:>10} "
              f"{wall['total']:7.1f}  {per}")


if __name__ == "__main__":
    main()
