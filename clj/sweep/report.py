"""The table of a sweep, built from its point workdirs alone.

``DIR/sweep.csv``: one row per finished point: ``point`` (its folder), one
column per swept field, ``seeds`` (how many finished; their mean is the
row's numbers), ``diverged_seeds`` (how many diverged: non-finite loss or
parameters, no numbers), ``wall_time_s`` (mean over
seeds of the run's training time; the points of one vmapped program share
it), then for every metric ``<setting>.<metric>`` (mean over seeds, a
fraction in [0, 1]) and ``<setting>.<metric>.std`` (sample std, ddof=1; 0
for one seed), then, after all of these, ``<setting>.<metric>.ci95_lo`` and
``<setting>.<metric>.ci95_hi`` for every metric (the 95 % Student-t
confidence interval of the mean over seeds, :func:`clj.metrics.mean_ci`;
empty for one seed).  ``DIR/sweep.md``: the same as a Markdown table of the
headline metrics (:data:`MD_METRICS` of each setting), in % as ``mean ± std``.  ``DIR/sweep_<metric>.png``: the metric against one swept
field, one line per value of the others.
"""
from __future__ import annotations

import csv
import glob
import io
import math
import os
import sys
from typing import Sequence

from clj.config import ConfigError
from clj.metrics.results import read_json
from clj.sweep.grid import format_value

DEFAULT_SORT = ("class_il.final_average_accuracy", "domain_il.final_average_accuracy",
                "task_il.final_average_accuracy")


def _metrics_of(res: dict, summary: bool) -> dict[str, tuple]:
    """``{"setting.metric": (mean, std)}`` of a results.json or summary.json."""
    out = {}
    for setting, ms in (res.get("metrics") or {}).items():
        for name, v in (ms or {}).items():
            if summary:
                out[f"{setting}.{name}"] = (None, None) if v is None else (v.get("mean"), v.get("std"))
            else:
                out[f"{setting}.{name}"] = (v, None if v is None else 0.0)
    return out


def _intervals_of(res: dict, summary: bool) -> dict[str, tuple]:
    """``{"setting.metric": (lo, hi)}``: the 95 % confidence interval of the
    mean over seeds of a summary.json (``(None, None)`` for one seed, a
    results.json, or a summary written before the intervals existed)."""
    out = {}
    for setting, ms in (res.get("metrics") or {}).items():
        for name, v in (ms or {}).items():
            ci = v.get("ci95") if summary and isinstance(v, dict) else None
            out[f"{setting}.{name}"] = (None, None) if not ci else (ci[0], ci[1])
    return out


def collect(sweep_dir: str, skipped: list | None = None, log=None) -> tuple[list[str], list[dict]]:
    """The swept fields and one row per finished point found under
    ``sweep_dir`` (folders holding ``point.json`` and their own results:
    :func:`clj.sweep.core.point_state` against the fingerprint in
    ``point.json``), in grid order.

    A row: ``{"point": name, "overrides": {...}, "seeds": n, "wall_time_s":
    (mean, std), "metrics": {"setting.metric": (mean, std)}, "ci95":
    {"setting.metric": (lo, hi)}}`` (``(None, None)`` for one seed).  A folder
    whose results file is not its own is left out, said in one line through
    ``log`` (default: stderr) and appended to ``skipped`` as ``(name, reason)``.
    """
    from clj.sweep.core import point_state

    log = log or (lambda msg: print(msg, file=sys.stderr))
    rows, fields = [], []
    for pj in sorted(glob.glob(os.path.join(sweep_dir, "*", "point.json"))):
        d = os.path.dirname(pj)
        point = read_json(pj)
        for f in point.get("grid_fields", list(point["overrides"])):
            if f not in fields:
                fields.append(f)
        done, why = point_state(d, int(point.get("num_seeds", 1)), fingerprint=point.get("fingerprint") or None)
        if not done:
            if why:
                log(f"[clj.sweep] skipped {os.path.basename(d)}: {why}.")
                if skipped is not None:
                    skipped.append((os.path.basename(d), why))
            continue
        summ, res = os.path.join(d, "summary.json"), os.path.join(d, "results.json")
        if int(point.get("num_seeds", 1)) > 1 and os.path.isfile(summ):
            r = read_json(summ)
            metrics, ci95 = _metrics_of(r, True), _intervals_of(r, True)
            seeds = len(r.get("seeds") or [])
            diverged = len(r.get("diverged") or [])
            w = (r.get("wall_time_s") or {}).get("total") or {}
            wall = (w.get("mean"), w.get("std"))
        elif int(point.get("num_seeds", 1)) == 1 and os.path.isfile(res):
            r = read_json(res)
            metrics, ci95 = _metrics_of(r, False), _intervals_of(r, False)
            diverged = int(r.get("status") == "diverged")
            seeds = 1 - diverged
            wall = ((r.get("wall_time_s") or {}).get("total"), 0.0)
        else:
            continue  # not finished
        rows.append({"point": os.path.basename(d), "index": point.get("index", 0), "overrides": point["overrides"],
                     "seeds": seeds, "diverged": diverged, "wall_time_s": wall, "metrics": metrics,
                     "ci95": ci95})
    rows.sort(key=lambda r: (r["index"], r["point"]))
    return fields, rows


def metric_names(rows: Sequence[dict]) -> list[str]:
    names = []
    for r in rows:
        for k in r["metrics"]:
            if k not in names:
                names.append(k)
    return names


def _resolve_sort(sort: str, names: Sequence[str]) -> tuple[str | None, bool]:
    """``(metric, descending)`` of a ``--sort`` value ``METRIC[:asc|:desc]``."""
    desc = True
    if sort and ":" in sort:
        sort, order = sort.rsplit(":", 1)
        if order not in ("asc", "desc"):
            raise ConfigError(f"--sort order {order!r} is invalid; valid: asc, desc.")
        desc = order == "desc"
    if not sort:
        sort = next((m for m in DEFAULT_SORT if m in names), names[0] if names else None)
        return sort, desc
    if names and sort not in names:
        raise ConfigError(f"--sort={sort!r} is not a metric of these results; valid: {', '.join(names)}.")
    return sort, desc


def sort_rows(rows: list[dict], metric: str | None, descending: bool = True) -> list[dict]:
    """Rows by ``metric`` (missing values last), ties in grid order."""
    if metric is None:
        return list(rows)

    def key(r):
        v = r["metrics"].get(metric, (None, None))[0]
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return (1, 0.0)
        return (0, -v if descending else v)

    return sorted(rows, key=key)




def to_csv(fields: Sequence[str], rows: Sequence[dict]) -> str:
    """The CSV text of the table (see module doc)."""
    names = metric_names(rows)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["point", *fields, "seeds", "diverged_seeds", "wall_time_s", "wall_time_s.std",
                *[c for n in names for c in (n, f"{n}.std")],
                *[c for n in names for c in (f"{n}.ci95_lo", f"{n}.ci95_hi")]])
    for r in rows:
        vals = [r["point"], *[format_value(r["overrides"].get(f, "")) for f in fields], r["seeds"],
                r.get("diverged", 0),
                *["" if v is None else repr(float(v)) for v in r["wall_time_s"]]]
        for n in names:
            m, s = r["metrics"].get(n, (None, None))
            vals += ["" if m is None else repr(float(m)), "" if s is None else repr(float(s))]
        for n in names:
            vals += ["" if v is None else repr(float(v)) for v in r.get("ci95", {}).get(n, (None, None))]
        w.writerow(vals)
    return buf.getvalue()


MD_METRICS = ("final_average_accuracy", "average_incremental_accuracy", "forgetting")
"""Metrics of each setting shown in ``sweep.md`` (``sweep.csv`` has them all)."""


def to_markdown(fields: Sequence[str], rows: Sequence[dict], sort: str | None = None,
                metrics: Sequence[str] | None = None) -> str:
    """The Markdown table: metrics in % (mean ± std over seeds), wall time in s.
    A point whose seeds diverged says so in its seeds cell (``"2 (+1
    diverged)"``: the numbers are the 2 others'), and its metric cells read
    ``diverged`` when no seed finished.

    ``metrics``: the ``setting.metric`` columns (default: :data:`MD_METRICS`
    of every setting but top-5, and the sort metric).
    """
    names = metric_names(rows)
    if metrics is None:
        sort_metric = (sort or "").split(" ")[0]
        metrics = [n for n in names if n == sort_metric or (n.split(".", 1)[1] in MD_METRICS
                                                            and not n.split(".")[0].endswith("_top5"))]
    names = [n for n in names if n in metrics]
    head = [*fields, "seeds", *[f"{n} (%)" for n in names], "wall time (s)"]
    lines = []
    if sort:
        lines.append(f"Sorted by {sort}. Mean ± std over seeds.\n")
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in rows:
        bad = int(r.get("diverged", 0))  # seeds that diverged: not in the numbers
        cells = [format_value(r["overrides"].get(f, "")) for f in fields] + \
            [str(r["seeds"]) + (f" (+{bad} diverged)" if bad else "")]
        for n in names:
            m, s = r["metrics"].get(n, (None, None))
            cells.append(("diverged" if bad and not r["seeds"] else "n/a") if m is None
                         else f"{100 * m:.2f} ± {100 * (s or 0.0):.2f}")
        wm, ws = r["wall_time_s"]
        cells.append("n/a" if wm is None else f"{wm:.1f} ± {ws or 0.0:.1f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(fields: Sequence[str], rows: Sequence[dict], metric: str, x: str, path: str) -> str | None:
    """Plots ``metric`` (%, mean ± std) against the swept field ``x``, one
    line per combination of the other swept fields; returns the path, or
    None when ``x`` has no numeric values.

    Raises:
      ConfigError: ``x`` is not a swept field.
    """
    if x not in fields:
        raise ConfigError(f"--plot_x={x!r} is not a swept field; valid: {', '.join(fields)}.")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    others = [f for f in fields if f != x]
    lines: dict[str, list] = {}
    for r in rows:
        xv = r["overrides"].get(x)
        m, s = r["metrics"].get(metric, (None, None))
        if not isinstance(xv, (int, float)) or isinstance(xv, bool) or m is None:
            continue
        label = ", ".join(f"{f}={format_value(r['overrides'].get(f))}" for f in others) or metric
        lines.setdefault(label, []).append((xv, 100 * m, 100 * (s or 0.0)))
    if not lines:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    xs_all = []
    for label, pts in sorted(lines.items()):
        pts.sort()
        xs, ys, es = zip(*pts)
        xs_all += xs
        ax.errorbar(xs, ys, yerr=es, marker="o", capsize=3, label=label)
    if min(xs_all) > 0 and max(xs_all) / min(xs_all) >= 10:
        ax.set_xscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(f"{metric} (%)")
    ax.grid(alpha=0.3)
    if len(lines) > 1 or others:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(sweep_dir: str, sort: str = "", plot_x: str = "", make_plot: bool = True, log=None) -> dict:
    """Writes ``sweep.csv``, ``sweep.md`` and ``sweep_<metric>.png`` of a
    sweep folder from its point workdirs alone (a folder whose results file
    is not its own is left out, one line each through ``log``, default stderr).

    Args:
      sweep_dir: the sweep folder.
      sort: ``METRIC[:asc|:desc]`` (default: class-IL final average accuracy,
        descending).
      plot_x: the swept field on the plot's x axis (default: the first
        swept field with numeric values).
      make_plot: False skips the figure.

    Returns:
      ``{"rows": n, "csv": path, "md": path, "plot": path or None, "sort":
      metric, "skipped": [(folder, reason)]}``.

    Raises:
      ConfigError: a sort metric or plot field that the results do not have.
    """
    skipped = []
    fields, rows = collect(sweep_dir, skipped, log)
    metric, desc = _resolve_sort(sort, metric_names(rows))
    rows = sort_rows(rows, metric, desc)
    csv_path, md_path = os.path.join(sweep_dir, "sweep.csv"), os.path.join(sweep_dir, "sweep.md")
    for path, text in ((csv_path, to_csv(fields, rows)),
                       (md_path, to_markdown(fields, rows, f"{metric} ({'desc' if desc else 'asc'})"
                                             if metric else None))):
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    png = None
    if make_plot and metric and rows and fields:
        x = plot_x or next((f for f in fields if any(isinstance(r["overrides"].get(f), (int, float))
                                                     and not isinstance(r["overrides"].get(f), bool)
                                                     for r in rows)), "")
        if x:
            png = plot(fields, rows, metric, x, os.path.join(sweep_dir, f"sweep_{metric}.png"))
    return {"rows": len(rows), "csv": csv_path, "md": md_path, "plot": png, "sort": metric, "skipped": skipped}


def read_csv(path: str) -> list[dict]:
    """The rows of a ``sweep.csv`` as dicts of strings."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


__all__ = ["collect", "metric_names", "plot", "read_csv", "sort_rows", "to_csv", "to_markdown", "write_report",
           "DEFAULT_SORT"]
