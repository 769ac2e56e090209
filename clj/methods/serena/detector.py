"""SERENA's drift detector (``docs/serena.md``, "The drift detector"): a
window of W values of a prequential-accuracy statistic; a cell closes when
the newest value falls below ``threshold`` x the window mean.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import jax.numpy as jnp

if TYPE_CHECKING:
    from clj.methods.serena.cells import State


def reset_detector(state: State, counters: bool) -> State:
    """An empty window (and, with ``counters``, zero running-accuracy counters)."""
    z = jnp.zeros((), jnp.int32)
    st = state.replace(win=jnp.zeros_like(state.win), win_count=z, win_pos=z, ema=jnp.zeros((), jnp.float32))
    return st.replace(correct=z, seen=z) if counters else st


def detector_push(state: State, n_correct: jax.Array, n: int, new_task: jax.Array):
    """Updates the statistic with one batch and decides whether to fire.

    Statistic c (percent), by ``static.detector`` (``docs/serena.md``, "The drift
    detector"):
    ``running_since_task_start``: 100 * correct / seen, counters reset by
    ``new_task``; ``running_since_detection``: the same, reset by detection;
    ``batch_acc``: the batch accuracy; ``ema_acc``: an exponential moving
    average of it with decay ``static.ema_decay`` (first value after a reset =
    the batch accuracy).  c is pushed into the window; once it holds W values
    pushed after c's predecessors (``win_count > W``), fire iff
    ``c < threshold * mean(last W values, c included)`` and the mean is at
    least ``static.min_window_mean``.

    Returns:
      (state, fire bool [], c float32 []).
    """
    static = state.static
    W = static.window
    correct, seen = state.correct, state.seen
    if static.detector == "running_since_task_start":
        correct = jnp.where(new_task, 0, correct)
        seen = jnp.where(new_task, 0, seen)
    correct = correct + n_correct.astype(jnp.int32)
    seen = seen + n
    batch_acc = 100.0 * n_correct.astype(jnp.float32) / n
    if static.detector in ("running_since_task_start", "running_since_detection"):
        c = 100.0 * correct.astype(jnp.float32) / jnp.maximum(seen, 1).astype(jnp.float32)
    elif static.detector == "batch_acc":
        c = batch_acc
    else:
        d = static.ema_decay
        c = jnp.where(state.win_count == 0, batch_acc, d * state.ema + (1 - d) * batch_acc)
    win = state.win.at[state.win_pos].set(c)
    count = jnp.minimum(state.win_count + 1, W + 1)
    mean = jnp.sum(win) / W
    fire = (count > W) & (c < static.threshold * mean) & (mean >= static.min_window_mean)
    st = state.replace(win=win, win_count=count, win_pos=(state.win_pos + 1) % W, correct=correct, seen=seen,
                       ema=c)
    return st, fire, c
