"""Plots of accuracy matrices and accuracy-over-time curves.

Figures are drawn with matplotlib's object API on an Agg canvas
(``matplotlib.figure.Figure`` + ``FigureCanvasAgg``): pyplot is never
imported, no window is ever opened, and the process-wide backend is left
untouched.  Accuracies are fractions in ``[0, 1]`` and are shown in percent.
Matrices may be partial (``[k, T]``, ``k <= T``: a run in progress) and may
contain ``nan`` / ``None`` for entries that were not measured.
"""

from __future__ import annotations

import os
import re
from typing import Any, List, Mapping, Optional

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["plot_accuracy_matrix", "plot_accuracy_curves", "plot_results"]


def _as_matrix(R) -> np.ndarray:
    arr = np.array(
        [[np.nan if v is None else v for v in row] for row in R]
        if isinstance(R, (list, tuple))
        else R,
        dtype=np.float64,
    )
    if arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, 0)
    if arr.ndim != 2 or arr.shape[0] > arr.shape[1]:
        raise ValueError(
            f"accuracy matrix must be 2-D [k, T] with k <= T; got shape {arr.shape}"
        )
    finite = arr[np.isfinite(arr)]
    if np.any(np.isinf(arr)) or (finite.size and (finite.min() < 0 or finite.max() > 1)):
        raise ValueError(
            "accuracy matrix must hold fractions in [0, 1] (not percent); got range "
            f"[{float(finite.min()) if finite.size else 'nan'}, "
            f"{float(finite.max()) if finite.size else 'nan'}] (shape {arr.shape})"
        )
    return arr


def _save(fig: Figure, path) -> str:
    path = os.fspath(path)
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(path, dpi=120)
    return path


def plot_accuracy_matrix(R, path, title: Optional[str] = None) -> str:
    """Heat map of the accuracy matrix ``R`` (``R[i, j]``: accuracy on task j
    after training task i), with every measured cell annotated in percent.

    Rows (y axis) are "after training task i", columns (x axis) are
    "evaluated on task j"; cells above the diagonal (tasks not trained yet)
    are separated by a staircase line.  Writes a PNG to ``path`` and returns
    the path.
    """
    R = _as_matrix(R)
    k, T = R.shape
    side = max(3.5, 0.55 * T + 2.0)
    fig = Figure(figsize=(side + 1.0, max(2.5, 0.55 * max(k, 1) + 2.0)))
    ax = fig.add_subplot(1, 1, 1)
    data = np.ma.masked_invalid(R * 100.0)
    im = ax.imshow(data, vmin=0.0, vmax=100.0, cmap="viridis", aspect="auto",
                   interpolation="nearest")
    cbar = fig.colorbar(im, ax=ax)
    cbar.set_label("accuracy (%)")

    if T <= 30 and k > 0:
        fontsize = 9 if T <= 10 else (7 if T <= 20 else 5)
        for i in range(k):
            for j in range(T):
                v = R[i, j]
                if not np.isfinite(v):
                    continue
                color = "black" if v >= 0.6 else "white"
                ax.text(j, i, f"{100.0 * v:.1f}", ha="center", va="center",
                        fontsize=fontsize, color=color,
                        fontstyle="italic" if j > i else "normal")

    if k > 0:
        # staircase between trained (j <= i) and future (j > i) tasks
        xs, ys = [], []
        for i in range(k):
            xs += [i + 0.5, i + 0.5]
            ys += [i - 0.5, i + 0.5]
        ax.plot(xs, ys, color="white", linewidth=1.5)

    ax.set_xticks(range(T))
    ax.set_yticks(range(k))
    ax.set_xlabel("evaluated on task j")
    ax.set_ylabel("after training task i")
    ax.set_xlim(-0.5, T - 0.5)
    ax.set_ylim(max(k, 1) - 0.5, -0.5)
    ax.set_title(title if title is not None else "accuracy matrix (%)")
    fig.tight_layout()
    return _save(fig, path)


def plot_accuracy_curves(R, path, title: Optional[str] = None) -> str:
    """Accuracy on each task over time, plus the average over seen tasks.

    One thin line per task ``j``: ``x = i`` (task just trained), ``y = R[i, j]``
    for ``i >= j``.  The thick black line is the average accuracy over the
    tasks seen so far, ``mean_{j<=i} R[i, j]`` (see
    :func:`clj.metrics.accuracy.accuracy_curve`).  Writes a PNG to ``path``
    and returns the path.
    """
    R = _as_matrix(R)
    k, T = R.shape
    fig = Figure(figsize=(max(5.0, 0.4 * T + 4.0), 4.0))
    ax = fig.add_subplot(1, 1, 1)
    colors = matplotlib.colormaps["tab20" if T > 10 else "tab10"]
    for j in range(min(k, T)):
        xs = np.arange(j, k)
        ys = R[j:k, j] * 100.0
        ax.plot(xs, ys, marker="o", markersize=3, linewidth=1.0,
                color=colors(j % colors.N), label=f"task {j}")

    if k > 0:
        avg = []
        for i in range(k):
            seen = R[i, : i + 1]
            seen = seen[np.isfinite(seen)]
            avg.append(np.mean(seen) * 100.0 if seen.size else np.nan)
        ax.plot(np.arange(k), avg, color="black", linewidth=3.0, marker="o",
                markersize=4, label="average (seen tasks)")

    ax.set_xlim(-0.3, max(T - 1, 1) + 0.3)
    ax.set_ylim(0.0, 102.0)
    ax.set_xticks(range(T))
    ax.set_xlabel("after training task i")
    ax.set_ylabel("accuracy (%)")
    ax.grid(True, alpha=0.3)
    ax.set_title(title if title is not None else "accuracy over time")
    if k > 0:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7,
                  ncol=1 if T <= 20 else 2, frameon=False)
    fig.tight_layout()
    return _save(fig, path)


def _safe_name(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(s)) or "setting"


def plot_results(results: Mapping[str, Any], outdir) -> List[str]:
    """Write ``accuracy_matrix_<setting>.png`` and ``accuracy_curves_<setting>.png``
    into ``outdir`` for each setting in ``results["accuracy_matrix"]`` (a
    ``results.json`` dict, see :func:`clj.metrics.results.build_results`).

    Returns the list of written paths (matrix, curves, per setting, in order).
    """
    outdir = os.fspath(outdir)
    os.makedirs(outdir, exist_ok=True)
    label = " ".join(
        str(x) for x in (
            results.get("method"),
            f"/ {results['dataset']}" if results.get("dataset") is not None else None,
            f"(seed {results['seed']})" if results.get("seed") is not None else None,
        ) if x is not None
    )
    paths: List[str] = []
    for setting, R in (results.get("accuracy_matrix") or {}).items():
        name = _safe_name(setting)
        prefix = f"{label} - {setting}" if label else str(setting)
        paths.append(plot_accuracy_matrix(
            R, os.path.join(outdir, f"accuracy_matrix_{name}.png"),
            title=f"{prefix}: accuracy matrix (%)"))
        paths.append(plot_accuracy_curves(
            R, os.path.join(outdir, f"accuracy_curves_{name}.png"),
            title=f"{prefix}: accuracy over time"))
    return paths
