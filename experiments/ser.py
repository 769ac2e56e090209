"""Base method vs base + SER on the same split and seeds; prints the table.

    python experiments/ser.py --config=configs/ser_derpp_fashion_mnist.py \
        --bases=derpp,er_ace --num_seeds=2 --workdir=runs/ser_exp

For each base (``derpp``, ``er_ace``, ``er``) it runs, through the same
:class:`clj.train.loop.Runner` that ``launch.py`` uses, the config with
``method=<base>`` (the plain ResNet-18 of ``config.model``) and with
``method=ser_<base>``, both over seeds ``seed .. seed+num_seeds-1`` (vmapped
in one program).  It writes ``<workdir>/table.json`` and ``table.md`` with
final average class-IL / task-IL accuracy (mean +- std over seeds),
forgetting and wall time, beside the paper's numbers where known.

The paper's Table 1 cells (Split Mini-ImageNet / FG-ImageNet, buffers
1000/2000/5000) could not be read from the available material (``docs/ser.md``),
so that column says so instead of inventing them.
"""
from __future__ import annotations

import argparse
import json
import os
import runpy
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

PAPER = "n/a (Table 1 not retrievable, docs/ser.md)"


def _fmt(d):
    if isinstance(d, dict):
        return f"{100 * d['mean']:.2f} ± {100 * d['std']:.2f}"
    return f"{100 * d:.2f}"


def run_pair(config_path: str, base: str, num_seeds: int, workdir: str, overrides: dict) -> list[dict]:
    from clj.train.loop import Runner

    rows = []
    for method in (base, f"ser_{base}"):
        c = runpy.run_path(config_path)["get_config"]()
        c.method = method
        c.num_seeds = num_seeds
        c.plots = False
        for k, v in overrides.items():
            node = c
            *path, last = k.split(".")
            for p in path:
                node = node[p]
            node[last] = type(node[last])(v) if not isinstance(node[last], (tuple, list)) else eval(v)
        wd = os.path.join(workdir, method)
        t0 = time.perf_counter()
        out = Runner(c, wd).run()
        wall = time.perf_counter() - t0
        m = out["metrics"]
        rows.append({"method": method, "dataset": c.dataset, "seeds": list(range(c.seed, c.seed + num_seeds)),
                     "class_il": m["class_il"]["final_average_accuracy"],
                     "task_il": m["task_il"]["final_average_accuracy"],
                     "forgetting_class_il": m["class_il"]["forgetting"], "wall_time_s": wall})
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="configs/ser_derpp_digits.py")
    ap.add_argument("--bases", default="derpp,er_ace")
    ap.add_argument("--num_seeds", type=int, default=2)
    ap.add_argument("--workdir", default="runs/ser_experiment")
    ap.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
    args = ap.parse_args(argv)
    overrides = dict(s.split("=", 1) for s in args.set)
    rows = []
    for base in args.bases.split(","):
        rows += run_pair(args.config, base.strip(), args.num_seeds, args.workdir, overrides)
    os.makedirs(args.workdir, exist_ok=True)
    with open(os.path.join(args.workdir, "table.json"), "w") as f:
        json.dump(rows, f, indent=1)
    lines = ["| method | dataset | seeds | class-IL (%) | task-IL (%) | forgetting CIL | wall (s) | paper class-IL |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['dataset']} | {r['seeds']} | {_fmt(r['class_il'])} | "
                     f"{_fmt(r['task_il'])} | {_fmt(r['forgetting_class_il'])} | {r['wall_time_s']:.0f} | {PAPER} |")
    table = "\n".join(lines)
    with open(os.path.join(args.workdir, "table.md"), "w") as f:
        f.write(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
