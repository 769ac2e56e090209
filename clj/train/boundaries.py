"""A method's task boundaries as the loop calls them: the
:class:`~clj.methods.common.TaskInfo` of a task, and ``begin_task`` /
``end_task`` jitted for every run, compiled once per distinct shape (per
task only for methods that declare ``static_task_info``).
"""
from __future__ import annotations

import jax
import numpy as np

from clj import config as config_lib
from clj.methods.common import TaskInfo
from clj.train import distributed as dist
from clj.train.seeds import over_runs


def what_the_method_sees(config, scenario, caps) -> tuple[bool, bool, bool, bool]:
    """What a method may see of the task boundaries (its capabilities
    decide; never more than the protocol allows).

    Returns:
      ``(visible, reveal, give_new_task, give_step_info)``: the scenario's
      boundaries are visible; the batches carry the task id (visible, or
      ``scenario.reveal_boundaries``); they carry ``new_task``; they carry
      the step info (``step``, ``steps_per_epoch``, ``task_size``).

    Raises:
      ConfigError: ``scenario.reveal_boundaries`` asked of a method that
        does not see boundaries in a data-incremental stream.
    """
    visible = scenario.task_boundaries_visible
    asks_reveal = bool(config.scenario.get("reveal_boundaries", False))
    if asks_reveal and not visible and not caps.sees_boundaries:
        raise config_lib.ConfigError(
            f"scenario.reveal_boundaries=True, but method={config.method!r} does not see task boundaries "
            "in a data-incremental stream; valid: reveal_boundaries=False for this method.")
    reveal = visible or asks_reveal
    return visible, reveal, reveal and caps.sees_boundaries, reveal and caps.step_info


def task_info(scenario, static: bool, t: int, steps: int, spe: int) -> TaskInfo:
    """The boundary info of task t of ``scenario`` (``steps`` train steps,
    ``spe`` per epoch): host values for a method that declares
    ``static_task_info`` (``static``), traced-ready int32 arrays otherwise."""
    task, C = scenario.tasks[t], scenario.num_classes
    mask = np.zeros(C, bool)
    mask[list(task.classes)] = True
    if static:
        return TaskInfo(task_id=t, classes=tuple(task.classes), num_steps=steps, steps_per_epoch=spe,
                        num_classes=C, class_mask=mask)
    i32 = lambda v: np.asarray(v, np.int32)  # noqa: E731
    return TaskInfo(task_id=i32(t), classes=(), num_steps=i32(steps), steps_per_epoch=i32(spe),
                    num_classes=C, class_mask=mask)


def _key(info: TaskInfo, static: bool):
    return (int(info.task_id), info.classes, int(info.num_steps), int(info.steps_per_epoch)) if static \
        else "traced"


class Boundaries:
    """The jitted ``begin_task`` / ``end_task`` of every run, each cached by
    the task's static fields (``static_task_info``) or once (traced info).

    Args:
      spec: the method's spec.
      static: the method declares ``static_task_info``.
      domain: ``domain(x_raw, task_id)``, the task's input transform.
      spmd_axis: the mesh axis the runs are sharded over.
      state_sharding: the sharding of the runs' stacked State.
      seed_batching: ``"vmap"`` or ``"map"`` (:mod:`clj.train.seeds`).
    """

    def __init__(self, spec, static: bool, domain, spmd_axis: str, state_sharding, seed_batching: str = "vmap"):
        self.spec, self.static, self.domain = spec, static, domain
        self.seed_batching = seed_batching
        self.spmd_axis, self.state_sharding = spmd_axis, state_sharding
        self.begin_fns: dict = {}
        self.end_fns: dict = {}

    def begin(self, state, info: TaskInfo):
        """Every run's ``begin_task(state, info)``."""
        key = _key(info, self.static)
        fn = self.begin_fns.get(key)
        if fn is None:
            if self.static:
                f = over_runs(lambda s: self.spec.begin_task(s, info), (0,), self.seed_batching,
                              spmd_axis_name=self.spmd_axis)
                fn = jax.jit(lambda s, i: f(s), out_shardings=self.state_sharding)
            else:
                fn = jax.jit(over_runs(self.spec.begin_task, (0, None), self.seed_batching,
                                       spmd_axis_name=self.spmd_axis),
                             out_shardings=self.state_sharding)
            self.begin_fns[key] = fn
        return fn(state, info)

    def end(self, state, info: TaskInfo, t: int, scenario, X, Y, records, replicated):
        """Every run's ``end_task`` with task t's training data gathered on
        the device: from ``X`` / ``Y`` (the whole split on the devices), or,
        with ``records`` (the ``stream`` placement), the task's images read
        from disk once and put whole on every device (``replicated``) with
        the scenario's labels (its class order)."""
        static = self.static
        key = _key(info, static)
        fn = self.end_fns.get(key)
        if fn is None:
            spec, domain = self.spec, self.domain

            def f(state, X, Y, tidx, info_arg):
                inf = info if static else info_arg
                data = {"x": domain(X[tidx], inf.task_id if not static else t), "y": Y[tidx], "info": inf}
                return over_runs(lambda s: spec.end_task(s, data), (0,), self.seed_batching,
                                 spmd_axis_name=self.spmd_axis)(state)

            fn = jax.jit(f, out_shardings=self.state_sharding)
            self.end_fns[key] = fn
        tidx = np.asarray(scenario.tasks[t].train_idx, np.int32)
        if records is not None:  # the task's training images, read from disk once
            x, _ = records.read("train", tidx)
            y = np.asarray(scenario.y_train, np.int32)[tidx]  # the scenario's labels (its class order)
            return fn(state, dist.put(x, replicated), dist.put(y, replicated),
                      np.arange(tidx.shape[0], dtype=np.int32), None if static else info)
        return fn(state, X, Y, tidx, None if static else info)
