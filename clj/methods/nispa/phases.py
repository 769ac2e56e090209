"""NISPA's phase loop (``docs/nispa.md``, "A task, phase by phase" and
"Stopping and rollback"; paper §3.7-3.8): a task trains in phases of
``phase_epochs`` epochs; every epoch end keeps the best validation snapshot,
every phase end either stops (and rolls back) or selects candidate units and
rewires; and the step budget that sizes a task in whole phases.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from clj.errors import ConfigError
from clj.methods.nispa import units as nu
from clj.methods.nispa.rewiring import average_activations, rewire
from clj.methods import sections
from clj.methods.nispa import section as nispa_section
from clj.methods.nispa.state import PyTree, State, forward, tree_where


def phase_limit(k: float, tau_stop: float, max_phases: int | None = None) -> int:
    """The most phases a task can train under the official stopping rule
    (``docs/nispa.md``, "Stopping and rollback"): the first t >= 1 with
    p_t = 100 (1 + cos(pi t / k)) / 2 <= ``tau_stop`` (26 for k = 30,
    tau_stop = 5), capped by ``max_phases`` when given.  Computed in float32
    as :func:`clj.methods.nispa.units.tau` does.

    Raises:
      ConfigError: k <= 0, max_phases < 1, or p_t never reaches tau_stop and
        no ``max_phases`` bounds the task.
    """
    if not k > 0:
        raise ConfigError(f"nispa.k={k} is invalid: it must be > 0.")
    if max_phases is not None and int(max_phases) < 1:
        raise ConfigError(f"nispa.max_phases={max_phases} is invalid: it must be >= 1.")
    t = np.arange(1, int(math.ceil(2 * k)) + 2, dtype=np.float32)
    p = np.float32(50.0) * (np.float32(1.0) + np.cos(np.float32(np.pi) * t / np.float32(k)))
    hit = np.flatnonzero(p <= np.float32(tau_stop))
    if hit.size == 0 and max_phases is None:
        raise ConfigError(f"nispa.tau_stop={tau_stop} is never reached by the cosine schedule (k={k}); "
                          "set nispa.max_phases to bound a task.")
    limit = int(t[hit[0]]) if hit.size else int(max_phases)
    return min(limit, int(max_phases)) if max_phases is not None else limit


def task_steps(config, n_examples: int, batch_size: int, task_index: int, state_info=None) -> int:
    """Training steps of one task, in whole phases: ``phases * phase_epochs *
    ceil(n_examples / batch_size)`` with ``phases`` = :func:`phase_limit`
    (``config.nispa.k``, ``tau_stop``, ``max_phases``).  An epoch is
    ``ceil(n / B)`` steps as in the official loader (no ``drop_last``), so
    the last phase the official stopping rule can reach always completes;
    ``ceil(phases * epochs * n / B)`` would cut it short.  Host ints; the
    loop calls this through the method spec; ``task_index`` is unused (every
    task gets the same rule).

    Raises:
      ConfigError: n_examples < 1, batch_size < 1, phase_epochs < 1, or a bad
        schedule (see :func:`phase_limit`).
    """
    del task_index
    if int(n_examples) < 1:
        raise ConfigError(f"n_examples={n_examples} is invalid: a task needs >= 1 training example.")
    if int(batch_size) < 1:
        raise ConfigError(f"train.batch_size={batch_size} is invalid: it must be >= 1.")
    v = sections.block(config, nispa_section.NISPA)
    e = int(v["phase_epochs"])
    if e < 1:
        raise ConfigError(f"nispa.phase_epochs={e} is invalid: it must be >= 1.")
    mp = v["max_phases"]
    phases = phase_limit(float(v["k"]), float(v["tau_stop"]), None if mp is None else int(mp))
    return phases * e * (-(-int(n_examples) // int(batch_size)))


# ---------------------------------------------------------------- buffers / validation
def fill_buffers(state: State, x_raw, y, to_val, to_sel) -> State:
    """Appends the examples where ``to_val`` (bool [B]) to the validation
    buffer and those where ``to_sel`` to the selection buffer (uint8 images
    x_raw [B, ...], labels y [B]); full buffers drop the rest."""
    def put(buf, n, sel, vals):
        cap = buf.shape[0]
        pos = n + jnp.cumsum(sel.astype(jnp.int32)) - 1
        pos = jnp.where(sel & (pos < cap), pos, cap)
        return buf.at[pos].set(vals, mode="drop"), jnp.minimum(n + jnp.sum(sel, dtype=jnp.int32), cap)

    val_x, _ = put(state.val_x, state.val_n, to_val, x_raw)
    val_y, val_n = put(state.val_y, state.val_n, to_val, y)
    sel_x, sel_n = put(state.sel_x, state.sel_n, to_sel, x_raw)
    return state.replace(val_x=val_x, val_y=val_y, val_n=val_n, sel_x=sel_x, sel_n=sel_n)


def val_accuracy(state: State, params: PyTree) -> jax.Array:
    """Top-1 accuracy (percent, float32 []) on the validation buffer, logits
    multiplied by the task's class mask and argmax over all classes (``docs/nispa.md``,
    "Output masking")."""
    static = state.static
    E = static.chunk
    xs = state.val_x.reshape(-1, E, *state.val_x.shape[1:])
    ys = state.val_y.reshape(-1, E)
    idx = jnp.arange(xs.shape[0] * E, dtype=jnp.int32).reshape(-1, E)

    def body(inp):
        xb, yb, ib = inp
        logits, _ = forward(static, params, state.conn, static.augment(xb, None, train=False))
        ok = jnp.argmax(logits * state.class_mask, -1) == yb
        return jnp.sum(ok & (ib < state.val_n), dtype=jnp.int32)

    correct = jnp.sum(jax.lax.map(body, (xs, ys, idx)))
    return 100.0 * correct.astype(jnp.float32) / jnp.maximum(state.val_n, 1).astype(jnp.float32)


# ---------------------------------------------------------------- epoch and phase ends
def epoch_end(state: State) -> State:
    """Keeps the epoch's params as the phase's best snapshot when its
    validation accuracy beats the best so far (``docs/nispa.md``, "A task,
    phase by phase")."""
    acc = val_accuracy(state, state.params)
    better = acc > state.best_acc
    return state.replace(best_params=tree_where(better, state.params, state.best_params),
                         best_acc=jnp.maximum(acc, state.best_acc), have_best=state.have_best | better)


def phase_end(state: State, rng: jax.Array) -> State:
    """The end of a phase (``docs/nispa.md``, "A task, phase by phase"): stop
    test and rollback, or selection + rewiring of the best-epoch snapshot; Adam
    is re-created.  A stopped state is returned unchanged."""
    static = state.static
    t = state.phase + 1
    p = nu.tau(t, static.k)
    snap = tree_where(state.have_best, state.best_params, state.params)
    acc_new = jnp.where(state.have_best, state.best_acc, 0.0)
    stop = ((acc_new < state.acc_prev - static.a_f) & (t >= static.min_phases)) | (p <= static.tau_stop)

    # Go on: select on the snapshot, rewire a copy of it.
    acts = average_activations(state, snap, state.conn)
    hidden = tuple(st | nu.select_units(a, p) for st, a in zip(state.stable[:-1], acts))
    S_new = hidden + (state.seen,)
    p2, c2, lo = rewire(static, rng, snap, state.conn, S_new)
    go = state.replace(params=p2, conn=c2, prev_params=snap, prev_conn=state.conn, prev_S=state.cur_S,
                       prev_p=state.cur_p, prev_valid=jnp.ones((), bool), cur_S=S_new, cur_p=p,
                       acc_prev=jnp.maximum(state.acc_prev, acc_new), leftover=state.leftover + lo)
    # Stop: keep the previous phase's snapshot (end_task applies it).
    pv = state.prev_valid
    halt = state.replace(stopped=jnp.ones((), bool), params=snap,
                         prev_params=tree_where(pv, state.prev_params, snap),
                         prev_conn=tree_where(pv, state.prev_conn, state.conn),
                         prev_S=tree_where(pv, state.prev_S, state.cur_S),
                         prev_p=jnp.where(pv, state.prev_p, state.cur_p), prev_valid=jnp.ones((), bool))
    new = tree_where(stop, halt, go)
    new = new.replace(phase=t, best_acc=jnp.zeros((), jnp.float32), have_best=jnp.zeros((), bool),
                      best_params=new.params, opt_state=static.tx.init(new.params))
    return tree_where(state.stopped, state, new)
