"""The stable ``results.json`` format, atomic JSON writing, seed aggregation
and a JSON-lines metrics logger.

``results.json`` layout (produced by :func:`build_results`)::

    {
      "method": "derpp", "dataset": "digits", "seed": 0,
      "scenario": {"kind": "class_il", "num_tasks": 5, "classes_per_task": [2, 2, 2, 2, 2]},
      "accuracy_matrix": {"class_il": [[...], ...], "task_il": [[...], ...]},
      "random_init_accuracy": {"class_il": [...], "task_il": [...]},   # or null
      "metrics": {"class_il": {"final_average_accuracy": ..., "average_incremental_accuracy": ...,
                               "forgetting": ..., "bwt": ..., "fwt": ...},
                  "task_il": {...}},
      "memory_bytes": {"buffer": 0, "masks": 0, "model": 0, "total": 0},
      "wall_time_s": {"per_task": [...], "total": 0.0},
      "steps": {"per_task": [...]},
      "extra": {...}
    }

All accuracies are fractions in ``[0, 1]``.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Any, Iterable, Mapping, Optional, Sequence

import numpy as np

from clj.metrics.accuracy import METRIC_NAMES, summarize
from clj.metrics.intervals import mean_ci

__all__ = [
    "to_jsonable",
    "write_json_atomic",
    "read_json",
    "build_results",
    "summarize_seeds",
    "MetricsLogger",
    "read_jsonl",
]


# ---------------------------------------------------------------------------
# JSON helpers
# ---------------------------------------------------------------------------


def to_jsonable(obj: Any) -> Any:
    """Recursively convert ``obj`` to plain JSON-serialisable python values.

    numpy / jax arrays become (nested) lists, numpy scalars become python
    scalars, tuples and sets become lists, mapping keys become strings, and
    non-finite floats (nan, +-inf) become ``None`` so that the output is strict
    JSON.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, (int, np.integer)) and not isinstance(obj, np.bool_):
        return int(obj)
    if isinstance(obj, np.bool_):
        return bool(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, np.ndarray) or hasattr(obj, "__array__"):
        arr = np.asarray(obj)
        if arr.ndim == 0:
            return to_jsonable(arr.item())
        return [to_jsonable(v) for v in arr.tolist()]
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item())
    raise TypeError(f"object of type {type(obj).__name__} is not JSON serialisable: {obj!r}")


def write_json_atomic(path, obj, *, indent: Optional[int] = 2) -> str:
    """Write ``obj`` as JSON to ``path`` atomically.

    The data is written to a temporary file in the same directory, flushed
    and fsync'ed, then moved over ``path`` with :func:`os.replace`, so readers
    see either the old or the new file, never a partial one.  Parent
    directories are created.  numpy values are converted with
    :func:`to_jsonable`.  Returns ``path`` as a string.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    text = json.dumps(to_jsonable(obj), indent=indent, allow_nan=False) + "\n"
    fd, tmp = tempfile.mkstemp(
        dir=directory, prefix="." + os.path.basename(path) + ".", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates the file 0600; use the existing file's mode, or 0644.
        try:
            mode = os.stat(path).st_mode & 0o777
        except FileNotFoundError:
            mode = 0o644
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def read_json(path) -> Any:
    """Load a JSON file."""
    with open(path, "r", encoding="utf-8") as f:
        return json.load(f)


# ---------------------------------------------------------------------------
# results.json
# ---------------------------------------------------------------------------


def _as_partial_matrix(M, name: str) -> np.ndarray:
    """Validate an accuracy matrix that may have only its first k rows: [k, T]."""
    try:
        arr = np.asarray(M, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"accuracy matrix {name!r} is not a numeric array: {e}") from e
    if arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, 0)
    if arr.ndim != 2 or arr.shape[0] > arr.shape[1]:
        raise ValueError(
            f"accuracy matrix {name!r} must be 2-D [k, T] with k <= T rows done; "
            f"got shape {arr.shape}"
        )
    bad = (arr < 0.0) | (arr > 1.0) | np.isinf(arr)
    if np.any(bad):
        idx = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"accuracy matrix {name!r} must hold fractions in [0, 1] (not percent); "
            f"got {float(arr[idx])!r} at index {idx} (shape {arr.shape})"
        )
    return arr


def _task_vector(v, T: int, what: str):
    """``v`` as float64 [T] (None stays None).

    Raises:
      ValueError: another shape, naming ``what``.
    """
    if v is None:
        return None
    v = np.asarray(v, dtype=np.float64)
    if v.shape != (T,):
        raise ValueError(f"{what} must have shape ({T},); got {v.shape}")
    return v


def _per_setting(value, setting: str):
    """``value`` may be one vector shared by all settings or a dict per setting."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return value.get(setting)
    return value


def build_results(
    *,
    method: str,
    dataset: str,
    seed: int,
    scenario: Mapping[str, Any],
    accuracy_matrices: Mapping[str, Any],
    random_init_accuracy: Optional[Mapping[str, Any]] = None,
    memory_bytes: Optional[Mapping[str, Any]] = None,
    wall_time_per_task: Sequence[float] = (),
    steps_per_task: Sequence[int] = (),
    extra: Optional[Mapping[str, Any]] = None,
    task_sizes=None,
) -> dict:
    """Assemble the stable ``results.json`` dict (see module docstring).

    Args:
      method, dataset, seed: run identification.
      scenario: e.g. ``{"kind": "class_il", "num_tasks": 5,
        "classes_per_task": [2, 2, 2, 2, 2]}``; stored as given.  If it has
        ``"num_tasks"``, every accuracy matrix must have that many columns.
      accuracy_matrices: ``{setting: R}`` (e.g. ``"class_il"``, ``"task_il"``)
        with ``R`` of shape ``[k, T]``, ``k <= T``.  ``k < T`` describes a run
        in progress (only rows ``0..k-1`` filled): the matrix is stored as
        given and the metrics are computed on the square ``[k, k]`` prefix,
        i.e. as if the run had ``k`` tasks (with ``k == 0`` all metrics are
        ``None``).  Entries outside the ``[k, k]`` prefix may be ``nan`` (not
        measured); they are stored as ``null``.
      random_init_accuracy: ``{setting: b}`` with ``b`` of shape ``[T]`` (the
        randomly initialised model's accuracy on each task) or ``None``; used
        for FWT (``b[:k]`` for a partial run).  FWT is ``None`` for settings
        without it.
      memory_bytes: e.g. ``{"buffer": .., "masks": .., "model": ..}``;
        ``"total"`` is filled in as the sum of the other entries unless given.
      wall_time_per_task: seconds spent on each task; ``total`` is the sum.
      steps_per_task: optimisation steps on each task.
      extra: free-form, method-specific JSON-able fields (stored as ``{}`` if
        ``None``).
      task_sizes: test examples per task, shape ``[T]`` (or ``{setting: [T]}``);
        if given, the accuracy averages are weighted by it (see
        :func:`clj.metrics.accuracy.summarize`).

    Returns:
      A dict of plain python values (JSON-serialisable).
    """
    if not accuracy_matrices:
        raise ValueError("accuracy_matrices must contain at least one setting")
    num_tasks = scenario.get("num_tasks") if isinstance(scenario, Mapping) else None

    acc_out: dict = {}
    rand_out: dict = {}
    metrics_out: dict = {}
    for setting, M in accuracy_matrices.items():
        setting = str(setting)
        R = _as_partial_matrix(M, setting)
        k, T = R.shape
        if num_tasks is not None and T != int(num_tasks) and R.size:
            raise ValueError(
                f"accuracy matrix {setting!r} has {T} columns but scenario['num_tasks'] "
                f"= {num_tasks}"
            )
        b = _task_vector(_per_setting(random_init_accuracy, setting), T, f"random_init_accuracy[{setting!r}]")
        if b is not None:
            rand_out[setting] = b
        sizes = _task_vector(_per_setting(task_sizes, setting), T, f"task_sizes for {setting!r}")
        if k == 0:
            metrics_out[setting] = {name: None for name in METRIC_NAMES}
        else:
            metrics_out[setting] = summarize(
                R[:, :k],
                random_init_acc=None if b is None else b[:k],
                task_sizes=None if sizes is None else sizes[:k],
            )
        acc_out[setting] = R

    mem = {str(key): int(v) for key, v in (memory_bytes or {}).items()}
    if "total" not in mem:
        mem["total"] = int(sum(mem.values()))

    wall = [float(t) for t in wall_time_per_task]
    steps = [int(s) for s in steps_per_task]

    results = {
        "method": str(method),
        "dataset": str(dataset),
        "seed": int(seed),
        "scenario": dict(scenario),
        "accuracy_matrix": acc_out,
        "random_init_accuracy": rand_out if rand_out else None,
        "metrics": metrics_out,
        "memory_bytes": mem,
        "wall_time_s": {"per_task": wall, "total": float(sum(wall))},
        "steps": {"per_task": steps},
        "extra": dict(extra) if extra is not None else {},
    }
    return to_jsonable(results)


# ---------------------------------------------------------------------------
# aggregation over seeds
# ---------------------------------------------------------------------------


def _mean_std(values: Sequence[Optional[float]]):
    """``{"mean", "std", "ci95", "n"}`` over the non-None values, or None if
    there are none.

    ``std`` is the sample standard deviation (``ddof=1``) when ``n > 1`` and
    ``0.0`` when ``n == 1``; ``ci95`` is ``[lo, hi]``, the 95 % Student-t
    confidence interval of the mean (:func:`clj.metrics.intervals.mean_ci`),
    or None when ``n == 1``.
    """
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    arr = np.asarray(vals, dtype=np.float64)
    std = float(np.std(arr, ddof=1)) if arr.size > 1 else 0.0
    ci = None
    if arr.size > 1:
        _, lo, hi = mean_ci(arr, 0.95)
        ci = [lo, hi]
    return {"mean": float(np.mean(arr)), "std": std, "ci95": ci, "n": int(arr.size)}


def _common_value(results_list, key):
    vals = {json.dumps(r.get(key), sort_keys=True) for r in results_list}
    if len(vals) > 1:
        raise ValueError(
            f"summarize_seeds: results disagree on {key!r}: "
            f"{sorted({str(r.get(key)) for r in results_list})}"
        )
    return results_list[0].get(key)


def summarize_seeds(results_list: Iterable[Mapping[str, Any]]) -> dict:
    """Aggregate several ``results.json`` dicts of the same method/dataset
    (different seeds).

    Returns::

        {"method": .., "dataset": ..,
         "seeds": [0, 1, 2],
         "metrics": {"class_il": {"final_average_accuracy": {"mean": .., "std": .., "ci95": [lo, hi],
                                                             "n": 3},
                                  ..., "fwt": None},
                     "task_il": {...}},
         "accuracy_matrix": {"class_il": {"mean": [[..]], "std": [[..]]}, ...},
         "wall_time_s": {"total": {"mean": .., "std": .., "ci95": [lo, hi], "n": 3}}}

    ``std`` is the sample standard deviation (``ddof=1``) across seeds, or
    ``0.0`` for a single seed; ``ci95`` is the 95 % Student-t confidence
    interval of the mean over seeds, ``[mean - h, mean + h]`` with ``h =
    t_{0.975, n-1} * std / sqrt(n)`` (:func:`clj.metrics.mean_ci`), or
    ``None`` for a single seed.  A metric that is ``None`` in every run (e.g.
    FWT without random-init accuracies) stays ``None``; otherwise runs where
    it is ``None`` are skipped and ``n`` counts the runs used.
    ``accuracy_matrix`` holds the element-wise mean/std of each setting's
    matrix, only for settings where all runs have matrices of the same shape.
    Raises ``ValueError`` if the runs' ``method`` or ``dataset`` differ, or if
    ``results_list`` is empty.
    """
    results_list = list(results_list)
    if not results_list:
        raise ValueError("summarize_seeds needs at least one results dict")

    settings: list = []
    for r in results_list:
        for s in (r.get("metrics") or {}):
            if s not in settings:
                settings.append(s)

    metrics: dict = {}
    for s in settings:
        metrics[s] = {}
        names = list(METRIC_NAMES)
        for r in results_list:
            for name in (r.get("metrics") or {}).get(s, {}) or {}:
                if name not in names:
                    names.append(name)
        for name in names:
            vals = [((r.get("metrics") or {}).get(s) or {}).get(name) for r in results_list]
            metrics[s][name] = _mean_std(vals)

    acc: dict = {}
    for s in settings:
        mats = [(r.get("accuracy_matrix") or {}).get(s) for r in results_list]
        if any(m is None for m in mats):
            continue
        arrs = [np.asarray(m, dtype=np.float64) for m in mats]
        if len({a.shape for a in arrs}) != 1:
            continue
        stack = np.stack(arrs)
        std = np.std(stack, axis=0, ddof=1) if len(arrs) > 1 else np.zeros_like(stack[0])
        acc[s] = {"mean": np.mean(stack, axis=0), "std": std}

    totals = [(r.get("wall_time_s") or {}).get("total") for r in results_list]

    out = {
        "method": _common_value(results_list, "method"),
        "dataset": _common_value(results_list, "dataset"),
        "seeds": [r.get("seed") for r in results_list],
        "metrics": metrics,
        "accuracy_matrix": acc,
        "wall_time_s": {"total": _mean_std(totals)},
    }
    return to_jsonable(out)


# ---------------------------------------------------------------------------
# JSON-lines metrics log
# ---------------------------------------------------------------------------


class MetricsLogger:
    """Append-only JSON-lines log: one JSON object per line, flushed per write.

    Usage::

        with MetricsLogger("runs/x/metrics.jsonl") as log:
            log.log({"task": 0, "step": 100, "loss": 0.3})
            log.log(task=0, step=200, loss=0.2)

    The file is opened in append mode (parent directories are created), so a
    resumed run continues the same log.  Values are converted with
    :func:`to_jsonable` (numpy/jax scalars and arrays are fine).
    """

    def __init__(self, path):
        self.path = os.fspath(path)
        parent = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(parent, exist_ok=True)
        self._f = open(self.path, "a", encoding="utf-8")

    def log(self, record: Optional[Mapping[str, Any]] = None, **fields: Any) -> None:
        """Append one record (``record`` merged with keyword ``fields``)."""
        if self._f is None:
            raise ValueError(f"MetricsLogger for {self.path!r} is closed")
        row = dict(record or {})
        row.update(fields)
        self._f.write(json.dumps(to_jsonable(row), allow_nan=False) + "\n")
        self._f.flush()

    __call__ = log

    @property
    def closed(self) -> bool:
        return self._f is None

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> "MetricsLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):  # best effort
        try:
            self.close()
        except Exception:
            pass


def read_jsonl(path) -> list:
    """Read a JSON-lines file (e.g. a :class:`MetricsLogger` log) into a list
    of dicts, skipping blank lines."""
    with open(path, "r", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
