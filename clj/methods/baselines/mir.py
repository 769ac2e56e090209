"""MIR: experience replay with maximally interfered retrieval.

Source: Aljundi, Caccia, Belilovsky, Caccia, Lin, Charlin, Tuytelaars,
"Online Continual Learning with Maximally Interfered Retrieval", NeurIPS 2019
(Sec. 3.1, Algorithm 1, ER-MIR), as the official code runs it
(``optimass/Maximally_Interfered_Retrieval``, ``er_main.py`` and
``retrieve_replay_update`` in ``mir.py``; docs/baselines.md, "MIR"):

* a reservoir buffer of non-augmented stream examples, written **after** the
  optimizer step (clj's :mod:`clj.replay.buffer`);
* each step: the cross-entropy gradient ``g`` of the incoming batch; a
  **virtual** plain-SGD step ``theta_v = theta - lr g`` at the step's
  learning rate; ``online.mir_subsample`` candidates drawn uniformly without
  replacement from the buffer; their score is the loss increase under the
  virtual step, ``CE(f_{theta_v}(x), y) - CE(f_theta(x), y)`` (both
  forwards in training mode, no gradient);
* the ``replay.minibatch_size`` candidates with the largest scores (top-k,
  fixed shape) are replayed: a separate forward pass (its own BatchNorm
  batch) and cross-entropy, whose gradient is **added** to ``g`` (the
  official code backpropagates the two mean losses into the same ``.grad``);
  one optimizer step with the sum;
* switches of the official code (``config.online``):
  ``mir_compare_to_old_logits`` (its Split-MNIST runs) scores against the
  lowest loss a candidate has shown, ``post - min(pre, old)``, where ``old``
  is the loss of logits stored per buffer slot, zero-initialised, replaced by
  the pre-update logits whenever those give a lower loss, and (as in the
  official buffer, which does not clear them) not reset when reservoir
  sampling overwrites the slot; ``mir_exclude_current_task`` draws the
  candidates only from earlier tasks' examples (so task 0 replays nothing),
  which needs task ids and is refused in a data-incremental stream.  Off,
  replay starts as soon as the buffer holds something (the task-free reading
  of Algorithm 1).

Config: the shared ``replay`` block (``buffer_size``, ``minibatch_size``)
and ``online.mir_*``.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import optax
from flax import struct

from clj.data.augment import Augment
from clj.methods import common, sections
from clj.methods.baselines.section import ONLINE, REPLAY
from clj.methods.common import ModelState, TaskInfo
from clj.replay.buffer import Buffer, buffer_nbytes, init_buffer, reservoir_add


@dataclasses.dataclass(frozen=True)
class Static:
    """Static hyperparameters (hashable).

    Attributes:
      augment: training transform of stream and replayed examples.
      buffer_size: M, reservoir slots.
      minibatch_size: m, candidates replayed per step (top-m).
      subsample: K, candidates scored per step.
      compare_to_old_logits: score against the lowest loss seen (module doc).
      exclude_current_task: candidates only from earlier tasks (module doc).
      num_classes: C, width of the stored logits.
    """

    augment: Augment = Augment()
    buffer_size: int = 200
    minibatch_size: int = 10
    subsample: int = 50
    compare_to_old_logits: bool = False
    exclude_current_task: bool = False
    num_classes: int = 10


@struct.dataclass
class State:
    """MIR state.

    Attributes:
      net: network, BatchNorm statistics, optimizer state, counters.
      buffer: reservoir buffer (images, labels, task ids).
      old_logits: float32 [M, C], per slot the logits of the lowest loss seen
        (``compare_to_old_logits``; zeros and unused otherwise).
      swept: the sweepable hyperparameters (:data:`SWEEPABLE`) as float32 [].
      static: the static (hashable) hyperparameters of the run.
    """

    net: ModelState
    buffer: Buffer
    old_logits: jax.Array
    swept: dict
    static: Static = struct.field(pytree_node=False)


SWEEPABLE = ("optim.lr",)
"""Config fields carried as arrays in ``State.swept`` (no shape depends on them)."""


def init(rng: jax.Array, config, scenario) -> State:
    """A fresh MIR State: network from ``config.model``, optimizer from
    ``config.optim``, an empty buffer of ``replay.buffer_size`` slots.

    Raises:
      ConfigError: a bad ``replay`` or ``online`` block.
    """
    r = sections.block(config, REPLAY)
    o = sections.block(config, ONLINE)
    C = int(scenario.num_classes)
    static = Static(augment=common.augment_from_config(config.augment, scenario),
                    buffer_size=int(r["buffer_size"]), minibatch_size=int(r["minibatch_size"]),
                    subsample=int(o["mir_subsample"]), compare_to_old_logits=bool(o["mir_compare_to_old_logits"]),
                    exclude_current_task=bool(o["mir_exclude_current_task"]), num_classes=C)
    model = common.model_from_config(config.model, C)
    net = common.init_model_state(rng, model, common.optim_spec_from_config(config.optim), scenario.image_shape)
    M = static.buffer_size
    return State(net=net, buffer=init_buffer(M, scenario.image_shape, 0),
                 old_logits=jnp.zeros((M, C), jnp.float32),
                 swept={"optim.lr": jnp.float32(config.optim.lr)}, static=static)


def begin_task(state: State, task: TaskInfo) -> State:
    """Resets the optimizer state and the in-task counters."""
    return state.replace(net=common.begin_task_model(state.net, task))


def end_task(state: State, task_data) -> State:
    del task_data
    return state


def draw_candidates(buffer: Buffer, rng: jax.Array, size: int, eligible: jax.Array | None = None):
    """``size`` buffer slots drawn uniformly without replacement among the
    filled (and ``eligible``) ones; fewer when fewer qualify.

    Args:
      buffer: the reservoir buffer.
      rng: PRNG key.
      size: K (static).
      eligible: optional bool [M], slots that may be drawn.

    Returns:
      (idx int32 [K], valid bool [K]): the drawn slots first, then padding
      (``valid`` False) when fewer than K qualify.
    """
    M = buffer.y.shape[0]
    ok = jnp.arange(M) < buffer.size()
    if eligible is not None:
        ok = ok & eligible
    u = jnp.where(ok, jax.random.uniform(rng, (M,)), 2.0)  # ineligible slots sort last
    k = min(size, M)
    idx = jnp.argsort(u)[:k].astype(jnp.int32)
    valid = jnp.arange(k) < jnp.sum(ok)
    if size > M:
        idx = jnp.concatenate([idx, jnp.zeros((size - M,), jnp.int32)])
        valid = jnp.concatenate([valid, jnp.zeros((size - M,), bool)])
    return idx, valid


def interference_scores(pre_logits: jax.Array, post_logits: jax.Array, y: jax.Array, valid: jax.Array,
                        old_logits: jax.Array | None = None):
    """MIR's retrieval criterion (Aljundi et al. 2019, Sec. 3.1, ``s_MI``).

    Args:
      pre_logits: float [K, C] the candidates' logits at the current parameters.
      post_logits: float [K, C] at the virtually updated parameters.
      y: int32 [K] their labels.
      valid: bool [K] the real candidates.
      old_logits: optional float [K, C] stored logits (``compare_to_old_logits``).

    Returns:
      (scores float32 [K], ``post_ce - pre_ce``, or ``post_ce - min(pre_ce,
      old_ce)`` with ``old_logits``, and -inf where not ``valid``;
      improved bool [K], ``pre_ce < old_ce`` (all False without
      ``old_logits``)).
    """
    ce = optax.softmax_cross_entropy_with_integer_labels
    pre = ce(pre_logits.astype(jnp.float32), y)
    post = ce(post_logits.astype(jnp.float32), y)
    improved = jnp.zeros(y.shape, bool)
    if old_logits is not None:
        old = ce(old_logits.astype(jnp.float32), y)
        improved = pre < old
        pre = jnp.minimum(pre, old)
    return jnp.where(valid, post - pre, -jnp.inf), improved & valid


def retrieve(state: State, batch: dict, rng: jax.Array) -> dict:
    """MIR's retrieval for one step (module doc): the stream gradient, the
    candidates, their loss increase under the virtual step, the top-m.

    Args:
      state: the State.
      batch: as :func:`train_step`'s.
      rng: the step's key (the same split as :func:`train_step`).

    Returns:
      a dict: ``loss_stream`` float32 [], ``grads`` (params-shaped, the
      stream gradient), ``batch_stats`` (after the stream and candidate
      passes), ``logits`` float [B, C] the stream logits, ``cand`` int32 [K]
      candidate slots, ``cand_valid`` bool [K], ``scores`` float32 [K]
      (``-inf`` for padding), ``improved`` bool [K] (stored-logit scores),
      ``pre`` float [K, C] candidate logits before the step, ``top`` int32 [m]
      the chosen candidates (positions in ``cand``), ``slots`` int32 [m] their
      buffer slots, ``valid`` bool [m], ``x`` / ``y`` the replayed inputs
      and labels.
    """
    static, net, buf = state.static, state.net, state.buffer
    k_draw, k_aug, _ = jax.random.split(rng, 3)
    lr = net.optim.lr_at(net.task_step, net.task_steps, net.steps_per_epoch, state.swept["optim.lr"])

    def stream_loss(params):
        logits, bs = common.forward(net, params, net.batch_stats, batch["x"], train=True)
        return common.cross_entropy(logits, batch["y"]), (bs, logits)

    (loss_s, (bs, logits)), g = jax.value_and_grad(stream_loss, has_aux=True)(net.params)

    # candidates: K slots of the buffer (of earlier tasks with exclude_current_task)
    eligible = None
    if static.exclude_current_task:
        eligible = buf.task_id != batch["task_id"][0]
    cand, cvalid = draw_candidates(buf, k_draw, static.subsample, eligible)
    cx = static.augment(buf.x[cand], k_aug, train=True)
    cy = buf.y[cand]

    # the virtual plain-SGD step on the stream gradient, and the loss increase it causes
    virtual = jax.tree.map(lambda p, d: p - lr.astype(p.dtype) * d.astype(p.dtype), net.params, g)
    pre, bs_pre = common.forward(net, net.params, bs, cx, train=True)
    post, _ = common.forward(net, virtual, bs_pre, cx, train=True)
    pre, post = jax.lax.stop_gradient(pre), jax.lax.stop_gradient(post)
    old = state.old_logits[cand] if static.compare_to_old_logits else None
    scores, improved = interference_scores(pre, post, cy, cvalid, old)
    m = min(static.minibatch_size, static.subsample)
    _, top = jax.lax.top_k(scores, m)
    any_cand = jnp.any(cvalid)
    bs = jax.tree.map(lambda a, b: jnp.where(any_cand, b, a), bs, bs_pre)
    return {"loss_stream": loss_s, "grads": g, "batch_stats": bs, "logits": logits, "cand": cand,
            "cand_valid": cvalid, "scores": scores, "improved": improved, "pre": pre, "top": top,
            "slots": cand[top], "valid": cvalid[top], "x": cx[top], "y": cy[top]}


def train_step(state: State, batch: dict, rng: jax.Array):
    """One ER-MIR step (module doc; the retrieval is :func:`retrieve`).

    Args:
      state: the State.
      batch: ``x`` float32 [B, H, W, C] augmented stream images, ``x_raw``
        uint8 [B, H, W, C], ``y`` int32 [B], ``task_id`` int32 [B] (-1 when
        hidden).
      rng: PRNG key of the candidate draw, their augmentation and the
        reservoir insertion.

    Returns:
      (new State, metrics: ``loss`` (stream CE + replay CE), ``loss_stream``,
      ``loss_replay``, ``interference`` (mean score of the replayed
      candidates, 0 while nothing is replayed), ``acc``).
    """
    static, net = state.static, state.net
    k_add = jax.random.split(rng, 3)[2]
    r = retrieve(state, batch, rng)
    rvalid = r["valid"]

    def replay_loss(params):
        out, bs_mem = common.forward(net, params, r["batch_stats"], r["x"], train=True)
        return common.cross_entropy(out, r["y"], rvalid), bs_mem

    (loss_r, bs_mem), g_r = jax.value_and_grad(replay_loss, has_aux=True)(net.params)
    # nothing to replay: the stream step alone (BatchNorm statistics of the stream pass only)
    bs = jax.tree.map(lambda a, b: jnp.where(jnp.any(rvalid), b, a), r["batch_stats"], bs_mem)
    grads = jax.tree.map(lambda a, b: a + b, r["grads"], g_r)
    new_net = common.apply_gradients(net, grads, bs, base_lr=state.swept["optim.lr"])

    old_logits = state.old_logits
    if static.compare_to_old_logits:
        # a candidate whose current loss beats its stored one stores its logits
        slot = jnp.where(r["improved"], r["cand"], static.buffer_size)
        old_logits = old_logits.at[slot].set(r["pre"].astype(jnp.float32), mode="drop")
    new_buf = reservoir_add(state.buffer, k_add, batch["x_raw"], batch["y"], task_id=batch.get("task_id"))
    top_scores = r["scores"][r["top"]]
    interference = jnp.sum(jnp.where(rvalid, top_scores, 0.0)) / jnp.maximum(jnp.sum(rvalid), 1)
    metrics = {"loss": r["loss_stream"] + loss_r, "loss_stream": r["loss_stream"], "loss_replay": loss_r,
               "interference": interference.astype(jnp.float32),
               "acc": common.accuracy(r["logits"], batch["y"])}
    return state.replace(net=new_net, buffer=new_buf, old_logits=old_logits), metrics


def predict(state: State, x: jax.Array, task_id: jax.Array | None = None) -> jax.Array:
    """Logits float32 [B, C] of normalised x float32 [B, H, W, C] (BatchNorm in eval mode)."""
    del task_id
    logits, _ = common.forward(state.net, state.net.params, state.net.batch_stats, x, train=False)
    return logits


def memory_bytes(state: State) -> dict:
    """Bytes of the buffer (with the stored logits) and of the model's parameters."""
    return {"buffer": buffer_nbytes(state.buffer) + int(state.old_logits.nbytes),
            "model": common.param_bytes(state.net.params)}


def _spec():
    from clj.methods.api import MethodSpec

    return MethodSpec(init=init, begin_task=begin_task, train_step=train_step, end_task=end_task,
                      predict=predict, memory_bytes=memory_bytes, sweepable=SWEEPABLE)


SPEC = _spec()
