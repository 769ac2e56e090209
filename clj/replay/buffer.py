"""A fixed-capacity replay buffer in device arrays, with reservoir insertion.

Everything is a pure function of a :class:`Buffer` pytree, jit- and
vmap-able: insertion is vectorised over the batch (no Python loop over
examples) and reproduces the distribution of sequential reservoir sampling
(Vitter 1985, Algorithm R), as Mammoth's ``Buffer.add_data`` runs it:

* example number ``n`` of the stream (0-based, counting every example ever
  offered) goes to slot ``n`` while ``n < M``;
* afterwards it draws ``r`` uniform in ``[0, n]`` and replaces slot ``r`` if
  ``r < M``, else it is dropped.

Within one batch the draws are independent; when two examples of the batch
claim the same slot, the later one wins, exactly as the sequential rule would
leave it.  After ``N`` offers every example is in the buffer with probability
``M / N``.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct


@struct.dataclass
class Buffer:
    """Replay memory arrays.

    Attributes:
      x: uint8 [M, H, W, C] stored (non-augmented) images.
      y: int32 [M] labels.
      logits: float32 [M, K] network outputs at insertion (K = 0 when the
        method stores none).
      task_id: int32 [M] task of each example (-1 when unknown).
      num_seen: int32 [] number of stream examples offered so far.
    """

    x: jax.Array
    y: jax.Array
    logits: jax.Array
    task_id: jax.Array
    num_seen: jax.Array

    @property
    def capacity(self) -> int:
        return int(self.y.shape[-1])

    def size(self) -> jax.Array:
        """int32 []: number of filled slots, ``min(num_seen, M)``."""
        return jnp.minimum(self.num_seen, self.y.shape[-1])

    def is_empty(self) -> jax.Array:
        return self.num_seen == 0


def init_buffer(capacity: int, image_shape: tuple[int, ...], num_logits: int = 0) -> Buffer:
    """An empty buffer of ``capacity`` slots.

    Args:
      capacity: M >= 1.
      image_shape: (H, W, C) of the stored uint8 images.
      num_logits: K, the width of stored logits (0 = no logits).

    Raises:
      ValueError: capacity < 1.
    """
    if capacity < 1:
        raise ValueError(f"buffer capacity={capacity} is invalid: it must be >= 1.")
    return Buffer(
        x=jnp.zeros((capacity, *image_shape), jnp.uint8),
        y=jnp.zeros((capacity,), jnp.int32),
        logits=jnp.zeros((capacity, num_logits), jnp.float32),
        task_id=jnp.full((capacity,), -1, jnp.int32),
        num_seen=jnp.zeros((), jnp.int32),
    )


def buffer_nbytes(buf: Buffer) -> int:
    """Bytes of the buffer's arrays (images, labels, logits, task ids, counter)."""
    return int(sum(np.asarray(leaf).nbytes if not hasattr(leaf, "nbytes") else leaf.nbytes
                   for leaf in jax.tree_util.tree_leaves(buf)))


def reservoir_slots(rng: jax.Array, num_seen: jax.Array, batch: int, capacity: int,
                    valid: jax.Array | None = None) -> jax.Array:
    """Target slots of a batch under reservoir sampling, collisions resolved.

    Args:
      rng: PRNG key.
      num_seen: int32 [] examples offered before this batch.
      batch: B, the batch size (static).
      capacity: M (static).
      valid: optional bool [B]; invalid examples are not offered (they take
        no stream position and get no slot).

    Returns:
      int32 [B]: the slot each example is written to, or ``capacity`` when it
      is dropped (out of range, so a scatter with ``mode="drop"`` skips it).
      No two entries < capacity are equal; where two examples drew the same
      slot the later one keeps it.
    """
    if valid is None:
        valid = jnp.ones((batch,), bool)
    valid = valid.astype(bool)
    # Stream position of each valid example; invalid ones take none.
    pos = num_seen + jnp.cumsum(valid.astype(jnp.int32)) - 1
    # r ~ U{0, ..., pos}: floor(u * (pos + 1)) with u in [0, 1).
    u = jax.random.uniform(rng, (batch,), jnp.float32)
    r = jnp.minimum(jnp.floor(u * (pos + 1).astype(jnp.float32)).astype(jnp.int32), pos)
    slot = jnp.where(pos < capacity, pos, r)
    slot = jnp.where(valid & (slot < capacity), slot, capacity)
    # A later example of the batch writing the same slot overwrites this one.
    later = jnp.arange(batch)[None, :] > jnp.arange(batch)[:, None]
    clobbered = jnp.any(later & (slot[None, :] == slot[:, None]), axis=1)
    return jnp.where(clobbered, capacity, slot).astype(jnp.int32)


def reservoir_add(buf: Buffer, rng: jax.Array, x: jax.Array, y: jax.Array,
                  logits: jax.Array | None = None, task_id: jax.Array | None = None,
                  valid: jax.Array | None = None) -> Buffer:
    """Offers a batch to the buffer with reservoir sampling (module doc).

    Args:
      buf: the buffer.
      rng: PRNG key.
      x: uint8 [B, H, W, C] non-augmented images.
      y: int [B] labels.
      logits: float [B, K] (required when the buffer stores logits).
      task_id: int [B] or None (stored as -1).
      valid: bool [B] or None; invalid rows are not offered.

    Returns:
      The updated buffer; ``num_seen`` grows by the number of valid rows.
    """
    B = x.shape[0]
    M = buf.y.shape[0]
    slots = reservoir_slots(rng, buf.num_seen, B, M, valid)
    new = dict(
        x=buf.x.at[slots].set(x.astype(jnp.uint8), mode="drop"),
        y=buf.y.at[slots].set(y.astype(jnp.int32), mode="drop"),
        task_id=buf.task_id.at[slots].set(
            (jnp.full((B,), -1, jnp.int32) if task_id is None else task_id.astype(jnp.int32)),
            mode="drop"),
    )
    if buf.logits.shape[-1] > 0:
        if logits is None:
            raise ValueError("this buffer stores logits: pass logits=[B, K] to reservoir_add.")
        new["logits"] = buf.logits.at[slots].set(logits.astype(jnp.float32), mode="drop")
    n_valid = B if valid is None else jnp.sum(valid.astype(jnp.int32))
    return buf.replace(num_seen=buf.num_seen + n_valid, **new)


def sample_indices(buf: Buffer, rng: jax.Array, size: int) -> tuple[jax.Array, jax.Array]:
    """Draws ``size`` slots without replacement from the filled part.

    Mammoth's ``get_data``: ``size`` distinct indices uniformly from
    ``[0, min(num_seen, M))``; if fewer are filled, all of them.  Shapes are
    static, so when fewer than ``size`` are filled the draw is padded by
    repeating filled slots, and ``valid`` marks the distinct ones.

    Returns:
      (idx int32 [size], valid bool [size]).  When the buffer is empty every
      ``valid`` is False.
    """
    M = buf.y.shape[0]
    filled = buf.size()
    keys = jax.random.uniform(rng, (M,))
    keys = jnp.where(jnp.arange(M) < filled, keys, 2.0)  # unfilled slots sort last
    k = min(size, M)
    order = jnp.argsort(keys)[:k].astype(jnp.int32)
    if size > M:
        order = jnp.concatenate([order, jnp.zeros((size - M,), jnp.int32)])
    pos = jnp.arange(size)
    valid = pos < filled
    # Pad with the filled slots again (first ones of the draw).
    idx = jnp.where(valid, order, order[jnp.mod(pos, jnp.maximum(filled, 1))])
    return idx, valid


def gather(buf: Buffer, idx: jax.Array) -> dict:
    """The stored arrays at ``idx`` as a dict (x, y, logits, task_id)."""
    return {"x": buf.x[idx], "y": buf.y[idx], "logits": buf.logits[idx], "task_id": buf.task_id[idx]}
