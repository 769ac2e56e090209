"""What stops a run before its end: SIGTERM / SIGINT (a checkpoint is
written, then the run returns), the mid-task checkpoints that make a stop
cheap, and divergence (every run's loss or parameters non-finite).

The signal a run received is the runner's ``_signal`` (None until one
arrives): the handler of :func:`catch_signals` sets it, the chunk loop and
:class:`MidTaskSaver` read it.
"""
from __future__ import annotations

import os
import sys
import time

import jax
import numpy as np


class Diverged(Exception):
    """Every run of the program diverged: training stops, the results say so."""


class Interrupted(Exception):
    """SIGTERM/SIGINT arrived and a checkpoint was written: the run returns."""

    def __init__(self, signum: int, step: int):
        super().__init__(signum, step)
        self.signum, self.step = int(signum), int(step)


class NoLog:
    """The metrics log of processes other than 0 (they write nothing)."""

    def log(self, *a, **k):
        pass

    def close(self):
        pass


class MidTaskSaver:
    """Writes mid-task checkpoints every ``every`` seconds (0 = never) and when
    a SIGTERM/SIGINT arrived (then raises :class:`Interrupted`).

    Args:
      runner: the run (its ``_signal``, chunk length ``K`` and ``_ckpt_id``).
      ckpt: the run's :class:`clj.train.checkpoint.Checkpointer`.
      prog: the run's progress (saved as the checkpoint's metadata).
      logger: the metrics log.
      t: the task being trained.
      t0: when it started (``time.perf_counter``).
      every: seconds between timed checkpoints.
    """

    def __init__(self, runner, ckpt, prog, logger, t: int, t0: float, every: float):
        self.r, self.ckpt, self.prog, self.logger = runner, ckpt, prog, logger
        self.t, self.t0, self.every = t, t0, every
        self.last = time.perf_counter()

    def due(self) -> bool:
        """Whether to save now; with several processes, process 0's answer (all must agree)."""
        sig = int(self.r._signal or 0)
        timer = self.every > 0 and time.perf_counter() - self.last >= self.every
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils

            sig, timer = (int(v) for v in multihost_utils.broadcast_one_to_all(np.asarray([sig, int(timer)])))
            if sig and self.r._signal is None:
                self.r._signal = sig  # every process saves, then exits together
        return bool(sig) or bool(timer)

    def __call__(self, state, chunks_done: int) -> None:
        t, K = self.t, self.r.K
        meta = {**self.prog.to_json(), "in_task": {"task": t, "chunks_done": chunks_done,
                                                   "elapsed": time.perf_counter() - self.t0}}
        self.ckpt.save(self.r._ckpt_id(t, chunks_done), state, meta)
        self.last = time.perf_counter()
        self.logger.log(event="checkpoint", task=t, step=chunks_done * K)
        if self.r._signal is not None:
            raise Interrupted(self.r._signal, self.r._ckpt_id(t, chunks_done))


def catch_signals(runner):
    """Makes SIGTERM / SIGINT set ``runner._signal`` (the chunk loop then saves
    and exits) instead of killing the run mid-write; returns the function
    that restores the previous handlers.  A second signal acts at once."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    old = {}

    def handler(signum, frame):
        if runner._signal is not None:  # second signal: the default action
            signal.signal(signum, old.get(signum, signal.SIG_DFL))
            os.kill(os.getpid(), signum)
            return
        runner._signal = signum

    for s in (signal.SIGTERM, signal.SIGINT):
        old[s] = signal.getsignal(s)
        signal.signal(s, handler)

    def restore():
        for s, h in old.items():
            signal.signal(s, h)

    return restore


def watch_divergence(prog, metrics: dict, t: int, s0: int, n: int, *, S: int, seeds, points, run_point,
                     grid: bool, num_tasks: int, main: bool) -> None:
    """Marks in ``prog.diverged`` the runs that diverged in the chunk of
    steps ``s0 .. s0+n-1`` of task ``t``: a non-finite loss at any of those
    steps, or non-finite parameters after them (``metrics``: host arrays,
    ``loss`` [S, K, ...], ``params_finite`` bool [S]).  Each newly diverged
    run is one line on stderr (``main``: process 0 alone prints); once every
    run of the program diverged, raises :class:`Diverged` (nothing more to
    train).  The chunk's metrics are already on the host for the log: this
    costs no device sync.

    Args:
      S: the number of runs; seeds: the seed of each run; points, run_point: the grid's points and
        each run's point (named in the line when ``grid``).
      num_tasks: T (for the line).
    """
    loss = np.asarray(metrics["loss"])
    loss = loss.reshape(loss.shape[0], loss.shape[1], -1)[:, :n]
    finite = np.asarray(metrics["params_finite"]).reshape(S)
    for r in range(S):
        if r in prog.diverged:
            continue
        bad = ~np.isfinite(loss[r]).all(-1)
        if bad.any():
            step, cause = s0 + int(np.argmax(bad)) + 1, "loss"
        elif not finite[r]:
            step, cause = s0 + n, "parameters"
        else:
            continue
        info = {"seed": int(seeds[r]), "task": int(t), "step": int(step), "cause": cause}
        where = f"seed {info['seed']}"
        if grid:
            info["point"] = dict(points[run_point[r]])
            where += " at " + ", ".join(f"{k}={v}" for k, v in info["point"].items())
        prog.diverged[r] = info
        if main:
            print(f"[clj] diverged: {where}, non-finite {cause} at step {step} of task {t + 1}/"
                  f"{num_tasks}; its results will be marked diverged (lower optim.lr or "
                  "check the data).", file=sys.stderr, flush=True)
    if len(prog.diverged) == S:
        raise Diverged()
