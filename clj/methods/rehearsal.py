"""Finetune, joint, ER, DER and DER++ as Mammoth runs them.

Sources: Buzzega et al., "Dark Experience for General Continual Learning",
NeurIPS 2020 (DER, DER++; Alg. 1); Chaudhry et al. 2019 / Riemer et al. 2019
(ER with reservoir sampling); semantics of Mammoth (``models/er.py``,
``der.py``, ``derpp.py``) as summarised in ``shared/specs/replay.md``:

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

import jax
import jax.numpy as jnp
from flax import struct

from clj.data.augment import Augment
from clj.methods import common
from clj.methods.common import ModelState, TaskInfo
from clj.replay.buffer import Buffer, init_buffer, reservoir_add, sample_indices

OBJECTIVES = ("finetune", "er", "der", "derpp")


@dataclasses.dataclass(frozen=True)
class Hparams:
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
      hparams: the sweepable hyperparameters as float32 [] arrays
        (:data:`SWEEPABLE` -> value), so a grid of them is a vmapped axis.
      hp: static hyperparameters.
    """

    net: ModelState
    buffer: Buffer | None
    hparams: dict
    hp: Hparams = struct.field(pytree_node=False)


SWEEPABLE = ("optim.lr", "replay.alpha", "replay.beta")
"""Config fields carried as arrays in ``State.hparams`` (no shape depends on them)."""


def hparams_from_config(config, scenario, objective: str) -> Hparams:
    r = config.replay
    return Hparams(objective=objective, augment=common.augment_from_config(config.augment, scenario),
                   buffer_size=int(r.buffer_size) if objective != "finetune" else 0,
                   minibatch_size=int(r.minibatch_size), alpha=float(r.get("alpha", 0.0)),
                   beta=float(r.get("beta", 0.0)))


def init(rng: jax.Array, config, scenario, objective: str) -> State:
    """A fresh State: network from ``config.model``, optimizer from
    ``config.optim``, an empty buffer of ``config.replay.buffer_size`` slots
    (storing logits for DER/DER++)."""
    hp = hparams_from_config(config, scenario, objective)
    model = common.model_from_config(config.model, scenario.num_classes)
    net = common.init_model_state(rng, model, common.optim_spec_from_config(config.optim),
                                  scenario.image_shape)
    buf = None
    if objective != "finetune":
        buf = init_buffer(hp.buffer_size, scenario.image_shape,
                          scenario.num_classes if objective in ("der", "derpp") else 0)
    hparams = {"optim.lr": jnp.float32(config.optim.lr), "replay.alpha": jnp.float32(hp.alpha),
               "replay.beta": jnp.float32(hp.beta)}
    return State(net=net, buffer=buf, hparams=hparams, hp=hp)


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


def _replay_draw(state: State, rng: jax.Array):
    k_idx, k_aug = jax.random.split(rng)
    idx, valid = sample_indices(state.buffer, k_idx, state.hp.minibatch_size)
    x = state.hp.augment(state.buffer.x[idx], k_aug, train=True)
    return x, state.buffer.y[idx], state.buffer.logits[idx], valid


def train_step(state: State, batch: dict, rng: jax.Array):
    """One step of the objective in ``state.hp.objective`` (module doc).

    Args:
      state: the State.
      batch: ``x`` float32 [B, H, W, C] augmented stream images, ``x_raw``
        uint8 [B, H, W, C] the same before augmentation, ``y`` int32 [B],
        ``task_id`` int32 [B] (-1 when hidden).
      rng: PRNG key for replay draws and reservoir insertion.

    Returns:
      (new State, metrics dict of float32 scalars: ``loss``, ``acc``).
    """
    hp = state.hp
    net = state.net
    k_r1, k_r2, k_add = jax.random.split(rng, 3)
    B = batch["y"].shape[0]

    def stream_only(params):
        logits, bs = common.forward(net, params, net.batch_stats, batch["x"], train=True)
        return common.cross_entropy(logits, batch["y"]), (bs, logits)

    def with_replay(params):
        # Branch-free on purpose (no lax.cond on "buffer empty"): under the loop's
        # seed vmap a cond becomes a select that runs both branches, and on the CPU a
        # cond around the backward pass makes XLA fall back to slow convolutions
        # (benchmarks/README.md).  While the buffer is empty (only the run's very
        # first step) the replay rows are the stream batch tiled, with zero weight,
        # and DER's BatchNorm statistics skip them, so the step equals stream-only.
        empty = state.buffer.is_empty()

        def draw(key):
            bx, by, blog, valid = _replay_draw(state, key)
            fill = batch["x"][jnp.arange(bx.shape[0]) % B]
            return jnp.where(empty, fill, bx), by, blog, valid & ~empty

        if hp.objective == "er":
            bx, by, _, valid = draw(k_r1)
            x = jnp.concatenate([batch["x"], bx])
            y = jnp.concatenate([batch["y"], by])
            w = jnp.concatenate([jnp.ones((B,), bool), valid])
            out, bs = common.forward(net, params, net.batch_stats, x, train=True)
            return common.cross_entropy(out, y, w), (bs, out[:B])
        # DER / DER++: separate forward passes, BatchNorm statistics chained.
        logits, bs_stream = common.forward(net, params, net.batch_stats, batch["x"], train=True)
        loss = common.cross_entropy(logits, batch["y"])
        bx, _, blog, valid = draw(k_r1)
        out, bs = common.forward(net, params, bs_stream, bx, train=True)
        loss = loss + state.hparams["replay.alpha"] * common.masked_mse(out, blog, valid)
        if hp.objective == "derpp":
            bx2, by2, _, valid2 = draw(k_r2)
            out2, bs = common.forward(net, params, bs, bx2, train=True)
            loss = loss + state.hparams["replay.beta"] * common.cross_entropy(out2, by2, valid2)
        bs = jax.tree.map(lambda a, b: jnp.where(empty, a, b), bs_stream, bs)
        return loss, (bs, logits)

    def update(loss_fn):
        def run(params):
            (loss, (bs, logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
            return loss, bs, logits, grads
        return run

    if hp.objective == "finetune" or state.buffer is None:
        loss, bs, logits, grads = update(stream_only)(net.params)
    else:
        loss, bs, logits, grads = update(with_replay)(net.params)
    new_net = common.apply_gradients(net, grads, bs, base_lr=state.hparams["optim.lr"])
    buf = state.buffer
    if buf is not None:
        store_logits = logits if hp.objective in ("der", "derpp") else None
        buf = reservoir_add(buf, k_add, batch["x_raw"], batch["y"], logits=store_logits,
                            task_id=batch.get("task_id"))
    metrics = {"loss": loss, "acc": common.accuracy(logits, batch["y"])}
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
