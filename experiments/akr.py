"""AKR against its Base (iCaRL) and Mixup rows: the paper's table beside ours.

    python experiments/akr.py --setting=fmnist_b0inc2 --memory=200 --epochs=2 --workdir=runs/akr_fmnist
    python experiments/akr.py --setting=clutter --memory=200 --epochs=2 --workdir=runs/akr_clutter
    python experiments/akr.py --setting=digits --workdir=runs/akr_exp            # CPU, minutes per run
    python experiments/akr.py --setting=cifar100_b0inc10 --workdir=runs/akr_c    # GPU + TFDS CIFAR-100
    python experiments/akr.py --setting=digits --no-run                          # only tabulate

Rows: ``icarl`` (digits: the ``icarl`` method; CIFAR: the akr module with
``replay="none"``, the paper's Base), ``mixup`` and ``akr``, each from the
setting's config (``configs/akr_digits.py:<replay>`` or
``configs/akr_cifar100_<split>.py:<replay>``) with the same seeds.

``fmnist_b0inc2`` and ``clutter`` (issue 15: ``configs/akr_fmnist_b0inc2.py`` /
``configs/akr_clutter.py`` with the variant ``<replay>,<memory>,<epochs>``)
print a markdown table instead: per row final and average incremental
class-IL accuracy, class-IL forgetting and final task-IL accuracy (mean ± std
over the seeds), the blending diagnostics
(mean |a − 0.5| of the weights in use, the exemplar's weight in new/exemplar
pairs, AKR's last-step corr(a, r)), the wall time of training and of
evaluation, and the paired differences (Mixup − Base, AKR − Base, AKR −
Mixup) with 95 % t intervals over the common seeds, then each row's class-IL
accuracy matrix (mean over the seeds).  A run
whose workdir already has ``results.json`` or ``summary.json`` is reused.
Prints average incremental and last class-IL accuracy (mean ± std over the
seeds), wall time, and the paper's number (Lee et al., SMC 2023, project
page table; average incremental accuracy in %, presumably) where the
setting is one of the paper's.
"""
from __future__ import annotations

import argparse
import glob
import math
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

ROWS = (("icarl", "Base (iCaRL)"), ("mixup", "Mixup"), ("attentive", "AKR (Ours)"))
# CIFAR-100, ResNet-32 (project page, static/fig/quantitative_results.png; spec Sec. 8).
PAPER = {
    "cifar100_b0inc20": {"Base (iCaRL)": 67.24, "Mixup": 69.96, "AKR (Ours)": 70.38, "iCaRL [paper row]": 61.45},
    "cifar100_b0inc10": {"Base (iCaRL)": 63.53, "Mixup": 68.14, "AKR (Ours)": 69.11, "iCaRL [paper row]": 56.57},
    "cifar100_b0inc5": {"Base (iCaRL)": 59.14, "Mixup": 66.04, "AKR (Ours)": 67.40, "iCaRL [paper row]": 53.77},
    "cifar100_b50inc10": {"Base (iCaRL)": 61.88, "Mixup": 66.97, "AKR (Ours)": 67.73, "iCaRL [paper row]": 61.93},
    "cifar100_b50inc5": {"Base (iCaRL)": 57.84, "Mixup": 63.84, "AKR (Ours)": 65.15, "iCaRL [paper row]": 59.22},
    "cifar100_b50inc2": {"Base (iCaRL)": 53.57, "Mixup": 59.68, "AKR (Ours)": 60.38, "iCaRL [paper row]": 55.48},
}
LABEL = {"cifar100_b0inc20": "TFS N=5", "cifar100_b0inc10": "TFS N=10", "cifar100_b0inc5": "TFS N=20",
         "cifar100_b50inc10": "TFH N=5", "cifar100_b50inc5": "TFH N=10", "cifar100_b50inc2": "TFH N=25"}


# Fashion-MNIST B0 Inc2 (issue 15): Base = the akr module with replay="none" (same loss, no blending).
FMNIST_ROWS = (("none", "Base (no blending)"), ("mixup", "Mixup"), ("attentive", "AKR"))
FMNIST_PAIRS = (("mixup", "none"), ("attentive", "none"), ("attentive", "mixup"))


def load_config(setting: str, replay: str, variant: str | None = None):
    """The config of ``setting`` ("digits", "fmnist_b0inc2" or "cifar100_<split>") for
    ``replay`` (``variant``, when given, is passed instead: e.g. ``"mixup,200,4"``)."""
    name = "akr_digits" if setting == "digits" else f"akr_{setting}"
    path = os.path.join(ROOT, "configs", f"{name}.py")
    if not os.path.exists(path):
        raise SystemExit(f"setting={setting!r} has no config {path}; valid: digits, "
                         + ", ".join(sorted(PAPER)))
    from clj.config import load_config as load

    return load(path, variant or replay)


def _metric(summary_or_result: dict, key: str) -> tuple[float, float]:
    v = summary_or_result["metrics"]["class_il"][key]
    if isinstance(v, dict):
        return 100 * v["mean"], 100 * (v["std"] or 0.0)
    return 100 * v, 0.0


def read_row(wd: str):
    """(avg inc mean, std, last mean, std, wall s, seeds) of a finished run, or None."""
    for fname in ("summary.json", "results.json"):
        p = os.path.join(wd, fname)
        if os.path.exists(p):
            r = json.load(open(p))
            avg, avg_s = _metric(r, "average_incremental_accuracy")
            last, last_s = _metric(r, "final_average_accuracy")
            wall = r["wall_time_s"]["total"]
            wall = wall["mean"] if isinstance(wall, dict) else wall  # summary.json: one program for all seeds
            return avg, avg_s, last, last_s, wall, r.get("seeds", [r.get("seed")])
    return None


def seed_rows(wd: str) -> dict:
    """{seed: dict(avg, last (class-IL, %), abs_a, ex_w, corr, wall, eval)} of the per-seed results of
    a run (wall: training and end-of-phase seconds of the program; eval: its evaluation seconds)."""
    out = {}
    files = sorted(glob.glob(os.path.join(wd, "seed_*", "results.json")))
    if not files and os.path.exists(os.path.join(wd, "results.json")):
        files = [os.path.join(wd, "results.json")]
    for f in files:
        r = json.load(open(f))
        m = r["metrics"]["class_il"]
        e = r.get("extra", {})
        til = r["metrics"].get("task_il", {})
        R = (r.get("accuracy_matrix") or {}).get("class_il")
        out[int(r["seed"])] = dict(avg=100 * m["average_incremental_accuracy"], last=100 * m["final_average_accuracy"],
                                   forg=_pct(m.get("forgetting")), til_last=_pct(til.get("final_average_accuracy")),
                                   R=None if R is None else [[math.nan if v is None else 100 * v for v in row]
                                                             for row in R],
                                   abs_a=e.get("abs_a_mean"), ex_w=e.get("exemplar_weight_mean"),
                                   corr=e.get("last_step_corr_a_r"), wall=r["wall_time_s"]["total"],
                                   eval=float(sum(e.get("eval_time_s") or [])))
    return out


def _pct(v):
    """100 * v, or None where v is None or NaN."""
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else 100 * v


def matrix_lines(runs: dict) -> list[str]:
    """Markdown: per row, the class-IL accuracy matrix (%, mean over the row's seeds; row t = after
    phase t, its tasks 0..t separated by " / "), one column per row of ``FMNIST_ROWS``."""
    import numpy as np

    mats = {}
    for replay, _ in FMNIST_ROWS:
        Rs = [x["R"] for x in runs.get(replay, {}).values() if x.get("R") is not None]
        if Rs:
            mats[replay] = np.mean(np.asarray(Rs, np.float64), axis=0)  # only the lower triangle is printed
    if not mats:
        return []
    labels = [label for replay, label in FMNIST_ROWS if replay in mats]
    T = max(m.shape[0] for m in mats.values())
    out = ["", "Class-IL accuracy matrix (%, mean over the seeds; row = after phase t, tasks 0..t):", "",
           "| after phase | " + " | ".join(f"{lb}: tasks 0..t" for lb in labels) + " |",
           "|---|" + "---|" * len(labels)]
    for t in range(T):
        cells = [" / ".join(f"{v:.1f}" for v in mats[r][t, : t + 1]) if t < mats[r].shape[0] else ""
                 for r, _ in FMNIST_ROWS if r in mats]
        out.append(f"| {t} | " + " | ".join(cells) + " |")
    return out


def checkpoint_diagnostics(state_dir: str) -> dict | None:
    """AKR's blending diagnostics from a checkpoint's State (orbax, restored without a target):
    {"abs_a": float [seeds] or None, "ex_w": ..., "corr": float [seeds]} over the phases >= 1
    counted so far (the same sums ``akr.result_extras`` reads), or None when the State holds none."""
    import numpy as np
    import orbax.checkpoint as ocp

    tree = ocp.PyTreeCheckpointer().restore(os.path.abspath(state_dir))
    if "weight_acc" not in tree:
        return None
    acc = np.asarray(tree["weight_acc"], np.float64)[:, 1:].sum(1)  # [seeds, 4]: |a-0.5| sum, n, ex sum, n
    with np.errstate(invalid="ignore", divide="ignore"):
        abs_a = np.where(acc[:, 1] > 0, acc[:, 0] / acc[:, 1], np.nan)
        ex_w = np.where(acc[:, 3] > 0, acc[:, 2] / acc[:, 3], np.nan)
    corr = np.asarray(tree["attn_stats"], np.float64)[:, 4]
    nn = lambda v: [None if np.isnan(x) else float(x) for x in v]  # noqa: E731
    return {"abs_a": nn(abs_a), "ex_w": nn(ex_w), "corr": nn(corr), "counted": acc[:, 1].tolist()}


def partial_seed_rows(wd: str, seeds) -> tuple[dict, int]:
    """({seed: dict(avg, last, abs_a, ex_w, corr, wall, eval)}, phases) of an unfinished run: from
    the newest checkpoint's metadata, class-IL accuracy (%) after the last completed phase and the
    mean over completed phases (tasks weighted equally; Fashion-MNIST's test tasks have equal
    sizes); from its State (mid-phase checkpoints included), the blending diagnostics so far."""
    import numpy as np

    best, best_key = None, None
    for meta in glob.glob(os.path.join(wd, "checkpoints", "*", "meta", "metadata")):
        d = json.load(open(meta))
        key = (d["completed_tasks"], int(meta.split(os.sep)[-3]))
        if best is None or key > best_key:
            best, best_key = d, key
    if best is None or not best["completed_tasks"]:
        return {}, 0
    acc = np.asarray(best["acc"]["class_il"], np.float64)  # [phases, seeds, tasks]
    per_phase = np.stack([acc[t, :, : t + 1].mean(-1) for t in range(acc.shape[0])])  # [phases, seeds]
    diag = None
    try:
        diag = checkpoint_diagnostics(os.path.join(wd, "checkpoints", str(best_key[1]), "state"))
    except Exception as e:  # a checkpoint being written, or an unreadable one: accuracies only
        print(f"(diagnostics of {wd} not read: {type(e).__name__})", file=sys.stderr)
    return ({int(s): dict(avg=100 * per_phase[:, i].mean(), last=100 * per_phase[-1, i],
                          abs_a=diag["abs_a"][i] if diag else None, ex_w=diag["ex_w"][i] if diag else None,
                          corr=diag["corr"][i] if diag else None,
                          wall=float(sum(best["wall_time"])), eval=float(sum(best["eval_time"])))
             for i, s in enumerate(seeds)}, int(best["completed_tasks"]))


def t_interval(diffs) -> tuple[float, float, float]:
    """(mean, lower, upper) of the 95 % Student-t interval of the mean of paired differences
    (:func:`clj.metrics.mean_ci`)."""
    from clj.metrics.intervals import mean_ci

    return mean_ci(diffs, 0.95)


PAIRED_SETTINGS = {"fmnist_b0inc2": "Fashion-MNIST B0 Inc2", "clutter": "cluttered MNIST (48x48) B0 Inc2"}
BETA11_ABS = 0.25  # E|a - 0.5| for a ~ Beta(1, 1) = U(0, 1)


def fmnist_table(workdir: str, memory: int, epochs: int, run_missing: bool, name: str = "fmnist_b0inc2") -> str:
    """Runs (if asked) and tabulates the rows of ``name`` ("fmnist_b0inc2" or
    "clutter": ``configs/akr_<name>.py``) in ``workdir/<name>_m<memory>_e<epochs>_<replay>``;
    returns markdown."""
    import numpy as np

    setting = f"{name}_m{memory}_e{epochs}"
    runs, phases = {}, {}
    for replay, _ in FMNIST_ROWS:
        wd = os.path.join(workdir, f"{setting}_{replay}")
        if not seed_rows(wd) and run_missing:
            from clj.train import run

            c = load_config(name, replay, f"{replay},{memory},{epochs}")
            c.plots = False
            run(c, wd)
        runs[replay] = seed_rows(wd)
        phases[replay] = 5
        if not runs[replay] and os.path.exists(os.path.join(wd, "config.json")):
            cfg = json.load(open(os.path.join(wd, "config.json")))
            seeds = [int(cfg.get("seed", 0)) + i for i in range(int(cfg.get("num_seeds", 1)))]
            runs[replay], phases[replay] = partial_seed_rows(wd, seeds)
    done = min(phases.values()) if phases else 0
    lines = [f"{PAIRED_SETTINGS[name]}, memory {memory}, {epochs} epochs per phase "
             f"(`configs/akr_{name}.py:<row>,{memory},{epochs}`); class-IL accuracy in %, "
             "mean ± std over seeds" + ("" if done == 5 else
                                        f"; UNFINISHED runs: phases completed per row {phases}, accuracy after "
                                        "the last completed phase and the mean over completed phases"),
             "",
             f"| row | seeds | avg incremental | last | forgetting | task-IL last "
             f"| mean \\|a − 0.5\\| (phases ≥ 1; Beta(1, 1): {BETA11_ABS}) "
             "| exemplar's weight in new/exemplar pairs | corr(a, r), last step | wall: training + end of phase (s) "
             "| wall: evaluation (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]

    def ms(v):
        v = [x for x in v if x is not None]
        if not v:
            return "—"
        return f"{np.mean(v):.2f} ± {np.std(v, ddof=1) if len(v) > 1 else 0.0:.2f}"

    def m3(v):
        v = [x for x in v if x is not None]
        if not v:
            return "—"
        return f"{np.mean(v):.3f} ± {np.std(v, ddof=1) if len(v) > 1 else 0.0:.3f}"

    for replay, label in FMNIST_ROWS:
        r = runs[replay]
        if not r:
            lines.append(f"| {label} | — | not run | | | | | | | | |")
            continue
        rs = [r[k] for k in sorted(r)]
        wall = max(x["wall"] for x in rs)
        ev = max((x.get("eval") or 0.0) for x in rs)
        corr = m3([x.get("corr") for x in rs]) if replay == "attentive" else "—"
        lines.append(f"| {label} | {sorted(r)} | {ms([x['avg'] for x in rs])} | {ms([x['last'] for x in rs])} | "
                     f"{ms([x.get('forg') for x in rs])} | {ms([x.get('til_last') for x in rs])} | "
                     f"{m3([x['abs_a'] for x in rs])} | {m3([x['ex_w'] for x in rs])} | {corr} | {wall:.0f} "
                     f"| {ev:.0f} |")
    lines += ["", "Paired differences (same seeds; 95 % t interval of the mean difference, n − 1 dof):", "",
              "| difference | n | avg incremental | last |", "|---|---|---|---|"]
    names = dict(FMNIST_ROWS)
    for a, b in FMNIST_PAIRS:
        common_seeds = sorted(set(runs[a]) & set(runs[b]))
        if not common_seeds:
            lines.append(f"| {names[a]} − {names[b]} | 0 | — | — |")
            continue
        cells = []
        for key in ("avg", "last"):
            m, lo, hi = t_interval([runs[a][s][key] - runs[b][s][key] for s in common_seeds])
            cells.append(f"{m:+.2f} [{lo:+.2f}, {hi:+.2f}]")
        lines.append(f"| {names[a]} − {names[b]} | {len(common_seeds)} | {cells[0]} | {cells[1]} |")
    lines += matrix_lines(runs)
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--setting", default="digits")
    ap.add_argument("--memory", type=int, default=200, help="fmnist_b0inc2, clutter: exemplars in total (200 or 2000)")
    ap.add_argument("--epochs", type=int, default=30, help="fmnist_b0inc2, clutter: epochs per phase")
    ap.add_argument("--workdir", default="runs/akr_exp")
    ap.add_argument("--rows", default="icarl,mixup,attentive")
    ap.add_argument("--no-run", action="store_true", help="only tabulate existing results")
    args = ap.parse_args(argv)
    if args.setting in PAIRED_SETTINGS:
        print(fmnist_table(args.workdir, args.memory, args.epochs, not args.no_run, args.setting))
        return
    out = []
    for replay, label in ROWS:
        if replay not in args.rows.split(","):
            continue
        wd = os.path.join(args.workdir, f"{args.setting}_{replay}")
        if read_row(wd) is None and not args.no_run:
            from clj.train import run

            c = load_config(args.setting, replay)
            c.plots = False
            run(c, wd)
        out.append((label, read_row(wd)))
    paper = PAPER.get(args.setting, {})
    print(f"setting {args.setting} {LABEL.get(args.setting, '')} (class-IL; ours: mean ± std over seeds)")
    print(f"{'row':<12} {'avg inc (ours)':>16} {'last (ours)':>16} {'paper avg inc':>14} {'wall s':>8}  seeds")
    for label, r in out:
        p = paper.get(label)
        ps = f"{p:.2f}" if p is not None else "-"
        if r is None:
            print(f"{label:<12} {'not run':>16} {'':>16} {ps:>14}")
            continue
        avg, avg_s, last, last_s, wall, seeds = r
        print(f"{label:<12} {avg:9.2f} ± {avg_s:4.2f} {last:9.2f} ± {last_s:4.2f} {ps:>14} {wall:8.0f}  {seeds}")
    if "iCaRL [paper row]" in paper:
        print(f"(paper's quoted iCaRL row: {paper['iCaRL [paper row]']:.2f}; Base is the like-for-like row)")


if __name__ == "__main__":
    main()
