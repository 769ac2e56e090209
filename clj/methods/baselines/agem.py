"""A-GEM: averaged gradient episodic memory.

Source: Chaudhry, Ranzato, Rohrbach, Elhoseiny, "Efficient Lifelong Learning
with A-GEM", ICLR 2019, Sec. 4 (Eq. 6 and 11): the update must not increase
the average loss on the episodic memory, approximated by one reference
gradient on a memory batch; when the proposed gradient ``g`` points against
the reference ``g_ref`` (``g . g_ref < 0``) it is replaced by its projection

    g~ = g - (g . g_ref / g_ref . g_ref) g_ref,

the dot products taken over the whole flattened parameter vector.

The protocol is Mammoth's ``agem`` model (the one behind the DER paper's A-GEM
rows, Buzzega et al. 2020), so the numbers can be set beside theirs:

* the episodic memory is filled only at **task ends**: ``replay.buffer_size //
  num_tasks`` examples drawn uniformly without replacement from the task just
  trained (non-augmented images and labels), an equal share per task; the
  memory therefore never overflows and nothing is evicted;
* every step takes the cross-entropy gradient of the stream batch (all
  classes, no logit masking) and, once the memory holds something, the
  cross-entropy gradient of ``replay.minibatch_size`` memory examples drawn
  without replacement (all of them when fewer are stored), augmented with the
  training transform and forwarded separately;
* if their dot product is negative the stream gradient is projected (above),
  else it is kept; the optimizer then takes one step with it.

Config: the shared ``replay`` block (``buffer_size``, ``minibatch_size``;
``alpha`` and ``beta`` are not used).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from clj.data.augment import Augment
from clj.methods import common, sections
from clj.methods.baselines import section as baselines_section
from clj.methods.common import ModelState, TaskInfo
from clj.replay.buffer import Buffer, buffer_nbytes, init_buffer, reservoir_add, sample_indices


@dataclasses.dataclass(frozen=True)
class Static:
    """Static hyperparameters (hashable).

    Attributes:
      augment: training transform of stream and memory examples.
      buffer_size: M, memory slots (all tasks together).
      per_task: examples each task adds at its end (``M // num_tasks``).
      minibatch_size: memory examples of the reference gradient.
    """

    augment: Augment = Augment()
    buffer_size: int = 200
    per_task: int = 40
    minibatch_size: int = 128


@struct.dataclass
class State:
    """A-GEM state.

    Attributes:
      net: network, BN statistics, optimizer state, counters.
      buffer: the episodic memory (images, labels, task ids; no logits).
      key: PRNG key of the task-end draws.
      swept: the sweepable hyperparameters (:data:`SWEEPABLE`) as float32 []
        arrays, so a grid of them is a vmapped axis.
      static: the static (hashable) hyperparameters of the run.
    """

    net: ModelState
    buffer: Buffer
    key: jax.Array
    swept: dict
    static: Static = struct.field(pytree_node=False)


SWEEPABLE = ("optim.lr",)
"""Config fields carried as arrays in ``State.swept`` (no shape depends on them)."""


def init(rng: jax.Array, config, scenario) -> State:
    """A fresh State: network from ``config.model``, optimizer from
    ``config.optim``, an empty memory of ``config.replay.buffer_size`` slots.

    Raises:
      ConfigError: a bad ``replay`` block; ValueError: a memory smaller than
        the number of tasks (no task would get a slot).
    """
    r = sections.block(config, baselines_section.REPLAY)
    M, T = int(r["buffer_size"]), int(scenario.num_tasks)
    if M < T:
        raise ValueError(f"replay.buffer_size={M} is invalid for agem with {T} tasks: each task gets "
                         f"buffer_size // num_tasks slots, so it must be >= {T}.")
    static = Static(augment=common.augment_from_config(config.augment, scenario), buffer_size=M,
                    per_task=M // T, minibatch_size=int(r["minibatch_size"]))
    k_net, k_state = jax.random.split(rng)
    model = common.model_from_config(config.model, scenario.num_classes)
    net = common.init_model_state(k_net, model, common.optim_spec_from_config(config.optim), scenario.image_shape)
    return State(net=net, buffer=init_buffer(M, scenario.image_shape, 0), key=k_state,
                 swept={"optim.lr": jnp.float32(config.optim.lr)}, static=static)


def begin_task(state: State, task: TaskInfo) -> State:
    """Resets the optimizer state and the in-task counters."""
    return state.replace(net=common.begin_task_model(state.net, task))


def tree_dot(a, b) -> jax.Array:
    """Dot product (float32 []) of two pytrees of the same structure, over
    all their entries as one flattened vector."""
    leaves = jax.tree_util.tree_leaves(jax.tree_util.tree_map(
        lambda u, v: jnp.vdot(u.astype(jnp.float32), v.astype(jnp.float32)), a, b))
    return sum(leaves, jnp.zeros((), jnp.float32))


def project(g, g_ref):
    """A-GEM's projection (Chaudhry et al. 2019, Eq. 11).

    Args:
      g: the proposed gradient (a params-shaped pytree).
      g_ref: the reference gradient on the memory (same structure).

    Returns:
      ``(g~, dot)``: ``g~ = g - (g.g_ref / g_ref.g_ref) g_ref`` when
      ``dot = g.g_ref < 0``, else ``g`` unchanged (bit-identical); ``dot``
      float32 [] is the dot product before projection.  A zero ``g_ref``
      (empty memory) gives ``dot = 0`` and leaves ``g`` unchanged.
    """
    dot = tree_dot(g, g_ref)
    ref_sq = tree_dot(g_ref, g_ref)
    coef = jnp.where(dot < 0, dot / jnp.where(ref_sq > 0, ref_sq, 1.0), 0.0)
    projected = jax.tree_util.tree_map(lambda u, v: jnp.where(dot < 0, u - coef * v, u), g, g_ref)
    return projected, dot


def train_step(state: State, batch: dict, rng: jax.Array):
    """One A-GEM step (module doc).

    Args:
      state: the State.
      batch: ``x`` float32 [B, H, W, C] augmented stream images, ``y`` int32 [B].
      rng: PRNG key of the memory draw and its augmentation.

    Returns:
      (new State, metrics: ``loss`` (stream CE), ``loss_ref`` (memory CE, 0
      while the memory is empty), ``projected`` (1 when the step projected),
      ``acc``).
    """
    static, net = state.static, state.net
    k_draw, k_aug = jax.random.split(rng)

    def stream_loss(params):
        logits, bs = common.forward(net, params, net.batch_stats, batch["x"], train=True)
        return common.cross_entropy(logits, batch["y"]), (bs, logits)

    (loss, (bs, logits)), g = jax.value_and_grad(stream_loss, has_aux=True)(net.params)

    # Branch-free: an empty memory gives all-invalid rows, a zero reference
    # gradient and so no projection (the BatchNorm statistics skip the draw).
    empty = state.buffer.is_empty()
    idx, valid = sample_indices(state.buffer, k_draw, static.minibatch_size)
    bx = static.augment(state.buffer.x[idx], k_aug, train=True)
    by = state.buffer.y[idx]

    def memory_loss(params):
        out, bs_mem = common.forward(net, params, bs, bx, train=True)
        return common.cross_entropy(out, by, valid), bs_mem

    (loss_ref, bs_mem), g_ref = jax.value_and_grad(memory_loss, has_aux=True)(net.params)
    bs = jax.tree_util.tree_map(lambda a, b: jnp.where(empty, a, b), bs, bs_mem)
    g, dot = project(g, g_ref)
    new_net = common.apply_gradients(net, g, bs, base_lr=state.swept["optim.lr"])
    metrics = {"loss": loss, "loss_ref": loss_ref, "projected": (dot < 0).astype(jnp.float32),
               "acc": common.accuracy(logits, batch["y"])}
    return state.replace(net=new_net), metrics


def end_task(state: State, task_data) -> State:
    """Adds ``per_task`` examples of the task just trained to the memory,
    drawn uniformly without replacement (all of them when the task has fewer).

    Args:
      task_data: ``x`` uint8 [N, H, W, C], ``y`` int32 [N], ``info``
        (:class:`TaskInfo`) of the task just trained.
    """
    key, k_perm, k_add = jax.random.split(state.key, 3)
    n, k = task_data["y"].shape[0], state.static.per_task
    order = jax.random.permutation(k_perm, n)
    pick = order[jnp.arange(k) % n]
    valid = jnp.arange(k) < n
    tid = jnp.full((k,), jnp.asarray(task_data["info"].task_id, jnp.int32))
    buf = reservoir_add(state.buffer, k_add, task_data["x"][pick], task_data["y"][pick], task_id=tid,
                        valid=valid)
    return state.replace(buffer=buf, key=key)


def predict(state: State, x: jax.Array, task_id: jax.Array | None = None) -> jax.Array:
    """Logits float32 [B, C] of normalised x float32 [B, H, W, C] (BN in eval mode)."""
    del task_id
    logits, _ = common.forward(state.net, state.net.params, state.net.batch_stats, x, train=False)
    return logits


def memory_bytes(state: State) -> dict:
    """Bytes of the episodic memory and of the model's parameters."""
    return {"buffer": buffer_nbytes(state.buffer), "model": common.param_bytes(state.net.params)}


def _spec():
    from clj.methods.api import MethodSpec

    return MethodSpec(init=init, begin_task=begin_task, train_step=train_step, end_task=end_task,
                      predict=predict, memory_bytes=memory_bytes,
                      sweepable=SWEEPABLE)


SPEC = _spec()
