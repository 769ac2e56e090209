"""ER-ACE: experience replay with asymmetric cross-entropy.

Source: Caccia et al., "New Insights on Reducing Abrupt Representation Change
in Online Continual Learning", ICLR 2022 (Sec. 4, the ER-AML / ER-ACE
objectives), as Mammoth's ``models/er_ace.py`` runs it (``docs/baselines.md``,
"ER, DER, DER++ and ER-ACE as Mammoth runs them"):

* the stream cross-entropy is computed over a **mask** of the logits: the
  classes present in the current batch, plus every class at or above the
  largest label seen so far (kept open while that label is below C - 1);
  masked logits are set to ``finfo(float32).min`` (not -inf);
* the mask is applied only from the second task on (no masking in task 0);
* from the second task on (task counter > 0, not "buffer non-empty") a replay
  draw of ``minibatch_size`` examples is forwarded **separately** (its own
  BatchNorm batch) and adds an **unmasked** cross-entropy;
* one optimiser step, then the non-augmented stream examples and their labels
  go into the reservoir buffer.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
from flax import struct

from clj.data.augment import Augment
from clj.methods import common, sections
from clj.methods.baselines.section import REPLAY
from clj.methods.common import ModelState, TaskInfo
from clj.methods.baselines.rehearsal import Draw
from clj.replay.buffer import Buffer, buffer_nbytes, init_buffer, reservoir_add, sample_indices


@dataclasses.dataclass(frozen=True)
class Static:
    """Static hyperparameters (hashable).

    Attributes:
      augment: training transform of stream and replayed examples.
      buffer_size: M, replay slots.
      minibatch_size: m, examples per replay draw.
    """

    augment: Augment = Augment()
    buffer_size: int = 200
    minibatch_size: int = 32


@struct.dataclass
class State:
    """ER-ACE state.

    Attributes:
      net: network, BN statistics, optimiser state, counters.
      buffer: reservoir buffer (images, labels; no logits).
      seen: bool [C], the labels met in the stream so far.
      task: int32 [], index of the current task (replay and masking from 1 on).
      swept: the sweepable hyperparameters (:data:`SWEEPABLE`) as float32 []
        arrays, so a grid of them is a vmapped axis.
      static: the static (hashable) hyperparameters of the run.
    """

    net: ModelState
    buffer: Buffer
    seen: jax.Array
    task: jax.Array
    swept: dict
    static: Static = struct.field(pytree_node=False)


SWEEPABLE = ("optim.lr",)
"""Config fields carried as arrays in ``State.swept`` (no shape depends on them)."""


def init(rng: jax.Array, config, scenario) -> State:
    """A fresh ER-ACE State: network from ``config.model``, optimiser from
    ``config.optim``, an empty buffer of ``config.replay.buffer_size`` slots.

    Raises:
      ConfigError (a ValueError): a bad ``config.replay`` block (the REPLAY section's check).
    """
    r = sections.block(config, REPLAY)
    static = Static(augment=common.augment_from_config(config.augment, scenario),
                    buffer_size=int(r.buffer_size), minibatch_size=int(r.minibatch_size))
    model = common.model_from_config(config.model, scenario.num_classes)
    net = common.init_model_state(rng, model, common.optim_spec_from_config(config.optim), scenario.image_shape)
    return State(net=net, buffer=init_buffer(static.buffer_size, scenario.image_shape, 0),
                 seen=jnp.zeros((scenario.num_classes,), bool), task=jnp.zeros((), jnp.int32),
                 swept={"optim.lr": jnp.float32(config.optim.lr)}, static=static)


def begin_task(state: State, task: TaskInfo) -> State:
    """Resets the optimiser and sets the task counter to ``task.task_id``."""
    return state.replace(net=common.begin_task_model(state.net, task), task=jnp.asarray(task.task_id, jnp.int32))


def end_task(state: State, task_data) -> State:
    del task_data
    return state


def ace_mask(seen: jax.Array, labels: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The ACE logit mask of a stream batch.

    Args:
      seen: bool [C], labels seen before this batch.
      labels: int32 [B], the batch's labels.

    Returns:
      (active bool [C], new_seen bool [C]): ``active[c]`` is True when class c
      is present in the batch, or when c >= max(new_seen) and
      max(new_seen) < C - 1 (Mammoth's rule: columns from the largest seen
      label on stay open).
    """
    C = seen.shape[0]
    present = jnp.zeros((C,), bool).at[labels].set(True)
    new_seen = seen | present
    cols = jnp.arange(C)
    max_seen = jnp.max(jnp.where(new_seen, cols, -1))
    open_tail = (cols >= max_seen) & (max_seen < C - 1)
    return present | open_tail, new_seen


def masked_logits(logits: jax.Array, active: jax.Array, apply: jax.Array) -> jax.Array:
    """``logits`` with inactive columns set to ``finfo(float32).min`` when
    ``apply`` (bool []) is True; unchanged otherwise.  float32 [B, C]."""
    logits = logits.astype(jnp.float32)
    fill = jnp.finfo(jnp.float32).min
    return jnp.where(apply & ~active[None, :], fill, logits)


def predict(state: State, x: jax.Array, task_id: jax.Array | None = None) -> jax.Array:
    """Logits float32 [B, C] of normalised x float32 [B, H, W, C] (BN in eval mode)."""
    del task_id
    logits, _ = common.forward(state.net, state.net.params, state.net.batch_stats, x, train=False)
    return logits


def ace_loss(params, *, apply_fn: Callable, batch_stats, inputs, y: jax.Array, draw: Draw, active: jax.Array,
             replay_on: jax.Array):
    """The ER-ACE loss (module doc) on a stream batch and one replay draw; a
    pure function of ``params`` (the one positional argument) for
    ``jax.grad``; every other argument is named.

    Args:
      params: the network's parameters (differentiated).
      apply_fn: ``(params, batch_stats, inputs) -> (logits float32 [n, C],
        new batch_stats)``, the network in training mode (each call is its own
        BatchNorm batch).
      batch_stats: the network's BatchNorm statistics.
      inputs: the stream batch's inputs (leading axis B); y: int32 [B].
      draw: the replay draw (:class:`clj.methods.baselines.rehearsal.Draw`; its
        ``logits`` are not used).
      active: bool [C], the ACE mask (:func:`ace_mask`).
      replay_on: bool [], task > 0: the mask applies and the draw is replayed
        (its own forward pass, unmasked CE).

    Returns:
      (loss float32 [], {"batch_stats", "logits" float32 [B, C] of the stream,
      "loss_stream", "loss_replay" float32 []}).
    """
    logits, bs = apply_fn(params, batch_stats, inputs)
    l_s = common.cross_entropy(masked_logits(logits, active, replay_on), y)

    def replay(bs_in):
        out, bs2 = apply_fn(params, bs_in, draw.inputs)
        return common.cross_entropy(out, draw.y, draw.valid), bs2

    def no_replay(bs_in):
        return jnp.zeros((), jnp.float32), bs_in

    l_r, bs = jax.lax.cond(replay_on, replay, no_replay, bs)
    return l_s + l_r, {"batch_stats": bs, "logits": logits, "loss_stream": l_s, "loss_replay": l_r}


def train_step(state: State, batch: dict, rng: jax.Array):
    """One ER-ACE step (module doc; loss :func:`ace_loss`).

    Args:
      state: the State.
      batch: ``x`` float32 [B, H, W, C] augmented stream images, ``x_raw``
        uint8 [B, H, W, C], ``y`` int32 [B], ``task_id`` int32 [B].
      rng: PRNG key (replay draw, its augmentation, reservoir insertion).

    Returns:
      (new State, metrics: ``loss``, ``loss_stream``, ``loss_replay``, ``acc``).
    """
    static, net = state.static, state.net
    k_draw, k_aug, k_add = jax.random.split(rng, 3)
    active, seen = ace_mask(state.seen, batch["y"])
    idx, valid = sample_indices(state.buffer, k_draw, static.minibatch_size)
    draw = Draw(static.augment(state.buffer.x[idx], k_aug, train=True), state.buffer.y[idx], None, valid)

    def apply_fn(params, batch_stats, x):
        return common.forward(net, params, batch_stats, x, train=True)

    def loss_fn(params):
        return ace_loss(params, apply_fn=apply_fn, batch_stats=net.batch_stats, inputs=batch["x"], y=batch["y"],
                        draw=draw, active=active, replay_on=state.task > 0)

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(net.params)
    new_net = common.apply_gradients(net, grads, aux["batch_stats"], base_lr=state.swept["optim.lr"])
    buf = reservoir_add(state.buffer, k_add, batch["x_raw"], batch["y"], task_id=batch.get("task_id"))
    metrics = {"loss": loss, "loss_stream": aux["loss_stream"], "loss_replay": aux["loss_replay"],
               "acc": common.accuracy(aux["logits"], batch["y"])}
    return state.replace(net=new_net, buffer=buf, seen=seen), metrics


def memory_bytes(state: State) -> dict:
    """Bytes of the buffer and of the model's parameters."""
    return {"buffer": buffer_nbytes(state.buffer), "model": common.param_bytes(state.net.params)}


def _spec():
    from clj.methods.api import MethodSpec

    return MethodSpec(init=init, begin_task=begin_task, train_step=train_step, end_task=end_task,
                      predict=predict, memory_bytes=memory_bytes, sweepable=SWEEPABLE)


SPEC = _spec()
