"""SER on the cluttered-object benchmark: base, transfer control, frozen random
encoder and SER, paired over seeds; optional spurious-feature test.

    python -m clj.methods.ser.pretrain --canvas=32 --num_train=10000 --num_test=500 --steps=400 \
        --batch=16 --log_every=100 --out=runs/ser_clutter/sal_clutter_fashion_mnist_w8_c32.npz
    python experiments/ser_clutter.py --bases=derpp --spurious --num_seeds=5 --workdir=runs/ser_clutter/c32_lr01
    python experiments/ser_clutter.py --bases=er_ace --spurious --num_seeds=5 --workdir=runs/ser_clutter/c32_lr01

(the defaults: 32 px composites, 10,000 / 1,000, and the configs' lr 0.1 and
``train.epochs=0.2``).

Rows per base (``derpp``, ``er_ace``), all from ``configs/ser_<base>_clutter.py``
with the same seeds (``seed .. seed+num_seeds-1``, vmapped in one program), the
same composites (``--canvas``, ``--num_train``, ``--num_test``, written into
each run's ``config.clutter``) and everything else equal (``--set
key=value`` overrides apply to every row alike):

* ``base``: the base method on the plain ResNet-18 (``method=<base>``);
* ``base + sal. encoder init``: the transfer control, ``ser_<base>`` with no
  modulation (``mnp_blocks`` all 0: the classifier is the plain network) and
  the classifier's backbone copied from the pretrained saliency encoder
  (``ser.cls_init=sal_encoder``);
* ``SER, frozen random enc.``: ``ser_<base>`` with the saliency encoder a
  random network (``sal_init=scratch``: a copy of the classifier's initial
  backbone) that never trains (``sal_cnn_lr_factor=0``);
* ``SER``: ``ser_<base>`` from the pretrained checkpoint.

Per seed, the paired difference of final average class-IL (and task-IL)
accuracy of each row against the base (and SER against the two controls) is reported as the
mean and a 95 % Student-t interval over seeds.  ``--spurious`` adds, for
every base (the paper's spurious-feature ablation is on ER-ACE), the base and
SER on a copy of the stream whose *training* images carry a class-specific
white square (4 px, or ``canvas // 10`` if smaller: 3 px at 32 px;
:class:`clj.data.clutter.ClutterParams` ``spurious_patch``);
test images have none.

A run whose workdir already holds its results is reused, so the script can
be re-run to add rows.  Writes ``<workdir>/table.json`` and ``table.md``.
"""
from __future__ import annotations

import argparse
import json
import os
import runpy
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

ROWS = ("base", "transfer", "frozen_random", "ser")
LABEL = {"base": "{B}", "transfer": "{B}, backbone from sal. encoder (transfer control)",
         "frozen_random": "{B} + SER, frozen random encoder", "ser": "{B} + SER (pretrained encoder)",
         "base_spurious": "{B}, spurious patch in training", "ser_spurious": "{B} + SER, spurious patch in training"}
NAME = {"derpp": "DER++", "er_ace": "ER-ACE"}
SPURIOUS_PATCH = 4  # side (pixels) of the class-specific square of the spurious-feature rows, at most canvas // 10
PAIRS = (("transfer", "base"), ("frozen_random", "base"), ("ser", "base"), ("ser", "transfer"),
         ("ser", "frozen_random"), ("ser_spurious", "base_spurious"), ("base_spurious", "base"),
         ("ser_spurious", "ser"))


def row_config(base: str, row: str, ckpt: str, num_seeds: int, overrides: dict):
    c = runpy.run_path(os.path.join(ROOT, "configs", f"ser_{base}_clutter.py"))["get_config"]()
    c.num_seeds = num_seeds
    c.plots = False
    c.progress = False
    c.ser.sal_init = "ckpt:" + ckpt
    kind = row.replace("_spurious", "")
    if kind == "base":
        c.method = base
    elif kind == "transfer":
        c.ser.mnp_blocks = (0, 0, 0, 0, 0)
        c.ser.cls_init = "sal_encoder"
    elif kind == "frozen_random":
        c.ser.sal_init = "scratch"
        c.ser.sal_cnn_lr_factor = 0.0
    for k, v in overrides.items():
        node = c
        *path, last = k.split(".")
        for p in path:
            node = node[p]
        node[last] = type(node[last])(v) if not isinstance(node[last], (tuple, list)) else eval(v)
    return c


def per_seed(workdir: str, seeds: list[int]) -> list[dict]:
    out = []
    for s in seeds:
        p = os.path.join(workdir, f"seed_{s}", "results.json") if len(seeds) > 1 else \
            os.path.join(workdir, "results.json")
        r = json.load(open(p))
        out.append({"class_il": 100 * r["metrics"]["class_il"]["final_average_accuracy"],
                    "task_il": 100 * r["metrics"]["task_il"]["final_average_accuracy"],
                    "forgetting": 100 * r["metrics"]["class_il"]["forgetting"],
                    "wall_s": float(r["wall_time_s"]["total"])})
    return out


def run_row(base: str, row: str, ckpt: str, num_seeds: int, workdir: str, overrides: dict, data_kw: dict) -> dict:
    from clj.train.loop import Runner

    c = row_config(base, row, ckpt, num_seeds, overrides)
    seeds = list(range(int(c.seed), int(c.seed) + num_seeds))
    wd = os.path.join(workdir, f"{base}_{row}")
    done = os.path.join(wd, "row.json")
    if os.path.exists(done):
        return json.load(open(done))
    from clj.data.clutter import load_clutter
    from clj.scenarios import scenario_from_config

    # the composites' sizes go into the run's config too, so its config.json names the data it saw
    patch = min(SPURIOUS_PATCH, data_kw["canvas"] // 10)  # ten class squares on the top row: 3 px at 32 px
    c.clutter.update(dict(spurious_patch=patch if row.endswith("_spurious") else 0, **data_kw))
    ds = load_clutter(c.dataset, c.data_dir or None, seed=int(c.get("data_seed", 0)), **c.clutter.to_dict()).dataset
    scenario = scenario_from_config(ds, c.scenario)
    t0 = time.perf_counter()
    Runner(c, wd, scenario=scenario).run()
    wall = time.perf_counter() - t0
    res = {"base": base, "row": row, "method": c.method, "seeds": seeds, "wall_s": wall, "data": data_kw,
           "per_seed": per_seed(wd, seeds)}
    with open(done, "w") as f:
        json.dump(res, f, indent=1)
    return res


def paired(a: dict, b: dict) -> dict:
    """Mean of a - b over the seeds both rows ran (``{seed: accuracy}``) and its
    95 % Student-t interval."""
    from clj.metrics.intervals import mean_ci

    seeds = sorted(set(a) & set(b))
    d = np.asarray([a[s] for s in seeds], np.float64) - np.asarray([b[s] for s in seeds], np.float64)
    m, lo, hi = mean_ci(d, 0.95)
    return {"mean": m, "lo": lo, "hi": hi, "n": len(d), "diffs": d.tolist()}


def tabulate(results: dict, workdir: str) -> str:
    lines = ["| row | class-IL (%) | task-IL (%) | forgetting CIL | wall (s) |", "|---|---|---|---|---|"]
    for (base, row), r in results.items():
        ci = [p["class_il"] for p in r["per_seed"]]
        ti = [p["task_il"] for p in r["per_seed"]]
        fg = [p["forgetting"] for p in r["per_seed"]]
        lines.append(f"| {LABEL[row].format(B=NAME[base])} | {np.mean(ci):.2f} ± {np.std(ci, ddof=1) if len(ci) > 1 else 0:.2f}"
                     f" | {np.mean(ti):.2f} ± {np.std(ti, ddof=1) if len(ti) > 1 else 0:.2f} | {np.mean(fg):.2f} | "
                     f"{r['wall_s']:.0f} |")
    diffs = {}
    for metric, unit in (("class_il", "class-IL"), ("task_il", "task-IL")):
        lines += ["", f"| paired difference ({unit} points) | mean | 95 % t interval | per seed |", "|---|---|---|---|"]
        for base in dict.fromkeys(b for b, _ in results):
            for a, b in PAIRS:
                if (base, a) in results and (base, b) in results:
                    acc = lambda r: {s: p[metric] for s, p in zip(r["seeds"], r["per_seed"])}  # noqa: E731
                    d = paired(acc(results[(base, a)]), acc(results[(base, b)]))
                    diffs[f"{metric}:{base}:{a}-{b}"] = d
                    lines.append(f"| {LABEL[a].format(B=NAME[base])} − {LABEL[b].format(B=NAME[base])} | "
                                 f"{d['mean']:+.2f} | [{d['lo']:+.2f}, {d['hi']:+.2f}] | "
                                 f"{', '.join(f'{x:+.1f}' for x in d['diffs'])} |")
    table = "\n".join(lines)
    with open(os.path.join(workdir, "table.json"), "w") as f:
        json.dump({"rows": [dict(r) for r in results.values()], "paired": diffs}, f, indent=1)
    with open(os.path.join(workdir, "table.md"), "w") as f:
        f.write(table + "\n")
    return table


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bases", default="derpp,er_ace")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"any of {', '.join(LABEL)}")
    ap.add_argument("--num_seeds", type=int, default=5)
    ap.add_argument("--workdir", default="runs/ser_clutter")
    ap.add_argument("--ckpt", default="runs/ser_clutter/sal_clutter_fashion_mnist_w8_c32.npz")
    ap.add_argument("--pretrain_steps", type=int, default=400,
                    help="if --ckpt is missing: steps of python -m clj.methods.ser.pretrain (batch 16)")
    ap.add_argument("--spurious", action="store_true",
                    help="add the spurious-patch rows (base and SER) for every base, after the other rows")
    ap.add_argument("--canvas", type=int, default=32, help="side of the composites (the configs' default: 32)")
    ap.add_argument("--num_train", type=int, default=10000)
    ap.add_argument("--num_test", type=int, default=1000)
    ap.add_argument("--no_run", action="store_true", help="only tabulate the rows already run")
    ap.add_argument("--set", action="append", default=[], help="config override key=value (repeatable)")
    a = ap.parse_args(argv)
    overrides = dict(s.split("=", 1) for s in a.set)
    os.makedirs(a.workdir, exist_ok=True)
    bad = sorted(set(r.strip() for r in a.rows.split(",")) - set(LABEL))
    if bad:
        ap.error(f"--rows: unknown row(s) {bad}; valid: {', '.join(LABEL)}")
    needs_ckpt = a.spurious or any(r.strip() in ("transfer", "ser", "ser_spurious") for r in a.rows.split(","))
    if needs_ckpt and not a.no_run and not os.path.exists(a.ckpt):
        from clj.methods.ser import pretrain as ser_pretrain

        ser_pretrain.main([f"--out={a.ckpt}", f"--steps={a.pretrain_steps}", f"--canvas={a.canvas}",
                           "--num_train=10000", "--num_test=500", "--batch=16", "--log_every=100"])
    data_kw = dict(canvas=a.canvas, num_train=a.num_train, num_test=a.num_test)
    results = {}
    plan = [(b.strip(), r.strip()) for b in a.bases.split(",") for r in a.rows.split(",")]
    if a.spurious:
        plan += [(b.strip(), r) for b in a.bases.split(",") for r in ("base_spurious", "ser_spurious")]
    for base, row in plan:
        if a.no_run and not os.path.exists(os.path.join(a.workdir, f"{base}_{row}", "row.json")):
            continue
        t0 = time.perf_counter()
        results[(base, row)] = run_row(base, row, a.ckpt, a.num_seeds, a.workdir, overrides, data_kw)
        print(f"{base} {row}: {time.perf_counter() - t0:.0f} s; "
              f"class-IL {[round(p['class_il'], 2) for p in results[(base, row)]['per_seed']]}", flush=True)
        print(tabulate(results, a.workdir), flush=True)


if __name__ == "__main__":
    main()
