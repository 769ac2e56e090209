"""Compares SERENA's test-time rules on data-incremental streams: the
official task-indexed vote (SERENA's own rule; it knows the true task of the
test data) against clj's task-free class-mean routing rules in three spaces
(pixels = ``nearest_class_mean``; union-network features =
``nearest_class_mean_union``; cell-0 features = ``nearest_class_mean_cell0``;
:mod:`clj.methods.serena.route`).

    python experiments/serena_routing.py --datasets=mnist,fashion_mnist,clutter_mnist --seeds=3

Per dataset, two programs, each with the seeds vmapped (``num_seeds``) and
seed 0's class order for every seed (``scenario.class_order_seed=0``; vmapped
seeds cannot have different tasks):

1. ``configs/serena_<ds>.py:official`` (the official protocol);
2. ``configs/serena_<ds>.py`` (task-free) with ``serena.route_stats='all'``,
   so the one trained model keeps the class means of every space.  The rule
   does not touch training, so its final model is the final model of each
   rule's own run; each rule is then evaluated on it by the loop's own
   evaluation (``Runner._evaluate``).  The pixel rule is also the run's own
   vote: its accuracy from ``results.json`` is checked against the
   re-evaluation.

``clutter_mnist`` uses the task-free MNIST settings (MLP 2304-400-400-10,
lr 0.05) on the cluttered composites of :mod:`clj.data.clutter` (48x48,
10,000 / 2,000).  Also reported per rule: the routing accuracy, the share of
test examples sent to the cell that trained most on their true class.

Final accuracy = class-IL, the final model, mean of the per-task accuracies
(row mean), in %; mean ± std (ddof 1) over seeds.  Wall times are whole
programs (compile, training, the loop's evaluation after every task);
``eval s`` is one extra end-of-stream evaluation with that rule.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

RULES = (("official_task_indexed", "SERENA (official code; true task id at test)"),
         ("nearest_class_mean", "clj: pixel class means"),
         ("nearest_class_mean_union", "clj: union-network feature means"),
         ("nearest_class_mean_cell0", "clj: cell-0 feature means"))


def dataset_config(ds: str, variant: str, train_fraction: float = 1.0):
    """The config of ``ds`` (``mnist``, ``fashion_mnist``, ``digits``,
    ``clutter_mnist``, ``clutter_fashion_mnist``) for ``variant``, using
    ``train_fraction`` of each task's training examples."""
    import ml_collections

    from clj.config import load_config

    if ds.startswith("clutter_"):
        c = load_config("serena_mnist", variant)
        c.dataset = ds
        c.clutter = ml_collections.ConfigDict(dict(canvas=48, num_train=10000, num_test=2000, spurious_patch=0))
    else:
        c = load_config(f"serena_{ds}", variant)
    c.scenario.class_order_seed = 0
    c.scenario.train_fraction = float(train_fraction)
    c.progress = False
    c.resume = False
    c.plots = False
    return c


def _mean_std(v):
    import numpy as np

    v = np.asarray(v, float)
    return float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0


def _per_seed_results(wd: str, n: int) -> list[dict]:
    if n == 1:
        return [json.load(open(os.path.join(wd, "results.json")))]
    return [json.load(open(os.path.join(wd, f"seed_{s}", "results.json"))) for s in range(n)]


def routing_accuracy(runner, state):
    """Per seed, the share of test examples that the class-mean rule
    ``state.static.vote`` sends to the cell that trained most on their true
    class: float [S].  None when the test set is not on the device."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from clj.methods.serena.route import route_cells

    if getattr(runner, "Xt", None) is None:
        return None
    rule = state.static.vote
    idx, valid = runner.eval_idx, runner.eval_valid

    def seed_fn(st):
        def body(inp):
            ix, vd = inp
            x = runner.augment(runner.Xt[ix], None, train=False)
            y = runner.Yt[ix]
            r = route_cells(st, x, rule, vd)
            best = jnp.argmax(st.cell_class_count[:, y], 0)
            return jnp.sum((r == best) & vd), jnp.sum(vd)

        ok, n = jax.lax.map(body, (idx, valid))
        return jnp.sum(ok) / jnp.sum(n)

    from clj.methods.serena.vote import prepare_predict
    return np.asarray(jax.jit(jax.vmap(lambda s: seed_fn(prepare_predict(s))))(state))


def run_dataset(ds: str, seeds: int, out: str, train_fraction: float = 1.0) -> dict:
    """Both programs for one dataset; returns {rule: {...}} plus walls."""
    import numpy as np

    from clj.train.loop import Runner

    res = {}
    # 1. official protocol
    c = dataset_config(ds, "official", train_fraction)
    c.num_seeds = seeds
    wd = os.path.join(out, f"{ds}_official")
    t0 = time.perf_counter()
    Runner(c, wd).run()
    wall_off = time.perf_counter() - t0
    finals = [100 * float(np.mean(r["accuracy_matrix"]["class_il"][-1])) for r in _per_seed_results(wd, seeds)]
    res["official_task_indexed"] = dict(acc=finals, wall_s=wall_off, eval_s=None, route_acc=None)
    print(f"[{ds}] official: {finals} ({wall_off:.0f} s)", flush=True)

    # 2. task-free, every space's class means kept, one trained model
    c = dataset_config(ds, "task_free", train_fraction)
    c.num_seeds = seeds
    c.serena.route_stats = "all"
    wd = os.path.join(out, f"{ds}_task_free")
    t0 = time.perf_counter()
    runner = Runner(c, wd)
    runner.run()
    wall_tf = time.perf_counter() - t0
    own = [100 * float(np.mean(r["accuracy_matrix"]["class_il"][-1])) for r in _per_seed_results(wd, seeds)]
    state = runner.final_state
    sc = runner.scenario
    seen = sc.seen_classes(sc.num_tasks - 1) if runner.mask_unseen else np.ones(sc.num_classes, bool)
    cells = np.asarray(state.n_cells).tolist()
    for rule, _ in RULES[1:]:
        st = state.replace(static=dataclasses.replace(state.static, vote=rule))
        t1 = time.perf_counter()
        accs = runner.evaluate(st, seen)["class_il"]            # [S, T]
        ev = time.perf_counter() - t1
        finals = (100 * accs.mean(1)).tolist()
        ra = routing_accuracy(runner, st)
        res[rule] = dict(acc=finals, wall_s=wall_tf, eval_s=ev, route_acc=None if ra is None else (100 * ra).tolist())
        print(f"[{ds}] {rule}: {finals}, routing {res[rule]['route_acc']} (eval {ev:.1f} s)", flush=True)
    gap = max(abs(a - b) for a, b in zip(own, res["nearest_class_mean"]["acc"]))
    print(f"[{ds}] task-free run's own (pixel) vote {own}; re-evaluation differs by {gap:.4f} points; "
          f"cells per seed {cells} ({wall_tf:.0f} s)", flush=True)
    res["_meta"] = dict(own_pixel=own, gap=gap, n_cells=cells, wall_official=wall_off, wall_task_free=wall_tf,
                        train_fraction=train_fraction, steps_per_task=_per_seed_results(wd, seeds)[0]["steps"]["per_task"])
    return res


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", default="mnist,fashion_mnist,clutter_mnist")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--out", default="runs/serena_routing")
    ap.add_argument("--train_fraction", type=float, default=1.0,
                    help="fraction of each task's training examples (scenario.train_fraction)")
    ap.add_argument("--json", default="", help="write every seed's numbers here")
    ap.add_argument("--from_json", default="", help="comma-separated --json files: print their table, run nothing")
    args = ap.parse_args(argv)
    allres = {}
    if args.from_json:
        for p in args.from_json.split(","):
            d = json.load(open(p))
            args.seeds = d["seeds"]
            allres.update(d["results"])
        dss = list(allres)
    else:
        dss = args.datasets.split(",")
        for ds in dss:
            allres[ds] = run_dataset(ds, args.seeds, args.out, args.train_fraction)
            if args.json:
                with open(args.json, "w") as f:
                    json.dump({"seeds": args.seeds, "results": allres}, f, indent=1)
    print(f"\nFinal class-IL accuracy % (row mean), mean ± std over {args.seeds} seeds (seed 0's class order):\n")
    print("| rule | whose | " + " | ".join(dss) + " |")
    print("|---|---|" + "---|" * len(dss))
    for rule, whose in RULES:
        cells = []
        for ds in dss:
            r = allres[ds][rule]
            m, s = _mean_std(r["acc"])
            ra = "" if not r["route_acc"] else f" (routing {_mean_std(r['route_acc'])[0]:.1f})"
            cells.append(f"{m:.2f} ± {s:.2f}{ra}")
        print(f"| `{rule}` | {whose} | " + " | ".join(cells) + " |")
    print("\n| dataset | train fraction | cells (task-free, per seed) | official run s "
          "| task-free run s (all means kept) | extra eval s: pixel / union / cell0 |")
    print("|---|---|---|---|---|---|")
    for ds in dss:
        m = allres[ds]["_meta"]
        ev = " / ".join(f"{allres[ds][r]['eval_s']:.1f}" for r, _ in RULES[1:])
        print(f"| {ds} | {m.get('train_fraction', 1.0)} | {m['n_cells']} | {m['wall_official']:.0f} | "
              f"{m['wall_task_free']:.0f} | {ev} |")


if __name__ == "__main__":
    main()
