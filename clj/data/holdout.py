"""A hold-out (validation) split of a task's training examples by a hash of
the image bytes, shared by NISPA (``docs/nispa.md``: 10 % of
each task's training examples never enter the loss) and the regularisation
baselines' early stopping.  The official code draws
a random 90/10 split per task; here an example's membership is a fixed 32-bit
hash of its image bytes, so it is the same in every epoch, seed and data
placement and needs no state.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

_HASH_SEED = 20220623


# ---------------------------------------------------------------- validation split
def _hash_coefs(d: int) -> np.ndarray:
    rs = np.random.default_rng(_HASH_SEED)
    return (rs.integers(1, 2 ** 32 - 1, size=d, dtype=np.uint64).astype(np.uint32) | np.uint32(1))


def _mix(h, mul):
    h = h ^ (h >> 16)
    h = h * mul(0x7FEB352D)
    h = h ^ (h >> 15)
    h = h * mul(0x846CA68B)
    return h ^ (h >> 16)


def is_val(x_raw: jax.Array, permille: int) -> jax.Array:
    """bool [B]: whether each uint8 image [B, ...] belongs to the validation
    split: a fixed 32-bit hash of its bytes, modulo 1000, below ``permille``.
    Deterministic across epochs and seeds; :func:`is_val_np` is its twin."""
    x = x_raw.reshape(x_raw.shape[0], -1).astype(jnp.uint32)
    c = jnp.asarray(_hash_coefs(x.shape[1]))
    h = jnp.sum((x + jnp.uint32(1)) * c[None, :], axis=1, dtype=jnp.uint32)
    h = _mix(h, jnp.uint32)
    return (h % jnp.uint32(1000)) < jnp.uint32(permille)


def is_val_np(x_raw: np.ndarray, permille: int) -> np.ndarray:
    """Numpy twin of :func:`is_val` (bit-identical)."""
    x = x_raw.reshape(x_raw.shape[0], -1).astype(np.uint32)
    c = _hash_coefs(x.shape[1])
    with np.errstate(over="ignore"):
        h = np.sum((x + np.uint32(1)) * c[None, :], axis=1, dtype=np.uint32)
        h = _mix(h, np.uint32)
    return (h % np.uint32(1000)) < np.uint32(permille)
