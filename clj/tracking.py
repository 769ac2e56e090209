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

Weights & Biases (``tracking.wandb=True``, the optional extra ``pip install
'clj-jax[wandb]'``): :class:`WandbTracker` logs the same scalars, one W&B run per
run folder (files under ``<folder>/wandb/``; ``tracking.wandb_mode``
``offline`` by default, so no network is needed: ``wandb sync`` uploads them
later).  The runs of one program share a group (the workdir's name) and carry
their resolved config and seed.  W&B's history needs a rising step, so the
loss is logged against ``train/step`` (the global step) and the accuracies
against ``task``, each declared as its tags' x axis.  A resumed run logs as a
new W&B run of the same group.
"""
from __future__ import annotations

import glob
import os
import struct
from typing import Mapping, Sequence

import numpy as np

from clj.errors import ConfigError

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


class WandbTracker:
    """A run's Weights & Biases writer, with :class:`Tracker`'s methods.

    Scalars of one x value arrive one by one (:func:`log_task_accuracies`
    writes a row of the matrix tag by tag) and are logged as one history row
    when the x value changes, at :meth:`flush` and at :meth:`close`.

    Args:
      workdir: the run's results folder; W&B writes under ``workdir/wandb``.
      project: the W&B project.
      mode: one of :data:`WANDB_MODES`.
      name: the run's name (e.g. ``point/seed_1``).
      group: the group of the program's runs.
      config: the run's resolved config (a JSON-able dict).

    Raises:
      TrackingError: W&B cannot start the run (one line).
    """

    def __init__(self, workdir: str, *, project: str, mode: str = "offline", name: str | None = None,
                 group: str | None = None, config: Mapping | None = None):
        import wandb

        self.enabled = True
        os.makedirs(workdir, exist_ok=True)
        try:
            self._run = wandb.init(project=project, mode=mode, dir=workdir, name=name, group=group,
                                   config=dict(config or {}), reinit="create_new")
        except Exception as e:  # noqa: BLE001 - W&B raises many kinds (network, login, settings)
            why = (str(e).strip().splitlines() or [""])[0]
            raise TrackingError(f"tracking.wandb: W&B could not start the run in {workdir} (tracking.wandb_mode="
                                f"{mode!r}): {type(e).__name__}: {why}; tracking.wandb_mode='offline' needs no "
                                "network or login.") from None
        self._run.define_metric("train/step")
        self._run.define_metric("task")
        self._axes: dict = {}  # tag -> its x axis, declared to W&B on first use
        self._row: dict = {}
        self._x: tuple | None = None

    def scalar(self, tag: str, value, step: int) -> None:
        """Adds ``tag`` = ``value`` at x = ``step`` (the global step for
        ``train/*`` tags, the task for the others)."""
        if self._run is None:
            return
        axis = self._axes.get(tag)
        if axis is None:
            axis = self._axes[tag] = "train/step" if tag.startswith("train/") else "task"
            self._run.define_metric(tag, step_metric=axis)
        if self._x != (axis, int(step)):
            self._commit()
            self._x = (axis, int(step))
        self._row[tag] = float(value)

    def _commit(self) -> None:
        if self._row and self._x is not None:
            self._run.log({**self._row, self._x[0]: self._x[1]})
        self._row = {}

    def flush(self) -> None:
        """Logs the pending row."""
        if self._run is not None:
            self._commit()

    def close(self) -> None:
        """Logs the pending row and finishes the W&B run (idempotent)."""
        if self._run is not None:
            self._commit()
            self._run.finish()
            self._run = None


class Trackers:
    """Several writers of one run behind :class:`Tracker`'s methods."""

    def __init__(self, writers: Sequence):
        self.writers = [w for w in writers if w.enabled]
        self.enabled = bool(self.writers)

    def scalar(self, tag: str, value, step: int) -> None:
        for w in self.writers:
            w.scalar(tag, value, step)

    def flush(self) -> None:
        for w in self.writers:
            w.flush()

    def close(self) -> None:
        for w in self.writers:
            w.close()


class TrackingError(ConfigError):
    """A tracker that cannot start (one line)."""


def wandb_options(config) -> dict | None:
    """``{"project", "mode"}`` of ``config.tracking`` when W&B is on
    (``tracking.wandb=True`` and a mode other than ``disabled``), else None."""
    tr = config.get("tracking", None) or {}
    if not bool(tr.get("wandb", False)) or str(tr.get("wandb_mode", "offline")) == "disabled":
        return None
    return {"project": str(tr.get("wandb_project", "clj")), "mode": str(tr.get("wandb_mode", "offline"))}


def open_trackers(workdirs: Sequence[str], enabled: bool, wandb: Mapping | None = None,
                  names: Sequence[str] | None = None, group: str | None = None,
                  configs: Sequence[Mapping] | None = None) -> list:
    """One tracker per run folder: its TensorBoard :class:`Tracker` (a no-op
    when ``enabled`` is False) and, with ``wandb`` (``{"project", "mode"}``,
    :func:`wandb_options`), its :class:`WandbTracker` named ``names[i]`` in
    ``group`` with config ``configs[i]``, both behind one :class:`Trackers`.

    Raises:
      TrackingError: a W&B run that cannot start (the ones started are closed).
    """
    tb = [Tracker(d, enabled) for d in workdirs]
    if not wandb:
        return tb
    out = []
    try:
        for i, d in enumerate(workdirs):
            w = WandbTracker(d, project=wandb["project"], mode=wandb.get("mode", "offline"),
                             name=names[i] if names else None, group=group,
                             config=configs[i] if configs else None)
            out.append(Trackers([tb[i], w]))
    except BaseException:
        for t in out:
            t.close()
        for t in tb[len(out):]:
            t.close()
        raise
    return out


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


def read_wandb_history(workdir: str) -> list[list[dict]]:
    """Reads back the history rows of the W&B runs written under
    ``workdir/wandb`` (offline run files ``offline-run-*/run-*.wandb``): one
    list of ``{key: value}`` rows per run, in folder order (for tests and
    scripts; needs the ``wandb`` package for its record format).

    The file is W&B's record log: a 7-byte header, then 32 KiB blocks of
    chunks (CRC-32C, length, kind: full, first, middle or last) whose
    payloads join into protobuf ``Record`` messages.
    """
    import json

    from wandb.proto import wandb_internal_pb2

    block, head = 32768, 7
    runs = []
    for path in sorted(glob.glob(os.path.join(workdir, "wandb", "offline-run-*", "run-*.wandb"))):
        with open(path, "rb") as f:
            data = f.read()
        rows, pos, buf = [], head, b""
        while pos + head <= len(data):
            room = block - pos % block
            if room < head:  # a block's tail too short for a chunk header is padding
                pos += room
                continue
            _, n, kind = struct.unpack("<IHB", data[pos:pos + head])
            if n == 0 and kind == 0:
                break
            buf += data[pos + head:pos + head + n]
            pos += head + n
            if kind in (1, 4):  # a full record, or the last chunk of one
                rec = wandb_internal_pb2.Record()
                rec.ParseFromString(buf)
                buf = b""
                if rec.WhichOneof("record_type") == "history":
                    rows.append({it.key or "/".join(it.nested_key): json.loads(it.value_json)
                                 for it in rec.history.item})
        runs.append(rows)
    return runs
