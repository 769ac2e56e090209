"""Continual-learning metrics, the results.json format, and plots.

* :mod:`clj.metrics.accuracy` -- metrics from an accuracy matrix ``R[i, j]``
  (accuracy on task j after training task i).
* :mod:`clj.metrics.results` -- ``results.json`` assembly, atomic JSON
  writing, seed aggregation, JSON-lines metrics logging.
* :mod:`clj.metrics.intervals` -- :func:`mean_ci`, the Student-t confidence
  interval of a mean over seeds.
* :mod:`clj.metrics.plots` -- heat maps and accuracy curves (Agg, no windows).
  Not imported here so that importing :mod:`clj.metrics` does not import
  matplotlib; use ``from clj.metrics.plots import ...``.
"""

from clj.metrics.accuracy import (
    METRIC_NAMES,
    accuracy_curve,
    average_incremental_accuracy,
    bwt,
    final_average_accuracy,
    forgetting,
    fwt,
    memory_curve_measures,
    summarize,
    task_accuracies,
    validate_accuracy_matrix,
)
from clj.metrics.intervals import mean_ci
from clj.metrics.results import (
    MetricsLogger,
    build_results,
    read_json,
    read_jsonl,
    summarize_seeds,
    to_jsonable,
    write_json_atomic,
)

__all__ = [
    "METRIC_NAMES",
    "accuracy_curve",
    "average_incremental_accuracy",
    "bwt",
    "final_average_accuracy",
    "forgetting",
    "fwt",
    "memory_curve_measures",
    "summarize",
    "task_accuracies",
    "validate_accuracy_matrix",
    "mean_ci",
    "MetricsLogger",
    "build_results",
    "read_json",
    "read_jsonl",
    "summarize_seeds",
    "to_jsonable",
    "write_json_atomic",
]
