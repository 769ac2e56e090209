"""What NISPA's two sparse baselines (STL, :mod:`clj.methods.nispa.stl`;
CLNP, :mod:`clj.methods.nispa.clnp`) share with each other: whole-epoch task
budgets, the hold-out buffer filled during a task's first epoch, and the
accuracy on it with the official output masking (``docs/nispa.md``, "STL and
CLNP: what they share").

The NISPA authors' baseline scripts split each task's training data 90/10,
train on the 90 %, score the 10 % after every epoch and keep the network of
the best epoch (a strictly higher accuracy replaces it).  Here, as for NISPA
itself, the 10 % is chosen by a fixed hash of the image bytes
(:func:`clj.data.holdout.is_val`); its examples never enter the loss.
"""
from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from clj.data.holdout import is_val_np
from clj.errors import ConfigError


def task_steps(config, n_examples: int, batch_size: int, task_index: int, state_info=None) -> int:
    """Training steps of a task in whole epochs, ``train.epochs * ceil(n / B)``
    (host ints), so every epoch end (the best-epoch check) falls on a step,
    as in the authors' loader (no ``drop_last``).

    Raises:
      ConfigError: n_examples < 1, batch_size < 1, or train.epochs not a
        whole number >= 1.
    """
    del task_index, state_info
    if int(n_examples) < 1:
        raise ConfigError(f"n_examples={n_examples} is invalid: a task needs >= 1 training example.")
    if int(batch_size) < 1:
        raise ConfigError(f"train.batch_size={batch_size} is invalid: it must be >= 1.")
    e = float(config.train.epochs)
    if e < 1 or e != int(e):
        raise ConfigError(f"train.epochs={config.train.epochs} is invalid: it must be a whole number >= 1.")
    return int(e) * (-(-int(n_examples) // int(batch_size)))


def val_capacity(scenario, permille: int, chunk: int) -> tuple[int, int]:
    """(capacity, chunk): the largest task's hold-out count rounded up to
    whole evaluation chunks of at most ``chunk`` examples (host ints; the
    hash split is deterministic, so the count is exact)."""
    nv = max(int(is_val_np(scenario.x_train[t.train_idx], permille).sum()) for t in scenario.tasks)
    nv = max(nv, 1)
    chunk = max(1, min(int(chunk), nv))
    return math.ceil(nv / chunk) * chunk, chunk


def fill(val_x: jax.Array, val_y: jax.Array, val_n: jax.Array, x_raw: jax.Array, y: jax.Array,
         sel: jax.Array):
    """Appends the examples where ``sel`` (bool [B]) to the hold-out buffer
    (uint8 ``val_x`` [cap, ...], int32 ``val_y`` [cap], fill ``val_n``
    int32 []); a full buffer drops the rest.  Returns the three new arrays."""
    cap = val_x.shape[0]
    pos = val_n + jnp.cumsum(sel.astype(jnp.int32)) - 1
    pos = jnp.where(sel & (pos < cap), pos, cap)
    return (val_x.at[pos].set(x_raw, mode="drop"), val_y.at[pos].set(y, mode="drop"),
            jnp.minimum(val_n + jnp.sum(sel, dtype=jnp.int32), cap))


def collect(state, batch: dict, permille: int):
    """Holds out this step's validation examples during the task's first epoch.

    The examples whose bytes hash below ``permille`` (:func:`clj.data.holdout.is_val`)
    are the hold-out set; during the first epoch (``batch["step"] <
    batch["steps_per_epoch"]``) the real ones (not the padding past
    ``batch["task_size"]``) are appended to ``state.val_x`` / ``val_y`` /
    ``val_n`` (:func:`fill`).

    Args:
      state: a State with ``val_x`` uint8 [cap, H, W, C], ``val_y`` int32 [cap], ``val_n`` int32 [].
      batch: the step's batch (``x_raw``, ``y``, ``step``, ``steps_per_epoch``, ``task_size``).
      permille: the hold-out share in thousandths.

    Returns:
      ``(state, val)``: the State with the buffer filled and ``val`` bool [B],
      the batch's hold-out examples (they never enter the loss).
    """
    from clj.data.holdout import is_val

    xr, y = batch["x_raw"], batch["y"]
    B = y.shape[0]
    step, spe = batch["step"], batch["steps_per_epoch"]
    val = is_val(xr, permille)
    first = (step * B + jnp.arange(B, dtype=jnp.int32)) < batch["task_size"]

    def put(s):
        vx, vy, vn = fill(s.val_x, s.val_y, s.val_n, xr, y, val & first)
        return s.replace(val_x=vx, val_y=vy, val_n=vn)

    return jax.lax.cond(step < spe, put, lambda s: s, state), val


def masked_accuracy(logits_fn, val_x: jax.Array, val_y: jax.Array, val_n: jax.Array,
                    class_mask: jax.Array, chunk: int) -> jax.Array:
    """Top-1 accuracy (percent, float32 []) of ``logits_fn(x_raw) -> float32
    [E, C]`` on the first ``val_n`` buffer rows, with the logits multiplied by
    the task's 0/1 ``class_mask`` [C] and the argmax over all classes (the
    official output masking, ``docs/nispa.md``, "Output masking").  The
    buffer capacity must be a multiple of ``chunk``."""
    xs = val_x.reshape(-1, chunk, *val_x.shape[1:])
    ys = val_y.reshape(-1, chunk)
    idx = jnp.arange(xs.shape[0] * chunk, dtype=jnp.int32).reshape(-1, chunk)

    def body(inp):
        xb, yb, ib = inp
        ok = jnp.argmax(logits_fn(xb) * class_mask, -1) == yb
        return jnp.sum(ok & (ib < val_n), dtype=jnp.int32)

    correct = jnp.sum(jax.lax.map(body, (xs, ys, idx)))
    return 100.0 * correct.astype(jnp.float32) / jnp.maximum(val_n, 1).astype(jnp.float32)
