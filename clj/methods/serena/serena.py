"""SERENA: online data-incremental learning with self-regulated sparse
subnetworks ("concept cells").

Source: Yildirim et al., "Self-Regulated Neurogenesis for Online
Data-Incremental Learning", CoLLAs 2025 (PMLR 330:657-671, arXiv 2403.14684
v2), as its official code runs it; ``docs/serena.md``, "The algorithm as the
official code runs it", describes the code (the quoted names below are its
subsections).

One dense weight array per layer (``bank``, the union network) carries every
cell.  Exactly one cell is open at a time: a random sparse mask with ERK
layer densities ("Concept cells and their masks") whose weights form the
working network ``work`` (``bank`` restricted to the mask; weights of earlier
cells inside the mask are read-only, "Freezing and the optimizer").  Each
train step

1. measures the open cell's prequential accuracy on the incoming batch
   (test-then-train) and pushes a drift statistic into a window of ``W``;
2. fires a detection when the statistic drops below ``threshold`` x the window
   mean (strict ``<``, checked only once the window is full: "The drift
   detector");
3. on a detection (inside ``lax.cond``, all shapes static) closes the open
   cell -- merges its weights into ``bank``, ORs its mask into ``frozen``,
   stores its mask bit-packed -- and opens a new one with a fresh mask,
   fresh optimizer moments and weights taken from ``bank`` (so weights no cell
   used start at 0, "Opening and closing a cell");
4. takes one masked SGD step of the cross-entropy over all classes on the open
   cell (the triggering batch trains the new cell, "The drift detector").

``end_task`` (called once, at the end of the stream) closes the last cell.
``predict`` runs the live cells (``bank`` restricted to each mask) and
combines them; ``prepare_predict`` builds the union network once per
evaluation.

Two protocols (config ``serena.protocol``), recorded in results.json:

``official``  reproduces the official code, task identity included: the
              statistic is the running accuracy since the start of the true
              task (reset by ``batch["new_task"]``, so the config must set
              ``scenario.reveal_boundaries=True``); weight decay and momentum
              move frozen weights inside the open cell (coupled decay on a
              gradient zeroed only at frozen positions, "Freezing and the
              optimizer") and the merge copies every nonzero working weight
              ("Opening and closing a cell"); masks are
              Bernoulli draws; at test time data of true task ``t`` is voted
              on by cells ``0..t`` with weights ``m + 1``, ties to the
              earliest voter ("Prediction: the official vote").  The loop
              passes the true task id to both evaluation passes
              (:func:`clj.methods.serena.settings.capabilities`).
``task_free`` (default) sees no boundary and no task id, in training or at
              test time: the statistic is an exponential moving average of
              batch accuracy reset only by its own detection; frozen weights
              are bit-identical (the update is applied only at
              ``mask & ~frozen``); masks have exact per-layer counts; the
              prediction combines all cells by ``serena.vote`` (see
              :func:`clj.methods.serena.vote.combine_cells`).

Every piece of the protocol can also be set on its own (``serena.freeze``,
``mask_draw``, ``detector``, ``vote``, ``new_cell_init``); ``official`` fixes
them to the official values.

The pieces follow the paper's parts: :mod:`clj.methods.serena.cells` (cells,
the masked step), :mod:`clj.methods.serena.detector` (drift detection),
:mod:`clj.methods.serena.vote` (prediction), :mod:`clj.methods.serena.settings`
(the config section, protocols and static settings).  This module holds the
method protocol (init, train_step, end_task, reporting) and its ``SPEC``.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from clj.methods.common import TaskInfo, any_seed, cross_entropy
from clj.methods.serena.cells import PyTree, State, close_cell, draw_mask, masked_step, open_cell, restrict
from clj.methods.serena.settings import capabilities, default_config, static_from_config  # noqa: F401
from clj.methods.serena.settings import model_from_config
from clj.methods.serena.detector import detector_push
from clj.methods.serena.route import SUM_FIELDS, accumulate_class_means, space_dim
from clj.methods.serena.vote import predict, prepare_predict


def init(rng: jax.Array, config, scenario) -> State:
    """A fresh State with cell 0 open: random init (U(±1/sqrt(fan_in)))
    restricted to cell 0's mask (``docs/serena.md``, "Opening and closing a
    cell")."""
    model = model_from_config(config, scenario.num_classes)
    k_init, k_mask, k_re = jax.random.split(rng, 3)
    params = model.init(k_init, jnp.zeros((1, *scenario.image_shape), jnp.float32))["params"]
    static = static_from_config(config, scenario, params)
    mask0 = draw_mask(static, jax.random.fold_in(k_mask, 0), params)
    work = restrict(params, mask0)
    M = static.max_cells
    packed = jax.tree_util.tree_map(lambda m: jnp.zeros((M, math.ceil(m.size / 8)), jnp.uint8), mask0)
    W = static.window
    z = jnp.zeros((), jnp.int32)
    return State(bank=work, work=work, mask_cur=mask0,
                 frozen=jax.tree_util.tree_map(jnp.zeros_like, mask0), cell_masks=packed,
                 opt_state=static.tx().init(work), n_cells=jnp.ones((), jnp.int32), closed=jnp.zeros((), bool),
                 win=jnp.zeros((W,), jnp.float32), win_count=z, win_pos=z, correct=z, seen=z,
                 ema=jnp.zeros((), jnp.float32), step=z,
                 cell_start=jnp.full((M,), -1, jnp.int32).at[0].set(0), dropped=z,
                 **{field: jnp.zeros((scenario.num_classes, space_dim(space, scenario.image_shape, model)
                                      if space in static.class_means else 0), jnp.float32)
                    for space, field in SUM_FIELDS.items()},
                 cell_class_count=jnp.zeros((M, scenario.num_classes), jnp.int32), mask_key=k_mask,
                 init_key=k_re, static=static, model=model)


def begin_task(state: State, task: TaskInfo) -> State:
    """No-op: SERENA opens cells itself (the loop calls this once, at the
    start of a data-incremental stream)."""
    del task
    return state


# ------------------------------------------------------------------ training
def _loss(state: State, work: PyTree, x, y):
    logits = state.model.apply({"params": work}, x, train=True)
    return cross_entropy(logits, y), logits


def train_step(state: State, batch: dict, rng: jax.Array):
    """One online step (module doc; ``docs/serena.md``, "The drift detector").

    Args:
      state: the State.
      batch: ``x`` float32 [B, H, W, C] augmented images, ``y`` int32 [B],
        ``new_task`` bool [] (read only by the official statistic).
      rng: unused (masks come from ``mask_key``; kept for the protocol).

    Returns:
      (State, metrics: ``loss``, ``acc`` (prequential, before the step),
      ``stat`` (the statistic, percent), ``fire`` (0/1), ``n_cells``).
    """
    del rng
    x, y = batch["x"], batch["y"]
    B = y.shape[0]
    new_task = batch.get("new_task", jnp.zeros((), bool))
    (loss, logits), grads = jax.value_and_grad(lambda w: _loss(state, w, x, y), has_aux=True)(state.work)
    n_correct = jnp.sum(jnp.argmax(logits, -1) == y)
    st, det, c = detector_push(state, n_correct, B, new_task)
    can = st.n_cells < st.static.max_cells
    fire = det & can

    def switch(s):
        s = open_cell(close_cell(s))
        (l2, _), g2 = jax.value_and_grad(lambda w: _loss(s, w, x, y), has_aux=True)(s.work)
        return s, l2, g2

    def maybe_switch(s):
        # Per-seed choice inside a branch taken when any seed fires (common.any_seed):
        # the costly switch (ERK draw, second gradient) runs only on firing steps.
        switched = switch(s)
        return jax.tree_util.tree_map(lambda a, b: jnp.where(fire, a, b), switched, (s, loss, grads))

    st, loss, grads = jax.lax.cond(any_seed(fire), maybe_switch, lambda s: (s, loss, grads), st)
    st = masked_step(st, grads).replace(step=st.step + 1, dropped=st.dropped + (det & ~can).astype(jnp.int32))
    onehot = jax.nn.one_hot(y, st.cell_class_count.shape[1], dtype=jnp.float32)          # [B, C]
    st = st.replace(cell_class_count=st.cell_class_count.at[st.n_cells - 1].add(
        jnp.sum(onehot, 0).astype(jnp.int32)))
    st = accumulate_class_means(st, x, onehot)  # running class means of the routing rules (clj.methods.serena.route)
    metrics = {"loss": loss, "acc": n_correct.astype(jnp.float32) / B, "stat": c,
               "fire": fire.astype(jnp.float32), "n_cells": st.n_cells.astype(jnp.float32)}
    return st, metrics


def end_task(state: State, task_data) -> State:
    """Closes the open cell (the official code's explicit end-of-stream close,
    ``docs/serena.md``, "Opening and closing a cell").  Called once, at the
    end of a data-incremental stream."""
    del task_data
    return close_cell(state).replace(closed=jnp.ones((), bool))


# ------------------------------------------------------------------ reporting
def official_stream_accuracies(final_row, test_counts) -> dict:
    """The official code's end-of-stream figures (``docs/serena.md``, "The official
    figures") from the final
    model's per-task accuracies.

    "Stream t" is the accuracy pooled over the test examples of tasks 0..t
    (the official counters are not reset between tasks); the last one is the
    official final accuracy.  "Incremental Accuracy" is the mean of the
    Stream t values (the official code rounds them to 2 decimals first; this
    does not).

    Args:
      final_row: float [T], the last accuracy-matrix row (fractions).
      test_counts: int [T], test examples per task.
    Returns:
      {"stream": float [T] list, "final_pooled": float,
       "incremental_accuracy": float} (fractions).
    Raises:
      ValueError: lengths differ, or a count is negative or all are 0.
    """
    a = np.asarray(final_row, np.float64)
    n = np.asarray(test_counts, np.float64)
    if a.shape != n.shape or a.ndim != 1:
        raise ValueError(f"final_row {a.shape} and test_counts {n.shape} must be 1-D of equal length.")
    if np.any(n < 0) or n.sum() <= 0:
        raise ValueError(f"test_counts={n.astype(int).tolist()} must be >= 0 with a positive sum.")
    cum_n = np.cumsum(n)
    stream = np.cumsum(a * n) / np.maximum(cum_n, 1)
    return {"stream": stream.tolist(), "final_pooled": float(stream[-1]),
            "incremental_accuracy": float(np.mean(stream))}


def memory_bytes(state: State) -> dict:
    """Bytes: the union network (float32) and the bit-packed masks of the
    cells used (one row of ``ceil(n / 8)`` bytes per cell)."""
    n = int(state.n_cells)
    per_cell = sum(int(c.shape[-1]) for c in jax.tree_util.tree_leaves(state.cell_masks))
    model = sum(int(np.prod(b.shape)) * 4 for b in jax.tree_util.tree_leaves(state.bank))
    stats = sum(int(getattr(state, f).size) * 4 for f in SUM_FIELDS.values()) + int(state.cell_class_count.size) * 4
    return {"masks": n * per_cell, "model": model, "buffer": 0, "class_statistics": stats}


def result_extras(state: State) -> dict:
    """The protocol, its effective knobs, the cells opened and when, and the
    union density (results.json ``extra.serena``)."""
    static = state.static
    n = int(state.n_cells)
    frozen = jax.tree_util.tree_leaves(state.frozen)
    union = float(sum(int(jnp.sum(f)) for f in frozen) / max(sum(f.size for f in frozen), 1))
    return {"serena": {
        "protocol": static.protocol, "freeze": static.freeze, "mask_draw": static.mask_draw,
        "detector": static.detector, "vote": static.vote, "class_means": list(static.class_means),
        "new_cell_init": static.new_cell_init, "density": static.density, "window": static.window,
        "threshold": static.threshold, "ema_decay": static.ema_decay, "min_window_mean": static.min_window_mean,
        "max_cells": static.max_cells, "n_cells": n,
        "cell_start_steps": [int(s) for s in np.asarray(state.cell_start)[:n]],
        "detections_dropped_at_capacity": int(state.dropped), "union_density": union,
        "layer_densities": dict(static.densities),
        "optim": {"name": static.optim, "lr": static.lr, "momentum": static.momentum, "nesterov": static.nesterov,
                  "weight_decay": static.weight_decay}}}


def _spec():
    from clj.methods.api import MethodSpec

    import dataclasses as dc

    # prepare_predict: once per evaluation, where the spec has that optional hook.
    extra = ({"prepare_predict": prepare_predict}
             if "prepare_predict" in {f.name for f in dc.fields(MethodSpec)} else {})
    return MethodSpec(init=init, begin_task=begin_task, train_step=train_step, end_task=end_task,
                      predict=predict, capabilities=capabilities, memory_bytes=memory_bytes,
                      result_extras=result_extras, **extra)


SPEC = _spec()
