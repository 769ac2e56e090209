"""What a run keeps and writes: its progress (checkpointed with the state),
and at the end one ``results.json`` per run (seed x grid point), a
``summary.json`` per point with several seeds, and the plots.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time

import jax
import numpy as np

from clj.methods.common import param_bytes
from clj.metrics import build_results, summarize_seeds, write_json_atomic


@dataclasses.dataclass
class Progress:
    """The host facts of a run so far, saved in every checkpoint's metadata."""

    completed_tasks: int = 0
    acc: dict = dataclasses.field(default_factory=dict)        # setting -> list of rows [S, T]
    random_init: dict = dataclasses.field(default_factory=dict)  # setting -> [S, T]
    wall_time: list = dataclasses.field(default_factory=list)
    eval_time: list = dataclasses.field(default_factory=list)
    steps: list = dataclasses.field(default_factory=list)
    diverged: dict = dataclasses.field(default_factory=dict)    # run index -> {"seed", "task", "step", "cause"}

    def to_json(self) -> dict:
        return {"completed_tasks": self.completed_tasks, "diverged": {str(k): v for k, v in self.diverged.items()},
                "acc": {k: [np.asarray(r).tolist() for r in v] for k, v in self.acc.items()},
                "random_init": {k: np.asarray(v).tolist() for k, v in self.random_init.items()},
                "wall_time": self.wall_time, "eval_time": self.eval_time, "steps": self.steps}

    @classmethod
    def from_json(cls, d: dict) -> "Progress":
        return cls(completed_tasks=d["completed_tasks"],
                   acc={k: [np.asarray(r) for r in v] for k, v in d["acc"].items()},
                   random_init={k: np.asarray(v) for k, v in d["random_init"].items()},
                   wall_time=list(d["wall_time"]), eval_time=list(d["eval_time"]), steps=list(d["steps"]),
                   diverged={int(k): dict(v) for k, v in (d.get("diverged") or {}).items()})


def write_configs(config, workdir: str, point_configs: dict) -> None:
    """Writes ``config.json`` in ``workdir`` and, for a grid, each point's
    resolved config in its folder (``point_configs``: folder -> config)."""
    os.makedirs(workdir, exist_ok=True)
    write_json_atomic(os.path.join(workdir, "config.json"), json.loads(config.to_json_best_effort()))
    for d, c in point_configs.items():
        os.makedirs(d, exist_ok=True)
        write_json_atomic(os.path.join(d, "config.json"), json.loads(c.to_json_best_effort()))


def record_chunk(loss, t: int, s0: int, n: int, *, bar, logger, trackers, step0: int) -> None:
    """Records the chunk of steps ``s0 .. s0+n-1`` of task ``t`` (``loss``: the
    chunk's host losses [S, K, ...]): the progress bar (None: no bar) moves
    on with the mean loss, which the metrics log records, and each run's
    tracker logs its own at step ``step0 + s0 + n`` (the finished tasks'
    ``step0`` steps before)."""
    mean = float(np.mean(loss[:, :n]))
    if bar is not None:
        bar.update(n)
        bar.set_postfix(loss=f"{mean:.4f}")
    logger.log(event="chunk", task=t, step=s0 + n, loss=mean)
    per_run = np.mean(loss[:, :n], axis=1)
    for r, tr in enumerate(trackers):
        tr.scalar("train/loss", per_run[r], step0 + s0 + n)


def record_task(prog: Progress, accs: dict, t: int, *, t0: float, t1: float, steps: int, trackers, logger,
                num_runs: int, num_tasks: int, show: bool) -> None:
    """Records task ``t``, trained from ``t0`` to ``t1`` (``time.perf_counter``,
    evaluated since) in ``steps`` steps, with the accuracies ``accs``
    (``{setting: [S, T]}``): in ``prog``, each run's tracker (a diverged run's
    numbers are not logged), the metrics log (the mean over the runs that did
    not diverge), and one line on stdout when ``show``."""
    from clj.tracking import log_task_accuracies

    for k, v in accs.items():
        prog.acc.setdefault(k, []).append(v)
    for r, tr in enumerate(trackers):
        if r not in prog.diverged:
            log_task_accuracies(tr, {k: v[r] for k, v in accs.items()}, t)
    prog.wall_time.append(t1 - t0)
    prog.eval_time.append(time.perf_counter() - t1)
    prog.steps.append(int(steps))
    prog.completed_tasks = t + 1
    ok = [r for r in range(num_runs) if r not in prog.diverged]  # a diverged run's numbers are not shown
    logger.log(event="task_end", task=t, wall_time_s=t1 - t0,
               **{f"acc_{k}": v[ok].mean(0)[: t + 1].mean().item() for k, v in accs.items()})
    if show:
        msg = ", ".join(f"{k} {100 * v[ok, : t + 1].mean():.2f}%" for k, v in accs.items())
        print(f"[clj] task {t + 1}/{num_tasks} done in {t1 - t0:.1f}s: avg acc on seen tasks {msg}")


def write_results(state, prog: Progress, *, config, scenario, spec, seeds, config_seeds, points, point_workdirs,
                  grid: bool, eval_counts: np.ndarray, facts: dict):
    """Writes every run's ``results.json`` (and each point's
    ``summary.json`` with several seeds, and the plots when
    ``config.plots``).

    Args:
      state: the runs' stacked State, host arrays.
      prog: the run's progress (accuracy rows, times, diverged runs).
      config, scenario, spec: the run's.
      seeds: the seed of each vmapped run (point-major).
      config_seeds: the seeds of one point.
      points: the grid's points (``[{}]`` without a grid).
      point_workdirs: the results folder of each point.
      grid: the run is a grid (results carry their ``hparams``).
      eval_counts: int [T] test examples per task.
      facts: the run's facts added to each result's ``extra`` (devices,
        mesh, backend, chunk length...).

    Returns:
      The results dict (one seed) or the summary dict (several) of each
      point: a list of them for a grid, else the one.
    """
    cfg, sc = config, scenario
    one = jax.tree_util.tree_map(lambda a: a[0], state)
    mem = dict(spec.memory_bytes(one)) if spec.memory_bytes is not None else {}
    mem.setdefault("buffer", 0)
    mem.setdefault("masks", 0)
    mem.setdefault("model", default_model_bytes(one))
    results = []  # one per vmapped run (point-major)
    for si, seed in enumerate(seeds):
        if si in prog.diverged:  # no numbers: they would not be this run's results
            results.append({"method": cfg.method, "dataset": cfg.dataset, "seed": seed, "status": "diverged",
                            "diverged": prog.diverged[si], "scenario": sc.describe()})
            continue
        this = jax.tree_util.tree_map(lambda a, i=si: a[i], state)  # this seed's state
        extras = dict(spec.result_extras(this)) if spec.result_extras is not None else {}
        res = build_results(
            method=cfg.method, dataset=cfg.dataset, seed=seed, scenario=sc.describe(),
            # (a setting missing from some rows, e.g. one added since a resumed checkpoint, is left out)
            accuracy_matrices={k: np.stack([r[si] for r in rows]) for k, rows in prog.acc.items()
                               if len(rows) == prog.completed_tasks},
            random_init_accuracy={k: v[si] for k, v in prog.random_init.items()},
            memory_bytes=mem, wall_time_per_task=prog.wall_time, steps_per_task=prog.steps,
            extra={"eval_time_s": prog.eval_time, **facts, **extras})
        add_pooled(res, eval_counts)
        res["status"] = "completed"
        results.append(res)
    outs = []
    n = len(config_seeds)
    for pi, wd in enumerate(point_workdirs):
        mine = results[pi * n:(pi + 1) * n]
        for res in mine:
            if grid:
                res["hparams"] = dict(points[pi])
        out_dirs = [wd] if n == 1 else [os.path.join(wd, f"seed_{s}") for s in config_seeds]
        for res, d in zip(mine, out_dirs):
            write_json_atomic(os.path.join(d, "results.json"), res)
            if cfg.plots and res["status"] == "completed":
                from clj.metrics.plots import plot_results
                plot_results(res, d)
        if n == 1:
            outs.append(mine[0])
        else:
            summary = summarize_diverged(mine)
            write_json_atomic(os.path.join(wd, "summary.json"), summary)
            outs.append(summary)
    return outs if grid else outs[0]


def summarize_diverged(results: list[dict]) -> dict:
    """The ``summary.json`` of several seeds' results, some of which may
    have diverged (``status == "diverged"``): the mean ± std of the completed
    seeds only (:func:`clj.metrics.summarize_seeds`), with ``status``
    ``"completed"`` when no seed diverged and ``"diverged"`` otherwise, and
    ``diverged`` listing where each diverged seed stopped.  With every seed
    diverged, the summary holds no numbers."""
    ok = [r for r in results if r.get("status") != "diverged"]
    bad = [r["diverged"] for r in results if r.get("status") == "diverged"]
    if ok:
        summary = summarize_seeds(ok)
    else:
        summary = {"method": results[0]["method"], "dataset": results[0]["dataset"], "seeds": []}
    summary["status"] = "diverged" if bad else "completed"
    if bad:
        summary["diverged"] = bad
    return summary


def add_pooled(res: dict, counts: np.ndarray) -> None:
    """Adds ``final_average_accuracy_pooled`` and
    ``average_incremental_accuracy_pooled`` to every setting of
    ``res["metrics"]``: the same averages weighted by each task's test
    examples (accuracy over all test examples seen so far, the figure of
    codes that pool their test sets, e.g. SERENA's)."""
    from clj.metrics import average_incremental_accuracy, final_average_accuracy

    for setting, R in res["accuracy_matrix"].items():
        R = np.asarray(R, np.float64)
        k = R.shape[0]
        if k == 0 or setting not in res["metrics"] or np.isnan(np.tril(R[:, :k])).any():
            continue
        res["metrics"][setting]["final_average_accuracy_pooled"] = final_average_accuracy(R[:, :k], counts[:k])
        res["metrics"][setting]["average_incremental_accuracy_pooled"] = average_incremental_accuracy(
            R[:, :k], counts[:k])


def default_model_bytes(state) -> int:
    """Bytes of ``state.params`` or ``state.net.params`` (0 if neither)."""
    for holder in (state, getattr(state, "net", None)):
        params = getattr(holder, "params", None)
        if params is not None:
            return param_bytes(params)
    return 0
