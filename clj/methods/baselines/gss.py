"""GSS: gradient-based sample selection (the greedy variant).

Source: Aljundi, Lin, Goujaud, Bengio, "Gradient based sample selection for
online continual learning", NeurIPS 2019, Sec. 3.3 and Alg. 2 (GSS-Greedy);
the protocol is Mammoth's ``gss`` model (``models/gss.py`` with its
``utils/gss_buffer.py``), which this module follows:

* a step runs ``gss.batch_num`` optimizer steps on the same stream batch,
  each concatenated with its own draw of ``replay.minibatch_size`` memory
  examples (augmented) in one forward pass and one cross-entropy (ER's loss);
  the draws are consecutive chunks of one random permutation of the filled
  slots per stream batch, each chunk stopping at the end of the permutation,
  which then starts over (Mammoth's ``fathom``);
* after the update, the non-augmented stream batch is offered to the memory.
  ``gss.gss_minibatch_size`` distinct memory examples are drawn at random
  (fewer while fewer are stored); with the network in evaluation mode, the
  gradient of each of them (its own cross-entropy, all parameters flattened),
  the gradient of the stream batch's mean cross-entropy ``g_B`` and the
  gradient of each stream example ``g_i`` are taken, and a score is the
  largest cosine similarity with the drawn memory gradients, plus 1
  (:func:`gss_scores`; in [0, 2], higher = more redundant);
* the examples are then offered one after the other (:func:`gss_insert`):
  while the memory has room the example takes the next slot, with the batch's
  score ``c_B`` as its stored score; once full, if the gate score is < 1
  (``scoring='batch'``: ``c_B``, Mammoth; ``'example'``: the example's own
  ``c_i``, the paper), a slot ``k`` is drawn with probability proportional to
  the stored scores and replaced, score ``c_i``, with probability
  ``C_k / (C_k + c_i)``; otherwise the example is dropped.  Under
  ``scoring='example'`` the example's own score is also what a filling slot
  stores.  Before the memory holds anything the score is 0.1 (Mammoth).

Per-example gradients are ``jax.vmap(jax.grad)`` over the fixed-size stream
batch and memory draw; padded draw rows (fewer stored than drawn) are masked
out of the maximum.  The cosine is ``a.b / max(|a| |b|, 1e-8)`` computed with
element-wise products and sums in float32.

Where it differs from Mammoth: random streams (clj's PRNG); the memory
examples are scored after the scenario's normalisation (Mammoth feeds the
stored, un-normalised tensors; the same on Seq-MNIST, where nothing is
normalised).

Config: the shared ``replay`` block (``buffer_size``, ``minibatch_size``) and
the ``gss`` block.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct
from jax.flatten_util import ravel_pytree

from clj.data.augment import Augment
from clj.methods import common, sections
from clj.methods.baselines.rehearsal import Draw, objective_loss
from clj.methods.baselines.section import GSS, REPLAY
from clj.methods.common import ModelState, TaskInfo
from clj.replay.buffer import Buffer, buffer_nbytes, init_buffer, sample_indices

EMPTY_SCORE = 0.1
"""The score of the first batch, offered to an empty memory (Mammoth)."""


@dataclasses.dataclass(frozen=True)
class Static:
    """Static hyperparameters (hashable).

    Attributes:
      augment: training transform of stream and replayed examples.
      buffer_size: M, memory slots.
      minibatch_size: replayed examples per optimizer step.
      gss_minibatch_size: memory examples whose gradients score a candidate.
      batch_num: optimizer steps per stream batch.
      scoring: ``batch`` or ``example`` (module doc).
    """

    augment: Augment = Augment()
    buffer_size: int = 200
    minibatch_size: int = 10
    gss_minibatch_size: int = 10
    batch_num: int = 1
    scoring: str = "batch"


@struct.dataclass
class State:
    """GSS state.

    Attributes:
      net: the network (params, BN statistics, optimizer state, counters).
      buffer: the memory (images, labels, task ids; ``num_seen`` counts the
        stream examples offered).
      scores: float32 [M], the stored score of each slot.
      swept: the sweepable hyperparameters (:data:`SWEEPABLE`).
      static: the static (hashable) hyperparameters of the run.
    """

    net: ModelState
    buffer: Buffer
    scores: jax.Array
    swept: dict
    static: Static = struct.field(pytree_node=False)


SWEEPABLE = ("optim.lr",)
"""Config fields carried as arrays in ``State.swept`` (no shape depends on them)."""


def init(rng: jax.Array, config, scenario) -> State:
    """A fresh State: network from ``config.model``, optimizer from
    ``config.optim``, an empty memory of ``replay.buffer_size`` slots.

    Raises:
      ConfigError: a bad ``replay`` or ``gss`` block.
    """
    r = sections.block(config, REPLAY)
    g = sections.block(config, GSS)
    static = Static(augment=common.augment_from_config(config.augment, scenario), buffer_size=int(r.buffer_size),
                    minibatch_size=int(r.minibatch_size),
                    gss_minibatch_size=int(g.gss_minibatch_size) or int(r.minibatch_size),
                    batch_num=int(g.batch_num), scoring=g.scoring)
    model = common.model_from_config(config.model, scenario.num_classes)
    net = common.init_model_state(rng, model, common.optim_spec_from_config(config.optim), scenario.image_shape)
    return State(net=net, buffer=init_buffer(static.buffer_size, scenario.image_shape, 0),
                 scores=jnp.zeros((static.buffer_size,), jnp.float32),
                 swept={"optim.lr": jnp.float32(config.optim.lr)}, static=static)


def begin_task(state: State, task: TaskInfo) -> State:
    """Resets the optimizer state and the in-task counters."""
    return state.replace(net=common.begin_task_model(state.net, task))


# ------------------------------------------------------------------ scores
def flat_grad(net: ModelState, x: jax.Array, y: jax.Array) -> jax.Array:
    """float32 [P]: the gradient of the mean cross-entropy of ``x`` float32
    [n, H, W, C], ``y`` int32 [n] w.r.t. all parameters, flattened; network
    in evaluation mode (Mammoth's ``get_grads``)."""
    def loss(params):
        logits, _ = common.forward(net, params, net.batch_stats, x, train=False)
        return common.cross_entropy(logits, y)

    return ravel_pytree(jax.grad(loss)(net.params))[0].astype(jnp.float32)


def per_example_grads(net: ModelState, x: jax.Array, y: jax.Array) -> jax.Array:
    """float32 [n, P]: each example's own :func:`flat_grad`
    (``jax.vmap(jax.grad)``)."""
    return jax.vmap(lambda xi, yi: flat_grad(net, xi[None], yi[None]))(x, y)


def max_cosine_score(g: jax.Array, G: jax.Array, valid: jax.Array) -> jax.Array:
    """GSS's score of one gradient (Aljundi et al. 2019, Alg. 2):
    ``max_j cos(g, G_j) + 1`` over the rows with ``valid`` (float32 [], in
    [0, 2]); :data:`EMPTY_SCORE` when no row is valid.

    Args:
      g: float32 [P]; G: float32 [n, P]; valid: bool [n].
    """
    dots = jnp.sum(G * g[None, :], axis=1)
    norms = jnp.sqrt(jnp.sum(G * G, axis=1)) * jnp.sqrt(jnp.sum(g * g))
    cos = dots / jnp.maximum(norms, 1e-8)
    best = jnp.max(jnp.where(valid, cos, -jnp.inf))
    return jnp.where(jnp.any(valid), best + 1.0, EMPTY_SCORE).astype(jnp.float32)


def gss_scores(net: ModelState, x: jax.Array, y: jax.Array, x_mem: jax.Array, y_mem: jax.Array,
               mem_valid: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The scores of a stream batch against a memory draw.

    Args:
      net: the network (evaluation mode).
      x: float32 [B, H, W, C] normalised, non-augmented stream images; y:
        int32 [B].
      x_mem: float32 [n, H, W, C] the drawn memory examples; y_mem: int32
        [n]; mem_valid: bool [n] the real rows of the draw.

    Returns:
      ``(c_batch float32 [], c_each float32 [B])``: the score of the batch's
      mean-loss gradient and of each example's gradient
      (:func:`max_cosine_score`).
    """
    G = per_example_grads(net, x_mem, y_mem)
    c_batch = max_cosine_score(flat_grad(net, x, y), G, mem_valid)
    c_each = jax.vmap(lambda g: max_cosine_score(g, G, mem_valid))(per_example_grads(net, x, y))
    return c_batch, c_each


def gss_insert(buf: Buffer, scores: jax.Array, rng: jax.Array, x: jax.Array, y: jax.Array, c_batch: jax.Array,
               c_each: jax.Array, scoring: str = "batch", task_id: jax.Array | None = None,
               valid: jax.Array | None = None) -> tuple[Buffer, jax.Array, jax.Array]:
    """Offers a batch to the memory one example after the other (module doc;
    Mammoth's ``functional_reservoir``).

    Args:
      buf: the memory; scores: float32 [M] its stored scores.
      rng: PRNG key of the slot draws and the acceptance draws.
      x: uint8 [B, H, W, C]; y: int [B].
      c_batch: float32 [] the batch's score; c_each: float32 [B] each
        example's score.
      scoring: ``batch`` (gate on ``c_batch``, store ``c_batch`` while
        filling) or ``example`` (``c_each`` for both).
      task_id: int [B] or None (stored as -1); valid: bool [B] or None.

    Returns:
      (memory, scores, int32 [B] the slot each example took, ``M`` when
      dropped).
    """
    B, M = y.shape[0], buf.y.shape[0]
    valid = jnp.ones((B,), bool) if valid is None else valid.astype(bool)
    tid = jnp.full((B,), -1, jnp.int32) if task_id is None else task_id.astype(jnp.int32)
    per_example = scoring == "example"

    def one(carry, inp):
        b, s = carry
        xi, yi, ti, ci, vi, ki = inp
        k_pick, k_acc = jax.random.split(ki)
        total = jnp.sum(s)
        logp = jnp.where(total > 0, jnp.log(s), 0.0)  # proportional to the scores (uniform if all 0)
        pick = jax.random.categorical(k_pick, logp).astype(jnp.int32)
        gate = (ci if per_example else c_batch) < 1.0
        accept = jax.random.uniform(k_acc) < s[pick] / (s[pick] + ci)
        n = b.num_seen
        slot = jnp.where(n < M, n, jnp.where(gate & accept, pick, M))
        slot = jnp.where(vi, slot, M).astype(jnp.int32)
        new_score = jnp.where(n < M, ci if per_example else c_batch, ci)
        b = b.replace(x=b.x.at[slot].set(xi.astype(jnp.uint8), mode="drop"),
                      y=b.y.at[slot].set(yi.astype(jnp.int32), mode="drop"),
                      task_id=b.task_id.at[slot].set(ti, mode="drop"),
                      num_seen=b.num_seen + vi.astype(jnp.int32))
        s = s.at[slot].set(new_score, mode="drop")
        return (b, s), slot

    (buf, scores), slots = jax.lax.scan(one, (buf, scores), (x, y.astype(jnp.int32), tid, c_each.astype(jnp.float32),
                                                             valid, jax.random.split(rng, B)))
    return buf, scores, slots


# ------------------------------------------------------------------ the step
def _chunks(buf: Buffer, rng: jax.Array, size: int, count: int) -> list[tuple[jax.Array, jax.Array]]:
    """``count`` consecutive chunks of up to ``size`` slots of one random
    permutation of the filled slots (Mammoth's ``fathom``): each chunk stops
    at the end of the permutation, and the next one starts over.  Returns
    ``[(idx int32 [size], valid bool [size])]``; padding rows repeat filled
    slots."""
    M = buf.y.shape[0]
    filled = buf.size()
    order = jnp.argsort(jnp.where(jnp.arange(M) < filled, jax.random.uniform(rng, (M,)), 2.0)).astype(jnp.int32)
    out, start = [], jnp.zeros((), jnp.int32)
    for _ in range(count):
        n = jnp.clip(filled - start, 0, size)
        pos = start + jnp.arange(size)
        valid = jnp.arange(size) < n
        idx = order[jnp.where(valid, pos, pos % jnp.maximum(filled, 1)) % M]
        out.append((idx, valid))
        start = start + n
        start = jnp.where(start >= filled, 0, start)
    return out


def train_step(state: State, batch: dict, rng: jax.Array):
    """One GSS step (module doc): ``batch_num`` replay updates, then the
    scored insertion of the batch.

    Args:
      state: the State.
      batch: ``x`` float32 [B, H, W, C] augmented stream images, ``x_raw``
        uint8 [B, H, W, C] the same before augmentation, ``y`` int32 [B],
        ``task_id`` int32 [B] (-1 when hidden).
      rng: PRNG key of the memory draws, augmentation and insertion.

    Returns:
      (new State, metrics: ``loss`` (the last update's), ``acc`` (stream rows
      of the first update), ``score`` (the batch's score ``c_B``),
      ``memory`` (filled slots)).
    """
    st, net, buf = state.static, state.net, state.buffer
    k_perm, k_sub, k_ins, k_aug = jax.random.split(rng, 4)
    empty = buf.is_empty()
    y = batch["y"]
    acc = None
    for j, (idx, valid) in enumerate(_chunks(buf, k_perm, st.minibatch_size, st.batch_num)):
        draw = Draw(st.augment(buf.x[idx], jax.random.fold_in(k_aug, j), train=True), buf.y[idx], None, valid)

        def apply_fn(params, batch_stats, x, net=net):
            return common.forward(net, params, batch_stats, x, train=True)

        def loss_fn(params, net=net, draw=draw):
            return objective_loss(params, objective="er", apply_fn=apply_fn, batch_stats=net.batch_stats,
                                  inputs=batch["x"], y=y, draws=[draw], alpha=0.0, beta=0.0, empty=empty)

        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(net.params)
        net = common.apply_gradients(net, grads, aux["batch_stats"], base_lr=state.swept["optim.lr"])
        if acc is None:
            acc = common.accuracy(aux["logits"], y)
    # scores with the updated network, on the non-augmented stream batch
    sub_idx, sub_valid = sample_indices(buf, k_sub, st.gss_minibatch_size)
    x_stream = st.augment(batch["x_raw"], None, train=False)
    x_mem = st.augment(buf.x[sub_idx], None, train=False)
    c_batch, c_each = gss_scores(net, x_stream, y, x_mem, buf.y[sub_idx], sub_valid)
    buf, scores, _ = gss_insert(buf, state.scores, k_ins, batch["x_raw"], y, c_batch, c_each, st.scoring,
                                task_id=batch.get("task_id"))
    metrics = {"loss": loss, "acc": acc, "score": c_batch, "memory": buf.size().astype(jnp.float32)}
    return state.replace(net=net, buffer=buf, scores=scores), metrics


def end_task(state: State, task_data) -> State:
    del task_data
    return state


def predict(state: State, x: jax.Array, task_id: jax.Array | None = None) -> jax.Array:
    """Logits float32 [B, C] of normalised x float32 [B, H, W, C] (BN in eval mode)."""
    del task_id
    logits, _ = common.forward(state.net, state.net.params, state.net.batch_stats, x, train=False)
    return logits


def memory_bytes(state: State) -> dict:
    """Bytes of the memory (with its scores) and of the model's parameters."""
    return {"buffer": buffer_nbytes(state.buffer) + int(state.scores.size) * 4,
            "model": common.param_bytes(state.net.params)}


def _spec():
    from clj.methods.api import MethodSpec

    return MethodSpec(init=init, begin_task=begin_task, train_step=train_step, end_task=end_task,
                      predict=predict, memory_bytes=memory_bytes, sweepable=SWEEPABLE)


SPEC = _spec()
