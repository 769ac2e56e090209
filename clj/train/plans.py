"""The plan of a run, fixed before it starts: the points of a grid, each
task's steps and example pool, the chunk length, each seed's example order
and the checkpoint numbers (:class:`clj.train.loop.Runner` asks these once).

Host-side only: nothing here is traced (a method's ``task_steps`` reads one
seed's State as shapes).
"""
from __future__ import annotations

import dataclasses
import math
import os

import jax
import numpy as np

from clj import config as config_lib
from clj.train import runtime


@dataclasses.dataclass(frozen=True)
class TaskPlan:
    """Host facts of one task, fixed before the run starts."""

    pool: np.ndarray       # int32 [n] training examples the task draws from
    steps: int             # train steps
    steps_per_epoch: int
    new_per_step: int      # fresh examples at the head of each batch (B unless the method plans less)


def check_points(points: list[dict], sweepable, method: str) -> None:
    """Refuses a grid whose points set different fields, a field the method
    cannot sweep, or a value that is not a number.

    Raises:
      ConfigError: naming the point and what is valid.
    """
    keys = set(points[0])
    allowed = set(sweepable)
    for p in points:
        if set(p) != keys:
            raise config_lib.ConfigError(f"every point of a grid must set the same fields; got {sorted(p)} "
                                         f"and {sorted(keys)}.")
        for k, v in p.items():
            if k not in allowed:
                raise config_lib.ConfigError(
                    f"{k}={v!r} cannot be a vmapped grid axis of method={method!r}; its sweepable "
                    f"fields are: {', '.join(sweepable) or 'none'} (run other fields as separate "
                    "programs).")
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise config_lib.ConfigError(f"{k}={v!r} is invalid in a grid: sweepable values are numbers.")


def point_workdirs(workdir: str, points: list[dict], given: list[str] | None, grid: bool) -> list[str]:
    """The absolute results folder of each point: ``given``, or ``workdir``
    alone without a grid, ``<workdir>/point_<i>`` with one.

    Raises:
      ConfigError: ``given`` does not hold one folder per point.
    """
    if given is None:
        given = [workdir] if not grid else [os.path.join(workdir, f"point_{i}") for i in range(len(points))]
    if len(given) != len(points):
        raise config_lib.ConfigError(f"point_workdirs has {len(given)} folders for "
                                     f"{len(points)} points; give one per point.")
    return [os.path.abspath(d) for d in given]


def point_config(config, point: dict):
    """A resolved copy of ``config`` with the values of ``point``
    (``{dotted path: number}``) set; a float field keeps its type."""
    c = config.copy_and_resolve_references()
    with c.unlocked():
        for k, v in point.items():
            node = c
            *path, last = k.split(".")
            for name in path:
                node = node[name]
            node[last] = type(node[last])(v) if isinstance(node[last], float) else v
    return c


def plan_task(spec, config, scenario, cumulative_data: bool, B: int, t: int, state_info) -> TaskPlan:
    """The plan of task ``t``: its example pool (tasks 0..t for a method with
    ``cumulative_data``), its steps (the method's ``task_steps`` when it has
    one, else ``train.epochs`` passes, ``train.init_epochs`` for task 0 when
    set) and the fresh examples per batch.

    Args:
      spec: the method's spec.
      config: the run's config.
      scenario: the run's scenario.
      cumulative_data: the method trains on every task seen so far.
      B: the batch size.
      t: the task.
      state_info: one seed's State as shapes (``jax.eval_shape`` of the
        method's ``init``), read by ``task_steps``; None without it.
    """
    sc = scenario
    if cumulative_data:
        pool = np.concatenate([sc.tasks[i].train_idx for i in range(t + 1)])
    else:
        pool = sc.tasks[t].train_idx
    n = int(pool.shape[0])
    spe, new = max(1, math.ceil(n / B)), B
    if spec.task_steps is not None:
        plan = spec.task_steps(config, n, B, t, state_info)
        if isinstance(plan, dict):
            steps, spe, new = int(plan["steps"]), int(plan["steps_per_epoch"]), int(plan["new_per_step"])
        else:
            steps = int(plan)
    else:
        epochs = float(config.train.epochs)
        init_epochs = float(config.train.get("init_epochs", 0) or 0)
        if t == 0 and init_epochs > 0:  # PyCIL's separate epoch count of the first task
            epochs = init_epochs
        steps = max(1, math.ceil(epochs * n / B))
    return TaskPlan(pool=np.asarray(pool, np.int32), steps=steps, steps_per_epoch=spe,
                    new_per_step=min(new, B))


def check_batch_fits(plans: list[TaskPlan], B: int) -> None:
    """Refuses a batch larger than a (non-empty) task's examples: every
    batch of that task would repeat examples.

    Raises:
      ConfigError: naming the task and the valid batch sizes.
    """
    short = [(t, p.pool.shape[0]) for t, p in enumerate(plans) if 0 < p.pool.shape[0] < p.new_per_step]
    if short:
        t, n = short[0]
        fit = min(p.pool.shape[0] for p in plans if p.pool.shape[0] > 0)
        raise config_lib.ConfigError(
            f"train.batch_size={B} is larger than the {n} training examples of task {t}: every batch of "
            f"that task would repeat examples; valid: 1..{fit} (the smallest task's examples).")


def index_stream(seed: int, t: int, pool: np.ndarray, steps: int, B: int, new_per_step: int) -> np.ndarray:
    """int32 [steps, B]: shuffled passes over ``pool`` (the order of
    ``numpy.random.default_rng([seed, t])``), cut into rows.  When the plan
    takes b = ``new_per_step`` < B fresh examples per step, each row holds b
    fresh indices repeated over its B columns (column j -> j mod b)."""
    b = new_per_step
    rng = np.random.default_rng([seed, t])
    need = steps * max(b, 1)
    parts, have = [], 0
    while have < need:
        parts.append(pool[rng.permutation(pool.shape[0])])
        have += pool.shape[0]
    if b <= 0:
        return np.zeros((steps, B), np.int32)
    rows = np.concatenate(parts)[:need].reshape(steps, b)
    return (rows if b == B else rows[:, np.arange(B) % b]).astype(np.int32)


def ckpt_id(plans: list[TaskPlan], K: int, t: int, chunks_done: int | None) -> int:
    """Checkpoint number, increasing through the run: mid-task checkpoints
    of task t (after ``chunks_done`` chunks of K steps) come before its
    end-of-task one (``chunks_done`` None), which comes before any of task
    t + 1."""
    before = sum(p.steps for p in plans[:t])
    if chunks_done is None:
        return 2 * (before + plans[t].steps) + 1
    return 2 * (before + chunks_done * K)


def plan_run(spec, config, scenario, caps, B: int):
    """The plan of every task of the run, then one chunk length for the run.

    Args:
      spec, caps: the method's spec and capabilities.
      config, scenario: the run's.
      B: the batch size.

    Returns:
      ``(plans, state_info, K, unroll)``: a :class:`TaskPlan` per task; one
      seed's State as shapes (``jax.eval_shape`` of ``init``, read by the
      method's ``task_steps``; None without it); the chunk length
      (``loop.steps_per_call``, else :func:`clj.train.runtime.auto_chunking`'s,
      fitted to the tasks by :func:`clj.train.runtime.choose_chunk`) and the
      scan's unroll.

    Raises:
      ConfigError: a batch larger than a task's examples.
    """
    state_info = None
    if spec.task_steps is not None:  # one seed's State as shapes: the static fields are real
        state_info = jax.eval_shape(lambda k: spec.init(k, config, scenario), jax.random.PRNGKey(0))
    plans = [plan_task(spec, config, scenario, caps.cumulative_data, B, t, state_info)
             for t in range(scenario.num_tasks)]
    check_batch_fits(plans, B)
    conv = caps.conv
    if conv is None:
        from clj.models import is_conv
        conv = is_conv(config.model.name)
    K_max, U = runtime.auto_chunking(jax.default_backend(), bool(conv), caps.heavy_step)
    K_max = int(config.loop.steps_per_call) or K_max
    K = runtime.choose_chunk([p.steps for p in plans], K_max)
    unroll = max(1, min(int(config.loop.unroll) or U, K))
    return plans, state_info, K, unroll
