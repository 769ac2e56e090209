"""The phases of the class-IL exemplar family (iCaRL, WA, Replay, AKR, MEMO,
DER (Yan)): the exemplar budget, the static quantities of a task, its batch
plan and its optimizer.

Sources: Rebuffi et al., "iCaRL", CVPR 2017 (a fixed exemplar budget shared
by the seen classes, Alg. 5); PyCIL (Zhou et al. 2021) for the init / update
phases and the batch composition (``docs/memo.md``, "Two optimizer phases" and "Design
choices"); the fair
budget of Zhou et al., "A Model or 603 Exemplars", ICLR 2023
(:func:`clj.replay.exemplars.fair_exemplars`).
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from clj.methods.cil import common as cc
from clj.methods import common
from clj.methods.common import ModelState, TaskInfo
from clj.replay import exemplars as ex


def backbone_param_count(config, scenario) -> int:
    """Parameters of the backbone (FC excluded) of ``config.model``."""
    from clj.models.utils import count_params

    model = common.model_from_config(config.model, scenario.num_classes)
    shapes = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, *scenario.image_shape)), train=False),
                            jax.random.PRNGKey(0))
    return count_params({k: v for k, v in shapes["params"].items() if k != "head"})


def resolve_memory_size(config, scenario, kind: str, cil, counts: dict | None = None) -> int:
    """``cil.memory_size`` or, with ``cil.budget="fair"``, the fair count of
    :func:`clj.replay.exemplars.fair_exemplars` for ``kind``."""
    if cil.budget == "fixed":
        return int(cil.memory_size)
    if counts is None:
        counts = {"total": backbone_param_count(config, scenario)}
    img = math.prod(int(d) for d in scenario.image_shape)  # host ints (init is also traced: eval_shape)
    return ex.fair_exemplars(kind, counts["total"], scenario.num_tasks, img, int(cil.base_exemplars),
                             counts.get("shallow", 0), counts.get("deep", 0))


def _plan(static, task_id: int, classes, n_new: int | None = None) -> tuple[int, int, int, dict]:
    """(known, total, n_mem, batch plan) of a task from the run's :class:`~clj.methods.cil.icarl.Static`."""
    known, total = int(min(classes)), int(max(classes)) + 1
    n_mem = 0
    if known > 0:
        q = ex.per_class_quota(known, static.memory_size, static.fixed_memory, static.memory_per_class)
        cap = ex.memory_capacity(static.num_classes, static.memory_size, static.fixed_memory, static.memory_per_class)
        sizes = static.class_sizes or (q,) * known  # without sizes: every class fills its quota
        n_mem = cc.stored_exemplars(sizes, known, q, cap)
    if n_new is None:
        n_new = sum(static.class_sizes[c] for c in classes) if static.class_sizes else 0
    epochs = static.init_epochs if task_id == 0 else static.epochs
    plan = cc.batch_plan(static.batching, static.batch_size, int(n_new), n_mem, epochs, static.replay_batch_size,
                         static.max_replay_batch)
    return known, total, n_mem, plan


def task_statics(static, task: TaskInfo) -> cc.TaskStatics:
    """Static quantities of ``task``: known/total classes, the stored
    exemplars n_mem (:func:`~clj.methods.cil.common.stored_exemplars`, what
    herding kept, not the quota), the batch plan, the quota m after it."""
    known, total, n_mem, plan = _plan(static, task.task_id, task.classes)
    if static.batching == "concat":  # the loop's count of new-data steps per epoch
        plan = cc.batch_plan("concat", static.batch_size, task.steps_per_epoch * static.batch_size, n_mem, 1.0,
                             static.replay_batch_size, static.max_replay_batch)
        plan.update(steps=task.num_steps, steps_per_epoch=task.steps_per_epoch)
    quota = ex.per_class_quota(total, static.memory_size, static.fixed_memory, static.memory_per_class)
    n_new = sum(static.class_sizes[c] for c in task.classes) if static.class_sizes else 0
    return cc.TaskStatics(task=task.task_id, known=known, total=total, replay=plan["replay"], quota=quota,
                          n_new=n_new, n_mem=n_mem, new_per_step=plan["new_per_step"],
                          steps_per_epoch=plan["steps_per_epoch"], steps=plan["steps"])


def task_steps(config, n_examples: int, batch_size: int, task_index: int, state_info) -> dict:
    """The loop's hook: batches of task ``task_index`` (host ints).

    Args:
      config: the run's config (unused; the State's ``static`` has what is needed).
      n_examples: the task's training images (the loop's pool).
      batch_size: B.
      task_index: the task.
      state_info: the method State (any seed; only its ``static`` field).

    Returns:
      :func:`~clj.methods.cil.common.batch_plan`'s dict: ``steps``,
      ``steps_per_epoch`` and ``new_per_step`` (the loop should put that
      many fresh examples of its epoch-wise shuffled stream in the first rows
      of each batch of B; the other rows are not used).
    """
    del config
    static = state_info.static
    if int(batch_size) != static.batch_size:
        raise ValueError(f"batch_size={batch_size} differs from train.batch_size={static.batch_size} of the state.")
    return _plan(static, task_index, static.task_classes[task_index], n_examples)[3]


def phase_lr(swept: dict, task_id: int) -> jax.Array:
    """The base learning rate float32 [] of task ``task_id``'s phase from a
    State's swept values: ``optim.lr`` in task 0, ``cil.update_lr`` later
    (the phase optimizers of :func:`begin_phase`; the schedule scales it)."""
    return swept["optim.lr"] if task_id == 0 else swept["cil.update_lr"]


def enter_task(static, task: TaskInfo):
    """What a class-IL method with traced task counts (iCaRL, WA, Replay, AKR,
    PODNet, LUCIR) sets at a task boundary.

    Returns:
      ``(st, static, counts)``: the task's host statics
      (:func:`task_statics`), ``static`` with the task's phase
      (:func:`clj.methods.cil.common.phase_of`), and its counts as int32
      arrays (:class:`clj.methods.cil.common.TaskCounts`, ``State.tc``).
    """
    st = task_statics(static, task)
    static = dataclasses.replace(static, phase=cc.phase_of(st, static.batching, static.batch_size))
    return st, static, cc.TaskCounts.of(st)


def begin_phase(net: ModelState, static, task: TaskInfo, st: cc.TaskStatics | None = None) -> ModelState:
    """The phase optimizer, reset, with the task's steps per epoch (PyCIL's
    union epoch in ``"pycil"`` mode) for the per-epoch schedules; ``st``:
    the task's statics (default ``static.st``)."""
    st = static.st if st is None else st
    net = net.replace(optim=static.init_optim if task.task_id == 0 else static.update_optim)
    net = common.begin_task_model(net, task)
    if static.batching == "pycil":
        net = net.replace(steps_per_epoch=jnp.asarray(st.steps_per_epoch, jnp.int32),
                          task_steps=jnp.asarray(st.steps, jnp.int32))
        if task.num_steps != st.steps:
            import warnings
            warnings.warn(f"task {task.task_id}: the loop runs {task.num_steps} steps, cil.batching='pycil' "
                          f"plans {st.steps} ({st.steps_per_epoch} per epoch); the loop must take the count "
                          "from the method's task_steps.")
    return net


def with_task_statics(state, info: TaskInfo):
    """``state`` with ``static.st`` the statics of the task ``info`` (host
    values): how a method that keeps its counts in ``State.tc`` reads them
    while the task ends (``end_task`` is compiled per task); it returns its
    State with the static it had before."""
    import dataclasses

    return state.replace(static=dataclasses.replace(state.static, st=task_statics(state.static, info)))
