"""BiC: bias correction of the new classes' logits, as PyCIL runs it.

Sources: Wu et al., "Large Scale Incremental Learning", CVPR 2019 (BiC:
Sec. 3.2 the distillation + classification loss with lambda = n_old / n,
Sec. 3.3 the bias-correction layer ``q_k = alpha o_k + beta`` for the new
classes, Eq. 4, trained on a small balanced validation set, Sec. 3.4);
PyCIL (Zhou et al. 2021) ``models/bic.py`` and ``utils/inc_net.py``
(``IncrementalNetWithBias``, ``BiasLayer_BIC``) and
``utils/data_manager.py`` (``get_dataset_with_split``) for the protocol.

One backbone with a linear head over all classes of the scenario (unseen
classes masked, their head columns frozen, as :mod:`clj.methods.cil.icarl`)
and one pair of scalars ``(alpha_t, beta_t)`` per task (``State.bias``
float32 [T, 2], PyCIL's list of bias layers): the logits of task i's classes
are ``alpha_i z + beta_i``, every other logit passes through unchanged
(:func:`bias_correct`; a ``where`` over the class-to-task map, so an old
class's logit is bit-identical).  A task's pair starts at (1, 0) and is
trained only in that task's stage 2; task 0's pair stays (1, 0).

Per task t:

1. ``begin_task``: PyCIL's phase optimizer (task 0 ``config.optim``, later
   tasks ``cil.update_*``); for t >= 1 the validation split is drawn:
   ``k = int(bic.split_ratio * memory_size / known)`` exemplars of every old
   class (uniformly without replacement, ``State.mem_val``) and, of every
   new class c with ``n_c`` training images, the images whose content hash
   falls below ``k / n_c`` (:func:`holdout`: k on average, not exactly k;
   the loop gives a step no example index, so membership is a function of
   the image bytes and the seed's salt and is the same in every step and in
   ``end_task``).
2. ``train_step`` (stage 1): a batch of new data and exemplars
   (:func:`clj.methods.cil.icarl.mixed_batch`'s composition), the held-out
   rows masked out of the losses; ``(1 - l) CE + l KD`` with
   ``l = known / total``, CE over the seen classes of the corrected logits,
   KD (:func:`clj.methods.cil.common.kd_loss`, temperature ``cil.kd_T``)
   between the corrected logits of the old classes and those of the frozen
   network of the end of task t-1.
3. ``end_task``: for t >= 1 stage 2 (:func:`bias_correction`): only
   ``(alpha_t, beta_t)`` are trained on the validation split (augmented, in
   batches of B, SGD momentum 0.9, ``bic.stage2_*``), PyCIL's loss
   ``CE(softmax(q))`` (``bic.stage2_loss="softmax_ce"``; ``"ce"`` is the
   paper's ``CE(q)``) with BatchNorm in training mode (PyCIL: the running
   statistics follow the validation batches; ``bic.stage2_bn="eval"``
   freezes them).  Then the memory is reduced and the new classes herded
   from all of the task's images, and the network snapshotted.

``predict``: the corrected logits (``cil.predict="cnn"``) or NME.
With ``bic.exemplar_repeats="once"`` each stored exemplar counts once per epoch
(:func:`draw_replay`).  Differences from PyCIL: the new classes' held-out count is k on average
(above); a held-out exemplar is drawn into a stage-1 batch and masked out of
its losses (it still takes part in that batch's BatchNorm statistics);
stage 2 runs ``ceil(k * total / B)`` batches of B per epoch over a per-epoch
permutation of the split (PyCIL: one pass with a smaller last batch).
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from clj.data.augment import Augment  # noqa: F401 - the inherited Static fields' annotations (API reference)
from clj.methods.common import OptimSpec  # noqa: F401 - likewise
from clj.methods import common, sections
from clj.methods.cil import common as cc
from clj.methods.cil import icarl
from clj.methods.cil.icarl_phases import begin_phase, phase_lr, resolve_memory_size, task_statics, task_steps
from clj.methods.cil.section import BIC, CIL
from clj.methods.common import ModelState, TaskInfo
from clj.replay import exemplars as ex

_U32 = 2 ** 32


@dataclasses.dataclass(frozen=True)
class Static(icarl.Static):
    """:class:`clj.methods.cil.icarl.Static` plus BiC's settings (hashable).

    Attributes:
      num_tasks: T.
      class_task: the task of every class (static tuple of C ints).
      split_ratio: ``bic.split_ratio``.
      stage2_epochs: epochs of stage 2 (``bic.stage2_epochs`` or ``train.epochs``).
      stage2_lr, stage2_weight_decay, stage2_milestones, stage2_loss,
      stage2_bn: the ``bic`` block.
      exemplar_repeats: ``"once"`` or ``"wrap"`` (:func:`draw_replay`).
      val_per_class: k of the current task (0 in task 0).
      val_thresh: per-class uint32 thresholds of the content hash for the
        current task's new classes (0 elsewhere), a tuple of C ints.
    """

    num_tasks: int = 1
    class_task: tuple = ()
    split_ratio: float = 0.1
    stage2_epochs: float = 1.0
    stage2_lr: float = 0.1
    stage2_weight_decay: float = 2e-4
    stage2_milestones: tuple = ()
    stage2_loss: str = "softmax_ce"
    stage2_bn: str = "train"
    exemplar_repeats: str = "once"
    val_per_class: int = 0
    val_thresh: tuple = ()


@struct.dataclass
class State:
    """Network, frozen old network, exemplar memory, bias layers.

    Attributes:
      net: the network being trained.
      old_params, old_batch_stats: the network at the end of the previous task.
      mem: the exemplar memory.
      key: PRNG key (memory permutations, the validation draw, stage 2).
      salt: uint32 [] the seed's salt of the content hash (:func:`holdout`).
      bias: float32 [T, 2] ``(alpha_t, beta_t)`` of every task.
      mem_val: bool [M] the memory slots held out for stage 2 in this task.
      swept: ``optim.lr``, ``cil.update_lr``, ``cil.kd_T`` as float32 [].
      static: :class:`Static`.
    """

    net: ModelState
    old_params: common.PyTree
    old_batch_stats: common.PyTree
    mem: ex.ExemplarMemory
    key: jax.Array
    salt: jax.Array
    bias: jax.Array
    mem_val: jax.Array
    swept: dict
    static: Static = struct.field(pytree_node=False)


SWEEPABLE = ("optim.lr", "cil.update_lr", "cil.kd_T")


def init(rng: jax.Array, config, scenario) -> State:
    """A fresh State (``config.cil`` budget, ``config.bic`` settings).

    Raises:
      clj.config.ConfigError: bad ``config.cil`` / ``config.bic`` values.
    """
    cil = sections.block(config, CIL)
    bic = sections.block(config, BIC)
    mem_size = resolve_memory_size(config, scenario, "single", cil)
    init_o, upd_o = cc.optim_specs(config, cil)
    init_ep, ep = cc.phase_epochs(config)
    task_classes = tuple(tuple(int(c) for c in t.classes) for t in scenario.tasks)
    class_task = [0] * scenario.num_classes
    for t, cls in enumerate(task_classes):
        for c in cls:
            class_task[c] = t
    static = Static(objective="bic", augment=common.augment_from_config(config.augment, scenario),
                    memory_size=mem_size, fixed_memory=bool(cil.fixed_memory),
                    memory_per_class=int(cil.memory_per_class), kd_T=float(cil.kd_T), kd_weight=1.0,
                    predict=str(cil.predict), init_optim=init_o, update_optim=upd_o,
                    batch_size=int(config.train.batch_size), feature_batch_size=int(cil.feature_batch_size),
                    num_classes=scenario.num_classes, replay_batch_size=int(cil.replay_batch_size),
                    max_replay_batch=int(cil.max_replay_batch), batching=str(cil.batching),
                    class_sizes=cc.class_sizes(scenario), task_classes=task_classes, init_epochs=init_ep,
                    epochs=ep, num_tasks=len(task_classes), class_task=tuple(class_task),
                    split_ratio=float(bic.split_ratio),
                    stage2_epochs=float(bic.stage2_epochs) or ep, stage2_lr=float(bic.stage2_lr),
                    stage2_weight_decay=float(bic.stage2_weight_decay),
                    stage2_milestones=tuple(int(m) for m in bic.stage2_milestones),
                    stage2_loss=str(bic.stage2_loss), stage2_bn=str(bic.stage2_bn),
                    exemplar_repeats=str(bic.exemplar_repeats))
    model = common.model_from_config(config.model, scenario.num_classes)
    k_net, k_state, k_salt = jax.random.split(rng, 3)
    net = common.init_model_state(k_net, model, init_o, scenario.image_shape)
    cap = ex.memory_capacity(scenario.num_classes, mem_size, static.fixed_memory, static.memory_per_class)
    mem = ex.init_memory(cap, scenario.image_shape, scenario.num_classes, int(model.feature_dim))
    bias = jnp.tile(jnp.asarray([[1.0, 0.0]], jnp.float32), (static.num_tasks, 1))
    swept = {"optim.lr": jnp.float32(config.optim.lr), "cil.update_lr": jnp.float32(cil.update_lr),
             "cil.kd_T": jnp.float32(cil.kd_T)}
    return State(net=net, old_params=net.params, old_batch_stats=net.batch_stats, mem=mem, key=k_state,
                 salt=jax.random.bits(k_salt, (), jnp.uint32), bias=bias, mem_val=jnp.zeros((cap,), bool),
                 swept=swept, static=static)


# ------------------------------------------------------------- the mechanism
def bias_correct(logits: jax.Array, bias: jax.Array, class_task: jax.Array) -> jax.Array:
    """The bias-correction layers (BiC Eq. 4; PyCIL ``BiasLayer_BIC``, one per task).

    Args:
      logits: float [N, C] the head's logits.
      bias: float32 [T, 2], ``(alpha_t, beta_t)`` of every task.
      class_task: int32 [C] the task of every class.

    Returns:
      float [N, C]: column c is ``alpha_t z_c + beta_t`` with t = ``class_task[c]``,
      applied task by task through a ``where``, so the columns of the other
      tasks are bit-identical to the input's (a pair (1, 0) changes a value
      only from -0.0 to +0.0).
    """
    out = logits
    for t in range(bias.shape[0]):
        a, b = bias[t, 0].astype(logits.dtype), bias[t, 1].astype(logits.dtype)
        out = jnp.where((class_task == t)[None, :], a * out + b, out)
    return out


def _fmix32(h: jax.Array) -> jax.Array:
    h = h ^ (h >> 16)
    h = h * jnp.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * jnp.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


def content_hash(x_raw: jax.Array, salt: jax.Array) -> jax.Array:
    """A 32-bit hash of each image's bytes, uint32 [N].

    ``fmix32(sum_i x_i m_i + salt)`` in uint32 arithmetic (wrapping, so the
    sum is exact in any reduction order) with fixed odd multipliers ``m_i``;
    the same image gives the same value in every step, on every device and
    in ``end_task``.

    Args:
      x_raw: uint8 [N, H, W, C]; salt: uint32 [] (the seed's).
    """
    flat = x_raw.reshape(x_raw.shape[0], -1).astype(jnp.uint32)
    mult = jax.random.bits(jax.random.PRNGKey(20190616), (flat.shape[1],), jnp.uint32) | jnp.uint32(1)
    s = jnp.sum(flat * mult[None, :], axis=1, dtype=jnp.uint32)
    return _fmix32(_fmix32(s + salt.astype(jnp.uint32)))


def holdout(static: Static, x_raw: jax.Array, y: jax.Array, salt: jax.Array) -> jax.Array:
    """bool [N]: the new-class images of the current task held out for
    stage 2 (hash below ``k / n_c`` of their class; False in task 0 and for
    old classes)."""
    if static.val_per_class <= 0:
        return jnp.zeros(y.shape, bool)
    thr = jnp.asarray(np.asarray(static.val_thresh, np.uint32))[jnp.clip(y, 0, static.num_classes - 1)]
    return (content_hash(x_raw, salt) < thr) & (y >= 0)


def memory_holdout(mem: ex.ExemplarMemory, k: int, rng: jax.Array) -> jax.Array:
    """bool [M]: k slots of every stored class, uniformly without replacement
    (all of a class's slots when it has fewer; PyCIL ``np.random.choice``)."""
    M = mem.capacity
    valid = mem.valid()
    u = jax.random.uniform(rng, (M,))
    key = jnp.where(valid, mem.y.astype(jnp.float32) * 2.0 + u, jnp.inf)
    order = jnp.argsort(key)
    ys = jnp.where(valid[order], mem.y[order], jnp.iinfo(jnp.int32).max)
    start = jnp.searchsorted(ys, ys, side="left")
    rank_sorted = jnp.arange(M) - start
    rank = jnp.zeros((M,), jnp.int32).at[order].set(rank_sorted.astype(jnp.int32))
    return valid & (rank < k)


def draw_replay(static, mem: ex.ExemplarMemory, key: jax.Array, task_step: jax.Array, rng: jax.Array):
    """Memory slots of one step: (int32 [R], bool [R] the slots that count).

    ``exemplar_repeats="once"`` with ``cil.batching="pycil"``: the epoch's S =
    ``steps_per_epoch * R`` replay positions carry the n_mem stored exemplars
    once each, spread evenly (position p holds exemplar ``perm[floor(p n_mem /
    S)]`` and counts when that index steps up), as the exemplars of PyCIL's /
    Mammoth's shuffled union are spread over the epoch; ``perm`` is the
    epoch's permutation of :func:`clj.methods.cil.common.draw_replay`.
    Otherwise that function's draw (``"wrap"``: the positions wrap around the
    memory)."""
    st = static.st
    if static.batching != "pycil" or static.exemplar_repeats == "wrap":
        return cc.draw_replay(mem, st, static.batching, key, task_step, rng)
    spe = max(st.steps_per_epoch, 1)
    S = max(spe * st.replay, 1)
    n = st.n_mem
    epoch, j = task_step // spe, task_step % spe
    perm = jax.random.permutation(jax.random.fold_in(jax.random.fold_in(key, st.task), epoch), n)
    p = j * st.replay + jnp.arange(st.replay)
    q0 = (p * n) // S
    q1 = ((p + 1) * n) // S
    idx = perm[jnp.clip(q0, 0, n - 1)].astype(jnp.int32)
    return idx, (q1 > q0) & (idx < mem.count())


def _val_statics(static: Static, task: TaskInfo) -> dict:
    known = int(min(task.classes))
    if task.task_id == 0 or known <= 0:
        return {"val_per_class": 0, "val_thresh": ()}
    k = int(static.split_ratio * static.memory_size / known)
    thr = [0] * static.num_classes
    for c in task.classes:
        n = max(int(static.class_sizes[c]) if static.class_sizes else 1, 1)
        thr[c] = int(min(_U32 - 1, math.floor(min(k, n) / n * _U32)))
    return {"val_per_class": k, "val_thresh": tuple(thr)}


def begin_task(state: State, task: TaskInfo) -> State:
    """Task boundary (module doc, item 1)."""
    static = state.static
    static = dataclasses.replace(static, st=task_statics(static, task), **_val_statics(static, task))
    mem_val = jnp.zeros_like(state.mem_val)
    if static.val_per_class > 0:
        mem_val = memory_holdout(state.mem, static.val_per_class,
                                 jax.random.fold_in(jax.random.fold_in(state.key, 7), task.task_id))
    return state.replace(net=begin_phase(state.net, static, task), static=static, mem_val=mem_val)


def _class_task(static: Static) -> jax.Array:
    return jnp.asarray(static.class_task or (0,) * static.num_classes, jnp.int32)


def corrected_logits(state: State, params, batch_stats, x: jax.Array, train: bool):
    """(bias-corrected logits float32 [N, C], new batch_stats) of ``params``."""
    out, bs = common.forward(state.net, params, batch_stats, x, train=train)
    return bias_correct(out.astype(jnp.float32), state.bias, _class_task(state.static)), bs


def train_step(state: State, batch: dict, rng: jax.Array):
    """Stage 1 (module doc, item 2).

    Args:
      batch: ``x`` float32 [B, H, W, C] augmented, ``x_raw`` uint8, ``y`` int32 [B].

    Returns:
      (State, {"loss", "ce", "kd", "acc", "held_out"} float32 scalars).
    """
    static, st, net = state.static, state.static.st, state.net
    b = st.new_per_step if static.batching == "pycil" else batch["y"].shape[0]
    x, y = batch["x"][:b], batch["y"][:b]
    held = holdout(static, batch["x_raw"][:b], y, state.salt)
    w = ~held
    if st.replay > 0:
        k_idx, k_aug = jax.random.split(rng)
        idx, valid = draw_replay(static, state.mem, state.key, net.task_step, k_idx)
        rx = static.augment(state.mem.x[idx], k_aug, train=True)
        x = jnp.concatenate([x, rx])
        y = jnp.concatenate([y, state.mem.y[idx]])
        w = jnp.concatenate([w, valid & ~state.mem_val[idx]])
    use_kd = st.known > 0
    lam = st.known / st.total if use_kd else 0.0
    if use_kd:
        targets, _ = corrected_logits(state, state.old_params, state.old_batch_stats, x, train=False)
        targets = jax.lax.stop_gradient(targets)

    def loss_fn(params):
        logits, bs = corrected_logits(state, params, net.batch_stats, x, train=True)
        ce = common.cross_entropy(cc.mask_logits(logits, st.total), y, w)
        kd = (cc.kd_loss(logits, targets, st.known, state.swept["cil.kd_T"], w) if use_kd
              else jnp.zeros((), jnp.float32))
        return (1.0 - lam) * ce + lam * kd, (bs, logits, ce, kd)

    (loss, (bs, logits, ce, kd)), grads = jax.value_and_grad(loss_fn, has_aux=True)(net.params)
    new_net = common.apply_gradients(net, grads, bs, icarl.head_update_mask(net.params, st.total),
                                     base_lr=phase_lr(state.swept, st.task))
    nb = y.shape[0] if b == 0 else b
    pred = jnp.argmax(cc.mask_logits(logits, st.total)[:nb], -1) == y[:nb]
    acc = jnp.sum(pred * w[:nb]) / jnp.maximum(jnp.sum(w[:nb]), 1)
    return state.replace(net=new_net), {"loss": loss, "ce": ce, "kd": kd, "acc": acc.astype(jnp.float32),
                                        "held_out": jnp.mean(held.astype(jnp.float32))}


def stage2_loss(logits: jax.Array, y: jax.Array, w: jax.Array, total: int, kind: str) -> jax.Array:
    """The bias-correction loss float32 [] over the seen classes ``[0, total)``.

    ``"softmax_ce"``: PyCIL's ``F.cross_entropy(torch.softmax(q), y)``, the
    softmax probabilities taken as logits of a second softmax;
    ``"ce"``: the paper's cross-entropy of the corrected logits ``q``.
    """
    q = cc.mask_logits(logits, total)
    if kind == "softmax_ce":
        q = cc.mask_logits(jax.nn.softmax(q, -1), total)
    return common.cross_entropy(q, y, w)


def bias_correction(state: State, task_x: jax.Array, task_y: jax.Array) -> State:
    """Stage 2 (module doc, item 3): trains ``bias[t]`` only.

    Args:
      task_x, task_y: uint8 [n, H, W, C] / int32 [n], the task's training data.

    Returns:
      The State with ``bias[t]`` trained (and, with ``stage2_bn="train"``,
      the running BatchNorm statistics updated by the validation batches).
    """
    static, st = state.static, state.static.st
    t = st.task
    k = static.val_per_class
    pool_x = jnp.concatenate([task_x, state.mem.x])
    pool_y = jnp.concatenate([task_y, state.mem.y])
    pool_ok = jnp.concatenate([holdout(static, task_x, task_y, state.salt), state.mem_val])
    n_val = jnp.maximum(jnp.sum(pool_ok), 1)
    B = static.batch_size
    spe = max(1, math.ceil(k * st.total / B))
    epochs = max(1, int(math.ceil(static.stage2_epochs)))
    class_task = _class_task(static)
    key = jax.random.fold_in(jax.random.fold_in(state.key, 11), t)
    train_bn = static.stage2_bn == "train"
    mom, wd = 0.9, static.stage2_weight_decay

    def step(carry, i):
        p, buf, bs = carry
        epoch, j = i // spe, i % spe
        ke = jax.random.fold_in(key, epoch)
        order = jnp.argsort(jnp.where(pool_ok, jax.random.uniform(ke, pool_ok.shape), 2.0))
        pos = (j * B + jnp.arange(B)) % n_val
        sl = order[pos]
        xb = static.augment(pool_x[sl], jax.random.fold_in(ke, j + 1), train=True)
        yb = pool_y[sl]
        wb = pool_ok[sl]
        raw, bs_new = common.forward(state.net, state.net.params, bs, xb, train=train_bn)
        raw = jax.lax.stop_gradient(raw.astype(jnp.float32))

        def loss_fn(ab):
            bias = state.bias.at[t].set(ab)
            return stage2_loss(bias_correct(raw, bias, class_task), yb, wb, st.total, static.stage2_loss)

        g = jax.grad(loss_fn)(p)
        lr = static.stage2_lr * jnp.power(0.1, sum((epoch >= m).astype(jnp.float32)
                                                   for m in static.stage2_milestones)
                                          if static.stage2_milestones else 0.0)
        d = g + wd * p
        buf = mom * buf + d
        return (p - lr * buf, buf, bs_new if train_bn else bs), None

    (ab, _, bs), _ = jax.lax.scan(step, (state.bias[t], jnp.zeros((2,), jnp.float32), state.net.batch_stats),
                                  jnp.arange(epochs * spe))
    return state.replace(bias=state.bias.at[t].set(ab), net=state.net.replace(batch_stats=bs))


def end_task(state: State, task_data: dict) -> State:
    """Task end (module doc, item 3).  ``task_data``: ``x`` uint8 [n, ...],
    ``y`` int32 [n], ``info`` TaskInfo."""
    static, st = state.static, state.static.st
    if static.val_per_class > 0 and st.known > 0:
        state = bias_correction(state, task_data["x"], task_data["y"])
    classes = tuple(int(c) for c in task_data["info"].classes)
    mem = ex.update_memory(state.mem, lambda xf: icarl.features(state, xf),
                           lambda xb: static.augment(xb, None, train=False), task_data["x"], task_data["y"],
                           classes, st.quota, static.num_classes, static.feature_batch_size)
    net = state.net
    return state.replace(mem=mem, old_params=net.params, old_batch_stats=net.batch_stats,
                         mem_val=jnp.zeros_like(state.mem_val))


def predict(state: State, x: jax.Array, task_id: jax.Array | None = None) -> jax.Array:
    """float32 [B, C]: the bias-corrected logits (``cnn``) or NME scores."""
    del task_id
    if state.static.predict == "nme":
        return ex.nme_scores(icarl.features(state, x), state.mem.class_means)
    return corrected_logits(state, state.net.params, state.net.batch_stats, x, train=False)[0]


def result_extras(state: State) -> dict:
    out = icarl.result_extras(state)
    out["bias"] = [[float(a), float(b)] for a, b in np.asarray(state.bias)]
    return out


def _spec():
    from clj.methods.api import Capabilities, MethodSpec

    return MethodSpec(init=init, begin_task=begin_task, train_step=train_step, end_task=end_task, predict=predict,
                      capabilities=Capabilities(static_task_info=True), memory_bytes=icarl.memory_bytes,
                      result_extras=result_extras, task_steps=task_steps, sweepable=SWEEPABLE)


SPEC = _spec()
