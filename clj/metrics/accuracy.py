"""Continual-learning metrics computed from an accuracy matrix.

This module is the single definition of the metrics used throughout ``clj``.
Everything here is plain numpy and side-effect free.

Notation
--------
``R`` is a float array of shape ``[T, T]`` holding accuracies as *fractions*
in ``[0, 1]`` (not percent)::

    R[i, j] = accuracy on the test set of task j after training on task i

Rows are points in time (0-based task index just trained), columns are tasks
evaluated.  Entries with ``j > i`` (tasks not yet trained) are measured too;
only :func:`fwt` uses them.  They may be ``nan`` (not measured, e.g. a run
with ``loop.eval_tasks="seen"``); :func:`fwt` is then ``None``.

Metric summary (``T`` tasks, 0-based indices):

* final average accuracy   ``A_T   = 1/T sum_j R[T-1, j]``
* accuracy after task i    ``A_i   = 1/(i+1) sum_{j<=i} R[i, j]``
* average incremental acc. ``AIA   = 1/T sum_i A_i``               (iCaRL)
* forgetting               ``F     = 1/(T-1) sum_{j<T-1} max_{j<=l<=T-2} R[l, j] - R[T-1, j]``
* backward transfer        ``BWT   = 1/(T-1) sum_{j<T-1} R[T-1, j] - R[j, j]``   (GEM)
* forward transfer         ``FWT   = 1/(T-1) sum_{j>=1} R[j-1, j] - b_j``        (GEM)

References
----------
* S.-A. Rebuffi, A. Kolesnikov, G. Sperl, C. H. Lampert.  "iCaRL: Incremental
  Classifier and Representation Learning", CVPR 2017 (average incremental
  accuracy).
* A. Chaudhry, P. K. Dokania, T. Ajanthan, P. H. S. Torr.  "Riemannian Walk for
  Incremental Learning: Understanding Forgetting and Intransigence", ECCV 2018
  (forgetting measure).
* D. Lopez-Paz, M. Ranzato.  "Gradient Episodic Memory for Continual
  Learning", NeurIPS 2017 (ACC, BWT, FWT).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = [
    "validate_accuracy_matrix",
    "final_average_accuracy",
    "accuracy_curve",
    "average_incremental_accuracy",
    "forgetting",
    "bwt",
    "fwt",
    "summarize",
    "task_accuracies",
    "memory_curve_measures",
    "METRIC_NAMES",
]

#: Keys of the dict returned by :func:`summarize`, in a fixed order.
METRIC_NAMES = (
    "final_average_accuracy",
    "average_incremental_accuracy",
    "forgetting",
    "bwt",
    "fwt",
)


# ---------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------


def _check_unit_interval(x: np.ndarray, name: str) -> None:
    """Raise ValueError unless every entry of ``x`` is finite and in [0, 1]."""
    if x.size == 0:
        return
    bad = ~np.isfinite(x) | (x < 0.0) | (x > 1.0)
    if np.any(bad):
        idx = tuple(int(k) for k in np.argwhere(bad)[0])
        finite = x[np.isfinite(x)]
        rng = f"finite range [{float(finite.min())!r}, {float(finite.max())!r}]" if finite.size else "no finite values"
        raise ValueError(
            f"{name} must hold finite accuracies as fractions in [0, 1] "
            f"(not percent); got {float(x[idx])!r} at index {idx} "
            f"(shape {x.shape}, {rng})"
        )


def validate_accuracy_matrix(R) -> np.ndarray:
    """Return ``R`` as a float64 ``[T, T]`` array, or raise ``ValueError``.

    ``R`` must be two-dimensional, square, non-empty, and contain finite
    values in ``[0, 1]``, except that entries above the diagonal (tasks not
    yet trained) may be ``nan``: not measured.
    """
    try:
        arr = np.asarray(R, dtype=np.float64)
    except (TypeError, ValueError) as e:  # ragged lists, strings, ...
        raise ValueError(f"accuracy matrix R is not a numeric array: {e}") from e
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] == 0:
        raise ValueError(
            "accuracy matrix R must be a non-empty square 2-D array [T, T]; "
            f"got shape {arr.shape}"
        )
    _check_unit_interval(np.where(np.triu(np.isnan(arr), 1), 0.0, arr), "accuracy matrix R")
    return arr


def _validate_task_vector(v, T: int, name: str) -> np.ndarray:
    try:
        arr = np.asarray(v, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{name} is not a numeric array: {e}") from e
    if arr.shape != (T,):
        raise ValueError(f"{name} must have shape ({T},) to match R; got shape {arr.shape}")
    return arr


def _validate_task_sizes(task_sizes, T: int) -> np.ndarray:
    sizes = _validate_task_vector(task_sizes, T, "task_sizes")
    if np.any(~np.isfinite(sizes)) or np.any(sizes <= 0):
        raise ValueError(
            f"task_sizes must be positive finite test-sample counts; got {sizes.tolist()}"
        )
    return sizes


# ---------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------


def final_average_accuracy(R, task_sizes=None) -> float:
    """Average accuracy over all tasks after training the last one.

    ``A_T = 1/T * sum_{j=0}^{T-1} R[T-1, j]``  (the "ACC" of Lopez-Paz &
    Ranzato 2017, GEM).

    If ``task_sizes`` (shape ``[T]``, number of test examples of each task) is
    given, the tasks are weighted by their test-set size instead, i.e. the
    result is the accuracy over the pooled test set of all tasks:
    ``sum_j n_j R[T-1, j] / sum_j n_j``.
    """
    R = validate_accuracy_matrix(R)
    T = R.shape[0]
    if task_sizes is None:
        return float(np.mean(R[T - 1]))
    n = _validate_task_sizes(task_sizes, T)
    return float(np.dot(n, R[T - 1]) / np.sum(n))


def accuracy_curve(R, task_sizes=None) -> np.ndarray:
    """Average accuracy over the tasks seen so far, after each task.

    ``A_i = 1/(i+1) * sum_{j<=i} R[i, j]`` for ``i = 0..T-1``; returns a float
    array of shape ``[T]``.  With ``task_sizes`` (shape ``[T]``) the seen tasks
    are weighted by test-set size:
    ``A_i = sum_{j<=i} n_j R[i, j] / sum_{j<=i} n_j``.
    """
    R = validate_accuracy_matrix(R)
    T = R.shape[0]
    w = np.ones(T) if task_sizes is None else _validate_task_sizes(task_sizes, T)
    lower = np.tril(R)  # zero out j > i
    num = lower @ w  # sum_{j<=i} w_j R[i, j]
    den = np.cumsum(w)  # sum_{j<=i} w_j
    return num / den


def average_incremental_accuracy(R, task_sizes=None) -> float:
    """Average incremental accuracy (Rebuffi et al. 2017, iCaRL).

    ``AIA = 1/T * sum_{i=0}^{T-1} A_i`` with ``A_i`` from
    :func:`accuracy_curve`, i.e. the mean over training steps of the average
    accuracy over the tasks seen so far.

    Weighting: by default every *task* counts equally inside ``A_i``.  PyCIL
    (Zhou et al.) computes ``A_i`` as accuracy over the pooled test samples of
    all seen classes, i.e. it weights tasks by their number of test samples;
    pass ``task_sizes`` (shape ``[T]``, test examples per task) to reproduce
    that.  The outer mean over steps ``i`` is unweighted in both cases.
    """
    return float(np.mean(accuracy_curve(R, task_sizes=task_sizes)))


def forgetting(R) -> float:
    """Average forgetting (Chaudhry et al. 2018, "Riemannian Walk").

    ``F = 1/(T-1) * sum_{j=0}^{T-2} ( max_{l in [j, T-2]} R[l, j] - R[T-1, j] )``

    i.e. for every task but the last, the drop from its best accuracy
    observed after it was trained (and before the final task) to its final
    accuracy.  Can be negative if final accuracy exceeds all earlier ones.
    Returns ``0.0`` when ``T == 1``.
    """
    R = validate_accuracy_matrix(R)
    T = R.shape[0]
    if T == 1:
        return 0.0
    drops = [np.max(R[j : T - 1, j]) - R[T - 1, j] for j in range(T - 1)]
    return float(np.mean(drops))


def bwt(R) -> float:
    """Backward transfer (Lopez-Paz & Ranzato 2017, GEM).

    ``BWT = 1/(T-1) * sum_{j=0}^{T-2} ( R[T-1, j] - R[j, j] )``

    Negative values indicate forgetting.  Returns ``0.0`` when ``T == 1``.
    """
    R = validate_accuracy_matrix(R)
    T = R.shape[0]
    if T == 1:
        return 0.0
    j = np.arange(T - 1)
    return float(np.mean(R[T - 1, j] - R[j, j]))


def fwt(R, random_init_acc) -> Optional[float]:
    """Forward transfer (Lopez-Paz & Ranzato 2017, GEM; Mammoth's
    ``forward_transfer``).

    ``FWT = 1/(T-1) * sum_{j=1}^{T-1} ( R[j-1, j] - b_j )``

    where ``b`` (shape ``[T]``) holds the accuracy of the randomly initialised
    model on each task.  Returns ``None`` if ``random_init_acc`` is ``None``
    or an entry ``R[j-1, j]`` is ``nan`` (not measured), and ``0.0`` when
    ``T == 1``.
    """
    R = validate_accuracy_matrix(R)
    T = R.shape[0]
    if random_init_acc is None or np.isnan(R[np.arange(T - 1), np.arange(1, T)]).any():
        return None
    b = _validate_task_vector(random_init_acc, T, "random_init_acc")
    _check_unit_interval(b, "random_init_acc")
    if T == 1:
        return 0.0
    j = np.arange(1, T)
    return float(np.mean(R[j - 1, j] - b[j]))


def summarize(R, random_init_acc=None, task_sizes=None) -> dict:
    """All scalar metrics of ``R`` as a dict of python floats (or ``None``).

    Keys, in order: ``"final_average_accuracy"``,
    ``"average_incremental_accuracy"``, ``"forgetting"``, ``"bwt"``, ``"fwt"``.
    ``"fwt"`` is ``None`` when ``random_init_acc`` is ``None``.

    ``task_sizes`` (shape ``[T]``) weights tasks by test-set size in the two
    *accuracy averages* (final average accuracy and average incremental
    accuracy), so that the last point of the weighted accuracy curve equals
    the weighted final accuracy.  Forgetting, BWT and FWT are always
    per-task averages.
    """
    R = validate_accuracy_matrix(R)
    return {
        "final_average_accuracy": final_average_accuracy(R, task_sizes=task_sizes),
        "average_incremental_accuracy": average_incremental_accuracy(R, task_sizes=task_sizes),
        "forgetting": forgetting(R),
        "bwt": bwt(R),
        "fwt": fwt(R, random_init_acc),
    }


# ---------------------------------------------------------------------------
# per-task accuracy from predictions
# ---------------------------------------------------------------------------


def _as_int_vector(x, name: str) -> np.ndarray:
    arr = np.asarray(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D; got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.number) or np.any(arr != np.round(arr)):
            raise ValueError(f"{name} must hold integers; got dtype {arr.dtype}")
    return arr.astype(np.int64)


def task_accuracies(pred, labels, task_of_example, num_tasks: int) -> np.ndarray:
    """Accuracy per task from integer predictions.

    Args:
      pred: ``[N]`` predicted class ids.
      labels: ``[N]`` true class ids.
      task_of_example: ``[N]`` task id in ``[0, num_tasks)`` of each example.
      num_tasks: number of tasks ``T``.

    Returns:
      float64 array ``[T]``; entry ``t`` is
      ``mean(pred[k] == labels[k] for k with task_of_example[k] == t)``,
      ``nan`` for tasks with no examples.
    """
    pred = _as_int_vector(pred, "pred")
    labels = _as_int_vector(labels, "labels")
    tasks = _as_int_vector(task_of_example, "task_of_example")
    if not (pred.shape == labels.shape == tasks.shape):
        raise ValueError(
            "pred, labels and task_of_example must have the same length; got shapes "
            f"{pred.shape}, {labels.shape}, {tasks.shape}"
        )
    num_tasks = int(num_tasks)
    if num_tasks < 1:
        raise ValueError(f"num_tasks must be >= 1; got {num_tasks}")
    if tasks.size and (tasks.min() < 0 or tasks.max() >= num_tasks):
        raise ValueError(
            f"task_of_example must lie in [0, {num_tasks}); got range "
            f"[{tasks.min()}, {tasks.max()}]"
        )
    correct = np.bincount(tasks, weights=(pred == labels).astype(np.float64), minlength=num_tasks)
    count = np.bincount(tasks, minlength=num_tasks).astype(np.float64)
    out = np.full(num_tasks, np.nan)
    has = count > 0
    out[has] = correct[has] / count[has]
    return out


def memory_curve_measures(memory_mb, avg_acc, last_acc) -> dict:
    """MEMO's memory-agnostic measures of one method's performance-memory curve.

    Source: Zhou et al., "A Model or 603 Exemplars", ICLR 2023, Sec. 5 and
    Table 1 (``docs/memo.md``, "Performance-memory curves").  The paper gives
    no formula; the reported magnitudes fit a trapezoid rule with accuracy as a
    fraction and memory in MB, and APM as accuracy in percent per MB, which is
    what this computes.

    Args:
      memory_mb: float [P], total memory (exemplars + models) of each point,
        MB, strictly increasing, P >= 2.
      avg_acc: float [P], average incremental accuracy at each point, in [0, 1].
      last_acc: float [P], last-task (final) accuracy at each point, in [0, 1].

    Returns:
      ``{"auc_a", "auc_l"}``: areas under average / last accuracy vs MB;
      ``{"apm_s", "apm_e"}``: average accuracy (%) per MB at the first and
      the last point.

    Raises:
      ValueError: mismatched lengths, fewer than 2 points, memory not strictly
        increasing or not positive, or accuracies outside [0, 1].
    """
    x = np.asarray(memory_mb, dtype=np.float64)
    a = np.asarray(avg_acc, dtype=np.float64)
    last = np.asarray(last_acc, dtype=np.float64)
    if not (x.ndim == a.ndim == last.ndim == 1 and x.shape == a.shape == last.shape):
        raise ValueError(f"memory_mb, avg_acc and last_acc must be 1-D of one length; got shapes "
                         f"{x.shape}, {a.shape}, {last.shape}")
    if x.size < 2:
        raise ValueError(f"a performance-memory curve needs at least 2 points; got {x.size}")
    if np.any(x <= 0) or np.any(np.diff(x) <= 0):
        raise ValueError(f"memory_mb must be positive and strictly increasing; got {x.tolist()}")
    _check_unit_interval(a, "avg_acc")
    _check_unit_interval(last, "last_acc")
    area = lambda y: float(np.sum(0.5 * (y[1:] + y[:-1]) * np.diff(x)))  # noqa: E731  trapezoid rule
    return {"auc_a": area(a), "auc_l": area(last),
            "apm_s": float(100.0 * a[0] / x[0]), "apm_e": float(100.0 * a[-1] / x[-1])}
