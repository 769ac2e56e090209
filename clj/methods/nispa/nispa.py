"""NISPA: Neuro-Inspired Stability-Plasticity Adaptation (Gurbuz & Dovrolis,
ICML 2022, arXiv 2206.09117), task-incremental, as its official code runs it
(``docs/nispa.md``, "The algorithm as the official code runs it"; the paper's
sections are cited as "paper §").

One sparse network of fixed density learns every task.  Each hidden unit is
*stable* (promoted at an earlier task boundary), *candidate* (selected in the
current phase) or *plastic*; inputs are always stable and the output units of
the classes seen so far count as stable.  A task trains in **phases** of
``phase_epochs`` epochs (Adam re-created every phase).  After phase t:

1. the phase's accuracy is its best epoch's validation accuracy; stop when it
   falls more than ``a_f`` points below the best of the earlier phases
   (t >= 3) or when p_t <= 5 % (paper §3.8), rolling back to the previous
   phase's snapshot and the unit selection that produced its connectivity;
2. otherwise the units that together give p_t % of each hidden layer's total
   average activation on the task's training data become candidates, with
   p_t = 100 (1 + cos(pi t / k)) / 2 (paper Eq. 3, §3.3);
3. every connection from a plastic unit into a stable/candidate unit is
   dropped; plastic units left without outgoing connections get one
   zero-valued connection; the rest of the dropped budget is regrown at random
   into plastic targets with N(mean, std) of the layer's weights, so each
   layer keeps its number of connections (paper §3.5-3.6);
4. the next phase starts from the rewired best-epoch snapshot.

At the task end the final selection is promoted to stable, every connection
between stable units and every stable unit's bias are frozen for good, and
every other weight is re-initialised (Kaiming normal, fan_out; biases 0).
Stable units then see only frozen stable paths, so old tasks' logits never
change (zero forgetting).

How the phases run inside the core loop (a fixed number of steps per task):
:func:`task_steps` sizes each task in whole phases, ``max_phases *
phase_epochs * ceil(n / B)`` steps, so the last phase the stopping rule can
reach always completes (the loop calls it through the method spec; before
that, ``train.epochs = max_phases * phase_epochs``); phase boundaries fall every ``phase_epochs *
steps_per_epoch`` steps and epoch ends every ``steps_per_epoch`` steps, both
taken inside the jitted step under ``lax.cond``.  The loop passes the in-task
step index, steps per epoch and task size as ``batch["step"]``,
``batch["steps_per_epoch"]``, ``batch["task_size"]``, values shared by all
vmapped seeds, so the
conds stay real branches under ``vmap``; the per-seed decisions (stop or go
on, the best epoch) are ``jnp.where`` selections.  Once a seed stops, its
remaining steps leave the State bit-identical (a ``stopped`` flag), so a loop
that notices ``metrics["task_done"]`` a chunk late changes nothing.

Task-IL test metric: the official code multiplies the logits by the task's
0/1 class mask and takes the argmax over all classes, so a test example whose
task logits are all negative counts as wrong (a masked class, at 0, wins);
:func:`task_il_correct` is that rule (``nispa.task_il_rule = 'multiply'``);
the loop's rule (argmax over the task's classes) is ``'restrict'``.

Validation data: 10 % of each task's training examples, chosen by a fixed
hash of the image bytes (:func:`is_val`), never enter the loss.  During the
first epoch of a task (each example exactly once) the validation examples are
copied into a buffer in the State, and the training examples into a second
buffer (the data the activation statistics of step 2 are computed on; capped
at ``select_samples`` when > 0).  Both have static capacities computed from
the scenario at ``init``.

Static shapes: the step compiles once per run (per chunk length of the
loop); task sizes, steps per epoch and phase boundaries are traced values,
so nothing recompiles at a phase or task boundary.

Deviations from the official code (documented in ``docs/nispa.md``):
validation split by content hash (not a random 90/10 split), the loop's
completed last batch instead of a partial one, exact-count initial masks by
default (``mask_init='bernoulli'`` is the official draw), the corrected
flatten-layer fix-up check, and a final drop at the task end (a no-op except
when a task ends before its second phase).

The parts: :mod:`clj.methods.nispa.units` (unit sets, drop, fix-up, growth,
freezing as array code), :mod:`clj.methods.nispa.rewiring` (selection
statistic and rewiring), :mod:`clj.methods.nispa.phases` (the phase loop and
the step budget), :mod:`clj.methods.nispa.state` (settings, State, masks,
init), :mod:`clj.data.holdout` (the validation split).  This
module holds the method protocol and its ``SPEC``.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

from clj.methods import common
from clj.methods.nispa import units as nu
from clj.methods.common import TaskInfo
from clj.methods.nispa.phases import epoch_end, fill_buffers, phase_end, phase_limit, task_steps  # noqa: F401
from clj.methods.nispa.state import (TASK_IL_RULES, State, forward, init, stable_full,  # noqa: F401
                                     task_il_rule, trainable, tree_where)
from clj.data.holdout import is_val, is_val_np  # noqa: F401
from clj.models.nispa_nets import reinit_kernel
from clj.sparse import masks_nbytes


# ---------------------------------------------------------------- task boundaries
def begin_task(state: State, task: TaskInfo) -> State:
    """Sets the task's class mask, resets the phase bookkeeping, the buffers'
    fill counts and Adam."""
    static = state.static
    cm = jnp.zeros((static.num_classes,), jnp.float32).at[jnp.asarray(task.classes)].set(1.0)
    seen = state.seen | (cm > 0)
    S = state.stable
    f0, i0, b0 = jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32), jnp.zeros((), bool)
    return state.replace(
        class_mask=cm, seen=seen, cur_S=S, prev_S=S, cur_p=jnp.full((), 100.0),
        prev_p=jnp.full((), 100.0), prev_valid=b0, prev_params=state.params, prev_conn=state.conn,
        best_params=state.params, best_acc=f0, have_best=b0, acc_prev=f0, phase=i0, stopped=b0,
        task_id=jnp.asarray(task.task_id, jnp.int32), val_n=i0, sel_n=i0,
        opt_state=static.tx.init(state.params))


def end_task(state: State, task_data) -> State:
    """Rolls back to the last kept phase, promotes its selection to stable,
    freezes stable->stable connections and stable biases, re-initialises
    every other weight (``docs/nispa.md``, "The task boundary: promote,
    freeze, re-initialise").  ``task_data`` is unused."""
    del task_data
    static = state.static
    ok = state.prev_valid
    params = tree_where(ok, state.prev_params, state.params)
    conn = tree_where(ok, state.prev_conn, state.conn)
    S = tree_where(ok, state.prev_S, state.cur_S)
    p = jnp.where(ok, state.prev_p, state.cur_p)
    S = tuple(S[:-1]) + (state.seen,)
    stable = tuple(a | b for a, b in zip(state.stable, S))
    stable = tuple(stable[:-1]) + (state.seen,)
    sf = stable_full(static, stable)
    sfS = stable_full(static, S)
    key = jax.random.fold_in(state.key, state.task_id)
    new_params, new_conn = {}, {}
    for l, s in enumerate(static.specs):
        u, _ = nu.drop(s, conn[s.name], sfS[l], sfS[l + 1])   # a no-op unless the task had one phase
        fr = nu.frozen_matrix(s, sf[l], sf[l + 1])
        w, b = params[s.name]["kernel"], params[s.name]["bias"]
        fresh = reinit_kernel(jax.random.fold_in(key, l), w.shape)
        w = jnp.where(nu.expand(s, fr, w.shape), w, fresh) * nu.expand(s, u, w.shape).astype(w.dtype)
        b = jnp.where(sf[l + 1], b, 0.0)
        new_params[s.name] = {"kernel": w, "bias": b}
        new_conn[s.name] = u
    tid = state.task_id
    return state.replace(params=new_params, conn=new_conn, stable=stable, cur_S=stable,
                         phases_per_task=state.phases_per_task.at[tid].set(state.phase),
                         final_p=state.final_p.at[tid].set(p), stopped=jnp.ones((), bool))


# ---------------------------------------------------------------- the step
def train_step(state: State, batch: dict, rng: jax.Array):
    """One Adam step on the current task's training examples (validation
    examples masked out of the loss), then the epoch-end and phase-end work
    when the step closes an epoch or a phase (module doc).

    Args:
      state: the State.
      batch: ``x`` float32 [B, H, W, C], ``x_raw`` uint8 [B, H, W, C], ``y``
        int32 [B]; ``step``, ``steps_per_epoch``, ``task_size`` int32 [] (the
        in-task step index, steps per epoch and task size given by the loop,
        the same for all seeds: ``Capabilities.step_info``).
      rng: PRNG key (rewiring draws).

    Returns:
      (new State, metrics: ``loss``, ``acc`` (training examples), ``phase``,
      ``task_done`` (1 once the stopping rule fired: the loop may end the
      task early)).
    """
    static = state.static
    x, xr, y = batch["x"], batch["x_raw"], batch["y"]
    B = y.shape[0]
    step, spe, n_task = batch["step"], batch["steps_per_epoch"], batch["task_size"]
    val = is_val(xr, static.val_permille)
    first = (step * B + jnp.arange(B, dtype=jnp.int32)) < n_task
    state = jax.lax.cond(step < spe, lambda s: fill_buffers(s, xr, y, val & first & ~s.stopped,
                                                            ~val & first & ~s.stopped), lambda s: s, state)

    tw = ~val
    upd_mask = trainable(static, state.params, state.conn, state.stable)

    def loss_fn(p):
        logits, _ = forward(static, p, state.conn, x)
        logits = logits * state.class_mask
        return common.cross_entropy(logits, y, tw), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = static.tx.update(grads, state.opt_state, state.params, update_mask=upd_mask)
    params = optax.apply_updates(state.params, updates)
    live = ~state.stopped
    state = state.replace(params=tree_where(live, params, state.params),
                          opt_state=tree_where(live, opt_state, state.opt_state))
    state = jax.lax.cond((step + 1) % spe == 0,
                         lambda s: tree_where(s.stopped, s, epoch_end(s)), lambda s: s, state)
    state = jax.lax.cond((step + 1) % (spe * static.phase_epochs) == 0,
                         lambda s: phase_end(s, rng), lambda s: s, state)
    twf = tw.astype(jnp.float32)
    acc = jnp.sum((jnp.argmax(logits, -1) == y) * twf) / jnp.maximum(jnp.sum(twf), 1.0)
    return state, {"loss": loss, "acc": acc, "phase": state.phase.astype(jnp.float32),
                   "task_done": state.stopped.astype(jnp.float32)}


def task_il_correct(logits: jax.Array, y: jax.Array, task_mask: jax.Array, rule: str = "multiply") -> jax.Array:
    """bool [B]: whether each task-IL prediction is right.

    Args:
      logits: float [B, C]; y: int [B] labels; task_mask: bool or 0/1 [C]
        (or [B, C]) marking the test example's task classes.
      rule: ``'multiply'``: the official code's rule (``docs/nispa.md``,
        "Output masking"): the logits times the 0/1 mask, argmax over all C
        classes, so when every task logit is negative a masked class (at 0)
        wins and the example counts as wrong; ``'restrict'``: argmax over the
        task's classes only (the core loop's rule; it differs from 'multiply'
        exactly on the examples whose task logits are all <= 0).

    Raises:
      ValueError: unknown ``rule``.
    """
    if rule not in TASK_IL_RULES:
        raise ValueError(f"task_il_rule={rule!r} is unknown; valid: {', '.join(TASK_IL_RULES)}.")
    m = jnp.broadcast_to(jnp.asarray(task_mask), logits.shape)
    if rule == "multiply":
        pred = jnp.argmax(logits * m.astype(logits.dtype), -1)
    else:
        pred = jnp.argmax(jnp.where(m.astype(bool), logits, -jnp.inf), -1)
    return pred == y


def predict(state: State, x: jax.Array, task_id: jax.Array | None = None) -> jax.Array:
    """Logits float32 [B, C] of the sparse network on normalised x [B, H, W, C]
    (the loop's task-IL evaluation masks them to the task's classes)."""
    del task_id
    return forward(state.static, state.params, state.conn, x)[0]


# ---------------------------------------------------------------- reporting
def layer_counts(state: State) -> dict:
    """Connections (kernel elements) per layer, host ints."""
    return {s.name: int(nu.count(s, state.conn[s.name])) for s in state.static.specs}


def memory_bytes(state: State) -> dict:
    """Bytes of the connection masks (bit-packed unit matrices), the unit
    states (stable sets, 1 bit per unit; frozen masks are derived from them),
    the validation/selection buffers and the dense float32 parameters."""
    unit_bits = sum(math.ceil(int(a.shape[0]) / 8) for a in state.stable)
    buf = sum(int(a.size * a.dtype.itemsize) for a in (state.val_x, state.val_y, state.sel_x))
    return {"masks": masks_nbytes(state.conn), "unit_states": unit_bits, "buffer": buf,
            "model": common.param_bytes(state.params)}


def result_extras(state: State) -> dict:
    """Phases per task, final p per task, stable units per layer, density per
    layer and lost growth budget (results.json "extra")."""
    static = state.static
    dens = {s.name: float(int(jnp.sum(state.conn[s.name])) / (s.rows * s.cols)) for s in static.specs}
    return {"nispa": {
        "phases_per_task": [int(v) for v in np.asarray(state.phases_per_task)],
        "final_p_per_task": [float(v) for v in np.asarray(state.final_p)],
        "stable_units_per_layer": {s.name: int(jnp.sum(st)) for s, st in zip(static.specs, state.stable)},
        "units_per_layer": {s.name: int(s.cols) for s in static.specs},
        "density_per_layer": dens,
        "target_density_per_layer": {s.name: s.density for s in static.specs},
        "connections_per_layer": layer_counts(state),
        "leftover_growth_budget": [int(v) for v in np.asarray(state.leftover)],
        "validation_split": "hash of image bytes, %d/1000 of each task" % static.val_permille,
        "task_il_rule": static.task_il_rule,
    }}


def _spec():
    from clj.methods.api import Capabilities, MethodSpec

    # step_info: the phase clock needs the in-task step, epoch length and task size;
    # early_stop: the stopping rule ends a task (metrics["task_done"]).
    def capabilities(config):
        return Capabilities(step_info=True, early_stop=True, static_task_info=True,
                            task_il_rule=task_il_rule(config))

    return MethodSpec(init=init, begin_task=begin_task, train_step=train_step, end_task=end_task,
                      predict=predict, capabilities=capabilities,
                      memory_bytes=memory_bytes, result_extras=result_extras, task_steps=task_steps)


SPEC = _spec()
