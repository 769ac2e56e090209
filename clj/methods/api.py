"""The method spec: everything the loop may know about a method (the method
protocol, ``docs/methods.md``).  A method's config blocks and checks are
declared by its registry entry (:mod:`clj.methods`), not here.

Every method module ends with ``SPEC = MethodSpec(...)``; the loop reads that
object and nothing else of the module.  A spec holds the five pure functions
and the method's declared capabilities; an optional capability left out has
the default below, so a new method states only what differs.

The five functions (shapes per seed; the loop ``vmap``s them over seeds):

* ``init(rng, config, scenario) -> State``
* ``begin_task(state, task: TaskInfo) -> State``
* ``train_step(state, batch, rng) -> (State, metrics)``: ``batch`` holds
  ``x`` float [B, H, W, C] (augmented), ``x_raw`` uint8 [B, H, W, C], ``y``
  int32 [B], ``task_id`` int32 [B] (-1 when the protocol hides it), and, only
  for a method whose capabilities ask (see :class:`Capabilities`), the keys
  ``new_task``, ``step``, ``steps_per_epoch``, ``task_size``.  ``metrics`` is
  a dict of float32 scalars; ``loss`` is logged.
* ``end_task(state, task_data) -> State``: ``task_data`` = ``{"x": uint8
  [N, H, W, C], "y": int32 [N], "info": TaskInfo}`` of the task just trained.
* ``predict(state, x, task_id | None) -> logits`` float [E, C]; with
  ``predict_uses_valid`` also ``valid=bool [E]``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable


@dataclasses.dataclass(frozen=True)
class Capabilities:
    """What a method declares to the loop (all default off).

    Attributes:
      cumulative_data: train task t on the union of the training data of tasks
        0..t (joint training).
      task_id_at_test: ``predict`` uses the task id, so the task-IL evaluation
        calls it with the true task id.
      task_id_class_il: the class-IL evaluation also gets the true task id
        (protocols that reproduce a task-indexed evaluation).
      step_info: ``train_step`` receives ``batch["step"]`` (int32 [], the step
        index inside the task), ``batch["steps_per_epoch"]`` and
        ``batch["task_size"]`` (int32 []; shared by all seeds).  Given only
        when boundaries are visible (class-/task-/domain-IL) or
        ``sees_boundaries`` is set.
      sees_boundaries: the method's protocol is allowed to know where tasks
        begin in a data-incremental stream (``batch["new_task"]`` bool [] and
        ``step_info``); off, a data-incremental method gets no task id, no
        boundary flag and no in-task step index.
      early_stop: ``train_step`` reports ``metrics["task_done"]`` (1 once the
        method has nothing left to learn in this task); the loop ends the task
        when every seed is done, read one chunk late, so every step after the
        stop must leave the state unchanged.
      static_task_info: ``begin_task`` / ``end_task`` read host values of
        :class:`~clj.methods.common.TaskInfo` (Python ints and tuples), so they
        are compiled once per task; otherwise they get traced scalars
        (``task_id``, ``num_steps``, ``steps_per_epoch`` int32 [],
        ``class_mask`` bool [C]) and compile once per distinct shape.
      predict_uses_valid: ``predict`` takes ``valid`` (bool [E]), the rows
        that are real examples of an evaluation batch (the rest are padding).
      conv: the network is convolutional (the loop's CPU chunking differs;
        see :func:`clj.train.runtime.auto_chunking`); None = what the model
        registry declares for ``config.model.name``
        (:func:`clj.models.is_conv`).
      heavy_step: one step holds several networks (a saliency branch, an
        attention module over a trunk copy); on the CPU, where conv chunks
        are unrolled, such a method runs one step per call so that compiling
        stays short.
      task_il_rule: how the task-IL evaluation scores: ``restrict`` (argmax
        over the test example's task classes) or ``multiply`` (logits times
        the 0/1 task mask, argmax over all classes: an example whose task
        logits are all negative counts as wrong; NISPA's official code).
      batch_extras: names of per-image extras stored in the dataset's
        prepared records (``"saliency"``: SER's ground-truth maps, uint8
        [H, W, 1]) that the loop gathers into every training batch as
        ``batch[name]`` (uint8 [B, *shape]), row for row with ``batch["x"]``,
        as stored: neither augmented nor domain-transformed (a method that
        reads them refuses such transforms, as SER does); the dataset must
        store them (the loop refuses it otherwise, before training).
    """

    cumulative_data: bool = False
    task_id_at_test: bool = False
    task_id_class_il: bool = False
    step_info: bool = False
    sees_boundaries: bool = False
    early_stop: bool = False
    static_task_info: bool = False
    predict_uses_valid: bool = False
    conv: bool | None = None
    heavy_step: bool = False
    task_il_rule: str = "restrict"
    batch_extras: tuple = ()


def _none(*_args, **_kw):
    return None


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """A method as the loop sees it.

    Attributes:
      init, begin_task, train_step, end_task, predict: the protocol (module doc).
      capabilities: a :class:`Capabilities`, or a function ``config ->
        Capabilities`` for capabilities that depend on the config.
      memory_bytes: ``state -> {"buffer", "masks", "model", ...: int}`` bytes
        of one seed's state (default: the parameters of ``state.params`` or
        ``state.net.params``; buffer and masks 0).
      result_extras: ``state -> dict`` added to one seed's results.json.
      task_steps: ``(config, n_examples, batch_size, task_index, state_info)
        -> int | dict``: train steps of a task (default: ``ceil(epochs * n /
        B)``), or ``{"steps", "steps_per_epoch", "new_per_step"}`` when a
        step takes only ``new_per_step`` fresh examples (the first rows of
        its batch of B; PyCIL's mixed batches).  ``state_info`` is one seed's
        State as shapes (``jax.eval_shape``): its static fields are real.
      sweepable: config paths (``"optim.lr"``) whose values the State carries
        as float32 [] arrays in ``state.swept`` (no shape depends on them),
        so the loop can run a grid of them as one vmapped program.
      prepare_predict: ``state -> state`` called once per evaluation before
        the evaluation batches (work every ``predict`` would repeat, e.g.
        SERENA's union network); its output is used only to predict.
    """

    init: Callable
    begin_task: Callable
    train_step: Callable
    end_task: Callable
    predict: Callable
    capabilities: Capabilities | Callable[[Any], Capabilities] = Capabilities()
    memory_bytes: Callable | None = None
    result_extras: Callable | None = None
    task_steps: Callable | None = None
    sweepable: tuple = ()
    prepare_predict: Callable | None = None

    def caps(self, config) -> Capabilities:
        """The capabilities that hold for ``config``."""
        c = self.capabilities
        return c(config) if callable(c) else c

    def replace(self, **kw) -> "MethodSpec":
        return dataclasses.replace(self, **kw)
