"""Finetune, joint, ER, DER and DER++ as Mammoth runs them.

Sources: Buzzega et al., "Dark Experience for General Continual Learning",
NeurIPS 2020 (DER, DER++; Alg. 1); Chaudhry et al. 2019 / Riemer et al. 2019
(ER with reservoir sampling); semantics of Mammoth (``models/er.py``,
``der.py``, ``derpp.py``) as ``docs/baselines.md`` ("ER, DER, DER++ and ER-ACE
as Mammoth runs them") describes them:

* the buffer stores the **non-augmented** stream examples, inserted by
  reservoir sampling **after** the optimizer step;
* DER/DER++ store the logits the network produced on the **augmented** stream
  batch in that step (before the update);
* replayed examples are augmented when sampled;
* ER: one forward pass over the concatenation of stream and replay batch, one
  CE over it (one BatchNorm batch of B + m);
* DER: CE(stream) + alpha * MSE(f(buffer draw), stored logits);
* DER++: DER + beta * CE(f(second, independent draw), stored labels); three
  forward passes, each its own BatchNorm batch.

All five share one State: a :class:`ModelState` and an optional
:class:`clj.replay.Buffer`.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
from flax import struct

from clj.data.augment import Augment
from clj.methods import common, sections
from clj.methods.baselines.section import REPLAY
from clj.methods.common import ModelState, TaskInfo
from clj.replay.buffer import Buffer, init_buffer, reservoir_add, sample_indices

OBJECTIVES = ("finetune", "er", "der", "derpp")


@dataclasses.dataclass(frozen=True)
class Static:
    """Static hyperparameters (hashable).

    Attributes:
      objective: one of ``OBJECTIVES``.
      augment: the training transform applied to stream and replayed data.
      buffer_size: M (0 = no buffer).
      minibatch_size: m, examples per replay draw.
      alpha: weight of the logit-matching MSE (DER, DER++).
      beta: weight of the replayed-label CE (DER++).
    """

    objective: str = "finetune"
    augment: Augment = Augment()
    buffer_size: int = 0
    minibatch_size: int = 0
    alpha: float = 0.0
    beta: float = 0.0


@struct.dataclass
class State:
    """Everything a rehearsal method carries.

    Attributes:
      net: the network (params, BN statistics, optimizer state, counters).
      buffer: the replay memory, or None for finetune / joint.
      swept: the sweepable hyperparameters as float32 [] arrays
        (:data:`SWEEPABLE` -> value), so a grid of them is a vmapped axis.
      static: the static (hashable) hyperparameters of the run.
    """

    net: ModelState
    buffer: Buffer | None
    swept: dict
    static: Static = struct.field(pytree_node=False)


SWEEPABLE = ("optim.lr", "replay.alpha", "replay.beta")
"""Config fields carried as arrays in ``State.swept`` (no shape depends on them)."""


def static_from_config(config, scenario, objective: str) -> Static:
    # fine-tuning and joint training do not declare the replay block: its values unchecked
    r = sections.block(config, REPLAY) if objective not in ("finetune", "joint") else sections.merged(REPLAY, config)
    return Static(objective=objective, augment=common.augment_from_config(config.augment, scenario),
                  buffer_size=int(r["buffer_size"]) if objective != "finetune" else 0,
                  minibatch_size=int(r["minibatch_size"]), alpha=float(r["alpha"]), beta=float(r["beta"]))


def init(rng: jax.Array, config, scenario, objective: str) -> State:
    """A fresh State: network from ``config.model``, optimizer from
    ``config.optim``, an empty buffer of ``config.replay.buffer_size`` slots
    (storing logits for DER/DER++)."""
    static = static_from_config(config, scenario, objective)
    model = common.model_from_config(config.model, scenario.num_classes)
    net = common.init_model_state(rng, model, common.optim_spec_from_config(config.optim),
                                  scenario.image_shape)
    buf = None
    if objective != "finetune":
        buf = init_buffer(static.buffer_size, scenario.image_shape,
                          scenario.num_classes if objective in ("der", "derpp") else 0)
    swept = {"optim.lr": jnp.float32(config.optim.lr), "replay.alpha": jnp.float32(static.alpha),
             "replay.beta": jnp.float32(static.beta)}
    return State(net=net, buffer=buf, swept=swept, static=static)


def begin_task(state: State, task: TaskInfo) -> State:
    return state.replace(net=common.begin_task_model(state.net, task))


def end_task(state: State, task_data) -> State:
    del task_data
    return state


def predict(state: State, x: jax.Array, task_id: jax.Array | None = None) -> jax.Array:
    """Logits float32 [B, C] of normalised inputs x float32 [B, H, W, C]
    (BatchNorm in evaluation mode)."""
    del task_id
    logits, _ = common.forward(state.net, state.net.params, state.net.batch_stats, x, train=False)
    return logits


class Draw(NamedTuple):
    """One replay draw, ready for a loss.

    Attributes:
      inputs: the network inputs of the m drawn examples (a pytree whose
        leaves have the leading axis m: float32 [m, H, W, C] images here;
        SER adds its saliency features).
      y: int32 [m] stored labels.
      logits: float32 [m, C] stored logits (DER, DER++), else None.
      valid: bool [m], the rows that are real buffer entries.
    """

    inputs: object   # a pytree (see above)
    y: jax.Array
    logits: jax.Array | None
    valid: jax.Array


def objective_loss(params, *, objective: str, apply_fn: Callable, batch_stats, inputs, y: jax.Array,
                   draws: Sequence[Draw], alpha, beta, empty: jax.Array):
    """The loss of one rehearsal objective (module doc) on a stream batch and
    its replay draws; a pure function of ``params`` (the one positional
    argument) for ``jax.grad``; every other argument is named.

    Args:
      params: the network's parameters (differentiated).
      objective: one of ``OBJECTIVES``; ``finetune`` ignores ``draws``.
      apply_fn: ``(params, batch_stats, inputs) -> (logits float32 [n, C],
        new batch_stats)``, the network in training mode (each call is its own
        BatchNorm batch).
      batch_stats: the network's BatchNorm statistics.
      inputs: the stream batch's inputs (leading axis B); y: int32 [B].
      draws: ER and DER one :class:`Draw`, DER++ two (independent).
      alpha, beta: float32 [] weights of the logit MSE (DER, DER++) and of
        the replayed-label CE (DER++).
      empty: bool [], the buffer holds nothing yet.  Branch-free on purpose
        (no ``lax.cond``: under the loop's seed vmap a cond becomes a select
        that runs both branches, and on the CPU a cond around the backward
        pass makes XLA fall back to slow convolutions, benchmarks/README.md):
        the replay rows are then the stream rows tiled, with zero weight, and
        DER's BatchNorm statistics skip them.  (ER's single pass still counts
        them in its batch statistics.)

    Returns:
      (loss float32 [], {"batch_stats": new batch_stats, "logits": float32
      [B, C] the stream rows' logits}).
    """
    B = y.shape[0]
    if objective == "finetune":
        logits, bs = apply_fn(params, batch_stats, inputs)
        return common.cross_entropy(logits, y), {"batch_stats": bs, "logits": logits}

    def filled(d: Draw):
        rows = jnp.arange(d.y.shape[0]) % B
        x = jax.tree.map(lambda s, b: jnp.where(empty, s[rows], b), inputs, d.inputs)
        return x, d.valid & ~empty

    if objective == "er":  # one pass over stream + draw, one BatchNorm batch
        bx, valid = filled(draws[0])
        xx = jax.tree.map(lambda a, b: jnp.concatenate([a, b]), inputs, bx)
        out, bs = apply_fn(params, batch_stats, xx)
        w = jnp.concatenate([jnp.ones((B,), bool), valid])
        loss = common.cross_entropy(out, jnp.concatenate([y, draws[0].y]), w)
        return loss, {"batch_stats": bs, "logits": out[:B]}
    # DER / DER++: separate passes, BatchNorm statistics chained.
    logits, bs_stream = apply_fn(params, batch_stats, inputs)
    loss = common.cross_entropy(logits, y)
    bx, valid = filled(draws[0])
    out, bs = apply_fn(params, bs_stream, bx)
    loss = loss + alpha * common.masked_mse(out, draws[0].logits, valid)
    if objective == "derpp":
        bx2, valid2 = filled(draws[1])
        out2, bs = apply_fn(params, bs, bx2)
        loss = loss + beta * common.cross_entropy(out2, draws[1].y, valid2)
    bs = jax.tree.map(lambda a, b: jnp.where(empty, a, b), bs_stream, bs)
    return loss, {"batch_stats": bs, "logits": logits}


def num_draws(objective: str) -> int:
    """Replay draws per step: finetune 0, ER and DER 1, DER++ 2."""
    return {"finetune": 0, "er": 1, "der": 1, "derpp": 2}[objective]


def _replay_draw(state: State, rng: jax.Array) -> Draw:
    k_idx, k_aug = jax.random.split(rng)
    idx, valid = sample_indices(state.buffer, k_idx, state.static.minibatch_size)
    x = state.static.augment(state.buffer.x[idx], k_aug, train=True)
    return Draw(x, state.buffer.y[idx], state.buffer.logits[idx], valid)


def train_step(state: State, batch: dict, rng: jax.Array):
    """One step of the objective in ``state.static.objective`` (module doc;
    loss :func:`objective_loss`).

    Args:
      state: the State.
      batch: ``x`` float32 [B, H, W, C] augmented stream images, ``x_raw``
        uint8 [B, H, W, C] the same before augmentation, ``y`` int32 [B],
        ``task_id`` int32 [B] (-1 when hidden).
      rng: PRNG key for replay draws and reservoir insertion.

    Returns:
      (new State, metrics dict of float32 scalars: ``loss``, ``acc``).
    """
    static, net = state.static, state.net
    objective = "finetune" if state.buffer is None else static.objective
    keys = jax.random.split(rng, 3)
    draws = [_replay_draw(state, k) for k in keys[:num_draws(objective)]]
    empty = state.buffer.is_empty() if state.buffer is not None else jnp.zeros((), bool)

    def apply_fn(params, batch_stats, x):
        return common.forward(net, params, batch_stats, x, train=True)

    def loss_fn(params):
        return objective_loss(params, objective=objective, apply_fn=apply_fn, batch_stats=net.batch_stats,
                              inputs=batch["x"], y=batch["y"], draws=draws, alpha=state.swept["replay.alpha"],
                              beta=state.swept["replay.beta"], empty=empty)

    (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(net.params)
    new_net = common.apply_gradients(net, grads, aux["batch_stats"], base_lr=state.swept["optim.lr"])
    buf = state.buffer
    if buf is not None:
        store_logits = aux["logits"] if static.objective in ("der", "derpp") else None
        buf = reservoir_add(buf, keys[2], batch["x_raw"], batch["y"], logits=store_logits,
                            task_id=batch.get("task_id"))
    metrics = {"loss": loss, "acc": common.accuracy(aux["logits"], batch["y"])}
    return state.replace(net=new_net, buffer=buf), metrics


def memory_bytes(state: State) -> dict:
    """Bytes of the buffer and of the model's parameters (float32)."""
    from clj.replay.buffer import buffer_nbytes

    return {"buffer": buffer_nbytes(state.buffer) if state.buffer is not None else 0,
            "model": common.param_bytes(state.net.params)}


def make_spec(variant: str):
    """The :class:`~clj.methods.api.MethodSpec` of one variant: ``finetune``,
    ``er``, ``der``, ``derpp``, or ``joint`` (finetune's step on the union of
    the tasks seen so far: the loop gives it cumulative data).

    Raises:
      ValueError: an unknown variant.
    """
    import functools

    from clj.methods.api import Capabilities, MethodSpec

    if variant not in OBJECTIVES + ("joint",):
        raise ValueError(f"rehearsal variant {variant!r} is unknown; valid: {', '.join(OBJECTIVES + ('joint',))}.")
    cumulative_data = variant == "joint"
    objective = "finetune" if cumulative_data else variant
    return MethodSpec(init=functools.partial(init, objective=objective), begin_task=begin_task,
                      train_step=train_step, end_task=end_task, predict=predict,
                      capabilities=Capabilities(cumulative_data=cumulative_data),
                      memory_bytes=memory_bytes, sweepable=SWEEPABLE)
