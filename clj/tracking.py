"""TensorBoard tracking of runs (tensorboardX's ``SummaryWriter``).

One :class:`Tracker` per run (one point x one seed), writing under the run's
results folder (``<dir>/tensorboard/``): ``tensorboard --logdir DIR`` then
shows every run of a sweep as its own curve, named by its folder
(``optim.lr=0.03-3f2a1c/seed_1``).  Tags:

* ``train/loss``: the mean training loss of a chunk of steps, at the run's
  global step (steps summed over tasks);
* ``<setting>/acc_task_<j>``: accuracy on task j after training task i (x = i);
* ``<setting>/average_accuracy``: mean accuracy on the tasks seen after task i,
  the curve whose last point is the final average accuracy (Chaudhry et al.
  2018, Eq. 1 as used in :mod:`clj.metrics.accuracy`).

Accuracies are fractions in [0, 1].  A disabled tracker does nothing and does
not import tensorboardX.
"""
from __future__ import annotations

import glob
import os
import struct
from typing import Mapping, Sequence

import numpy as np

LOGDIR = "tensorboard"


class Tracker:
    """A run's TensorBoard writer.

    Args:
      workdir: the run's results folder; events go to ``workdir/tensorboard``.
      enabled: False makes every call a no-op.
      flush_secs: seconds between flushes to disk.
    """

    def __init__(self, workdir: str, enabled: bool = True, flush_secs: int = 30):
        self.enabled = bool(enabled)
        self.logdir = os.path.join(workdir, LOGDIR)
        self._writer = None
        if self.enabled:
            from tensorboardX import SummaryWriter

            os.makedirs(self.logdir, exist_ok=True)
            self._writer = SummaryWriter(logdir=self.logdir, flush_secs=flush_secs)

    def scalar(self, tag: str, value, step: int) -> None:
        """Writes one scalar (a Python/NumPy number; a NaN is written as NaN)."""
        if self._writer is not None:
            self._writer.add_scalar(tag, float(value), int(step))

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Flushes and closes the event file (idempotent)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def open_trackers(workdirs: Sequence[str], enabled: bool) -> list[Tracker]:
    """One :class:`Tracker` per run folder (empty-handed no-ops when disabled)."""
    return [Tracker(d, enabled) for d in workdirs]


def log_task_accuracies(tracker: Tracker, accuracies: Mapping[str, Sequence[float]], task: int) -> None:
    """Writes one row of a run's accuracy matrix: after training ``task``
    (0-based), ``accuracies[setting][j]`` is the accuracy on task j.

    Writes ``<setting>/acc_task_<j>`` for j <= task and
    ``<setting>/average_accuracy`` (mean over j <= task), at step ``task``.
    """
    if not tracker.enabled:
        return
    for setting, row in accuracies.items():
        row = np.asarray(row, np.float64)[: task + 1]
        for j, a in enumerate(row):
            tracker.scalar(f"{setting}/acc_task_{j}", a, task)
        tracker.scalar(f"{setting}/average_accuracy", float(np.mean(row)), task)


def log_results(tracker: Tracker, results: Mapping) -> int:
    """Writes a finished run's per-task accuracies from its ``results.json``
    dict (every row of every setting's accuracy matrix); returns the rows written."""
    rows = 0
    for setting, R in (results.get("accuracy_matrix") or {}).items():
        for i, row in enumerate(R):
            if row is None or any(v is None for v in row[: i + 1]):
                continue
            log_task_accuracies(tracker, {setting: [float(v) for v in row[: i + 1]]}, i)
            rows += 1
    return rows


def write_run(workdir: str) -> list[str]:
    """Writes TensorBoard accuracy curves of a finished run folder from its
    results: ``workdir/results.json`` (one seed) or every
    ``workdir/seed_<s>/results.json``.  Returns the folders written.

    Raises:
      FileNotFoundError: no results.json in the folder or its seed folders.
    """
    from clj.metrics.results import read_json

    paths = [os.path.join(workdir, "results.json")]
    if not os.path.isfile(paths[0]):
        paths = sorted(glob.glob(os.path.join(workdir, "seed_*", "results.json")))
    if not paths:
        raise FileNotFoundError(f"{workdir}: no results.json (nor seed_*/results.json); is the run finished?")
    out = []
    for p in paths:
        d = os.path.dirname(p)
        t = Tracker(d)
        try:
            log_results(t, read_json(p))
        finally:
            t.close()
        out.append(d)
    return out


def read_scalars(workdir: str) -> dict[str, list[tuple[int, float]]]:
    """Reads back the scalars of ``workdir/tensorboard`` event files:
    ``{tag: [(step, value), ...]}`` in file order (a TFRecord reader, for
    tests and scripts without TensorFlow)."""
    from tensorboardX.proto import event_pb2

    out: dict[str, list] = {}
    for path in sorted(glob.glob(os.path.join(workdir, LOGDIR, "events.out.tfevents.*"))):
        with open(path, "rb") as f:
            data = f.read()
        pos = 0
        while pos + 12 <= len(data):
            (n,) = struct.unpack("<Q", data[pos:pos + 8])
            rec = data[pos + 12: pos + 12 + n]
            pos += 12 + n + 4
            ev = event_pb2.Event()
            ev.ParseFromString(rec)
            for v in ev.summary.value:
                out.setdefault(v.tag, []).append((int(ev.step), float(v.simple_value)))
    return out
