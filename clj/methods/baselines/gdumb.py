"""GDumb: a greedy class-balanced sampler and a "dumb" learner retrained from
scratch on the memory alone.

Source: Prabhu, Torr, Dokania, "GDumb: A Simple Approach that Questions Our
Progress in Continual Learning", ECCV 2020, Sec. 3 (the sampler and the
learner); the training recipe is Mammoth's ``gdumb`` model
(``models/gdumb.py``, ``fit_buffer``), which this module follows:

* the stream never trains the network: a step only offers its examples to the
  memory (``replay.buffer_size`` slots of non-augmented images and labels);
* memory fill (``gdumb.sampler``): ``balanced`` is the paper's greedy
  sampler: an example is stored while the memory has room; once it is full, an
  example whose class holds fewer slots than the largest class replaces a
  random example of the largest class (ties: the lowest label), otherwise it
  is dropped.  ``reservoir`` is what Mammoth's ``gdumb`` actually runs (its
  plain reservoir ``Buffer``);
* retraining (``gdumb.retrain``): ``last_task`` (Mammoth) retrains once, at
  the end of the last task, so the evaluations after earlier tasks see the
  untrained network; ``every_task`` (the paper: the learner is retrained
  before every evaluation) retrains at every task end;
* a retraining starts from freshly initialised weights and a fresh optimizer
  (``config.optim``'s optimizer, momentum and weight decay, Mammoth's
  ``optim_mom`` / ``optim_wd``), and runs ``gdumb.fitting_epochs`` epochs over
  the memory, reshuffled and augmented each epoch, in batches of
  ``gdumb.fit_batch_size`` (the last one partial);
* learning rate per epoch e: ``maxlr / 10`` at e = 0 (warm-up), ``maxlr`` at
  e = 1, then PyTorch's ``CosineAnnealingWarmRestarts(T_0=1, T_mult=2,
  eta_min=minlr)`` stepped once per epoch (:func:`fit_lr`);
* CutMix (``gdumb.cutmix``, Mammoth's default ``cutmix_alpha=1``): with
  probability ``cutmix_prob`` a batch gets a box of a permuted batch pasted in,
  ``lambda ~ Beta(alpha, alpha)`` setting the box size, and the loss is
  ``lam * CE(y) + (1 - lam) * CE(y_perm)`` with ``lam`` the kept area
  (:func:`cutmix`).

Fixed shapes: the memory insertion is a ``lax.scan`` over the batch; the
retraining is a ``lax.fori_loop`` over epochs and over ``ceil(M / B)``
batches of a permutation of the filled slots; rows past the filled count are
masked out of the loss and a batch with no filled row takes no step.  With a
BatchNorm network the masked rows (copies of filled rows) still enter that
batch's statistics, which happens only when the memory is not full or ``B``
does not divide its size.

Config: the shared ``replay`` block (``buffer_size``; the rest unused) and the
``gdumb`` block.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import optax
from flax import struct

from clj.data.augment import Augment
from clj.methods import common, sections
from clj.methods.baselines.section import GDUMB, REPLAY
from clj.methods.common import ModelState, TaskInfo
from clj.replay.buffer import Buffer, buffer_nbytes, init_buffer, reservoir_add


@dataclasses.dataclass(frozen=True)
class Static:
    """Static hyperparameters (hashable).

    Attributes:
      augment: training transform of the retraining batches.
      buffer_size: M, memory slots.
      num_classes: C, classes of the scenario (the sampler's class counts).
      num_tasks: tasks of the scenario (``last_task`` retrains after task
        ``num_tasks - 1``).
      sampler: ``balanced`` or ``reservoir`` (module doc).
      retrain: ``last_task`` or ``every_task``.
      fitting_epochs: epochs of a retraining.
      fit_batch_size: batch of a retraining.
      cutmix: CutMix on; cutmix_alpha, cutmix_prob: its Beta parameter and
        its per-batch probability.
    """

    augment: Augment = Augment()
    buffer_size: int = 200
    num_classes: int = 10
    num_tasks: int = 5
    sampler: str = "balanced"
    retrain: str = "last_task"
    fitting_epochs: int = 256
    fit_batch_size: int = 32
    cutmix: bool = True
    cutmix_alpha: float = 1.0
    cutmix_prob: float = 0.5


@struct.dataclass
class State:
    """GDumb state.

    Attributes:
      net: the network (params, BN statistics, optimizer state, counters).
      buffer: the memory (images, labels, task ids; ``num_seen`` counts the
        stream examples offered).
      key: PRNG key of the retrainings (fresh weights, shuffles, CutMix).
      swept: the sweepable hyperparameters (:data:`SWEEPABLE`) as float32 []
        arrays.
      static: the static (hashable) hyperparameters of the run.
    """

    net: ModelState
    buffer: Buffer
    key: jax.Array
    swept: dict
    static: Static = struct.field(pytree_node=False)


SWEEPABLE = ("gdumb.maxlr", "gdumb.minlr")
"""Config fields carried as arrays in ``State.swept`` (no shape depends on them)."""


def init(rng: jax.Array, config, scenario) -> State:
    """A fresh State: network from ``config.model``, optimizer from
    ``config.optim``, an empty memory of ``replay.buffer_size`` slots.

    Raises:
      ConfigError: a bad ``replay`` or ``gdumb`` block.
    """
    r = sections.block(config, REPLAY)
    g = sections.block(config, GDUMB)
    fit_b = int(g.fit_batch_size) or int(config.train.batch_size)
    static = Static(augment=common.augment_from_config(config.augment, scenario), buffer_size=int(r.buffer_size),
                    num_classes=int(scenario.num_classes), num_tasks=int(scenario.num_tasks), sampler=g.sampler,
                    retrain=g.retrain, fitting_epochs=int(g.fitting_epochs), fit_batch_size=fit_b,
                    cutmix=bool(g.cutmix), cutmix_alpha=float(g.cutmix_alpha), cutmix_prob=float(g.cutmix_prob))
    k_net, k_state = jax.random.split(rng)
    model = common.model_from_config(config.model, scenario.num_classes)
    net = common.init_model_state(k_net, model, common.optim_spec_from_config(config.optim), scenario.image_shape)
    swept = {"gdumb.maxlr": jnp.float32(g.maxlr), "gdumb.minlr": jnp.float32(g.minlr)}
    return State(net=net, buffer=init_buffer(static.buffer_size, scenario.image_shape, 0), key=k_state,
                 swept=swept, static=static)


def begin_task(state: State, task: TaskInfo) -> State:
    return state.replace(net=common.begin_task_model(state.net, task))


# ------------------------------------------------------------------ the sampler
def class_counts(buf: Buffer, num_classes: int) -> jax.Array:
    """int32 [C]: filled slots per class."""
    filled = jnp.arange(buf.y.shape[0]) < buf.size()
    return jnp.zeros((num_classes,), jnp.int32).at[buf.y].add(filled.astype(jnp.int32))


def balanced_add(buf: Buffer, rng: jax.Array, x: jax.Array, y: jax.Array, num_classes: int,
                 task_id: jax.Array | None = None, valid: jax.Array | None = None) -> tuple[Buffer, jax.Array]:
    """Offers a batch to the memory, one example after the other, with
    GDumb's greedy class-balanced sampler (Prabhu et al. 2020, Sec. 3).

    Example i (in batch order) goes to the next free slot while the memory
    has one; once it is full, if its class holds fewer slots than the largest
    class (the lowest label among equals), it replaces a slot of that class
    drawn uniformly; otherwise it is dropped.

    Args:
      buf: the memory (``num_seen`` = examples offered so far; the filled
        slots are ``0 .. min(num_seen, M) - 1``).
      rng: PRNG key of the evictions.
      x: uint8 [B, H, W, C] non-augmented images; y: int [B] labels in
        ``[0, num_classes)``.
      num_classes: C (static).
      task_id: int [B] or None (stored as -1).
      valid: bool [B] or None; invalid rows are not offered.

    Returns:
      (the memory, int32 [B] the slot each example was written to, ``M`` when
      it was dropped).
    """
    B, M = y.shape[0], buf.y.shape[0]
    valid = jnp.ones((B,), bool) if valid is None else valid.astype(bool)
    tid = jnp.full((B,), -1, jnp.int32) if task_id is None else task_id.astype(jnp.int32)

    def one(b: Buffer, inp):
        xi, yi, ti, vi, ki = inp
        filled = b.size()
        counts = class_counts(b, num_classes)
        largest = jnp.argmax(counts).astype(jnp.int32)
        in_mem = jnp.arange(M) < filled
        u = jax.random.uniform(ki, (M,))
        victim = jnp.argmax(jnp.where(in_mem & (b.y == largest), u, -1.0)).astype(jnp.int32)
        slot = jnp.where(filled < M, filled, jnp.where(counts[yi] < counts[largest], victim, M))
        slot = jnp.where(vi, slot, M).astype(jnp.int32)
        b = b.replace(x=b.x.at[slot].set(xi.astype(jnp.uint8), mode="drop"),
                      y=b.y.at[slot].set(yi.astype(jnp.int32), mode="drop"),
                      task_id=b.task_id.at[slot].set(ti, mode="drop"),
                      num_seen=b.num_seen + vi.astype(jnp.int32))
        return b, slot

    return jax.lax.scan(one, buf, (x, y.astype(jnp.int32), tid, valid, jax.random.split(rng, B)))


def train_step(state: State, batch: dict, rng: jax.Array):
    """Offers the stream batch to the memory; no gradient step.

    Args:
      state: the State.
      batch: ``x_raw`` uint8 [B, H, W, C] non-augmented images (stored),
        ``x`` float32 [B, H, W, C] (only for the metrics), ``y`` int32 [B],
        ``task_id`` int32 [B] (-1 when hidden).
      rng: PRNG key of the sampler.

    Returns:
      (new State, metrics: ``loss`` and ``acc`` of the current network on the
      batch, for the log only; ``memory`` the filled slots).
    """
    st, net = state.static, state.net
    logits, _ = common.forward(net, net.params, net.batch_stats, batch["x"], train=False)
    tid = batch.get("task_id")
    if st.sampler == "balanced":
        buf, _ = balanced_add(state.buffer, rng, batch["x_raw"], batch["y"], st.num_classes, task_id=tid)
    else:
        buf = reservoir_add(state.buffer, rng, batch["x_raw"], batch["y"], task_id=tid)
    metrics = {"loss": common.cross_entropy(logits, batch["y"]), "acc": common.accuracy(logits, batch["y"]),
               "memory": buf.size().astype(jnp.float32)}
    return state.replace(buffer=buf), metrics


# ------------------------------------------------------------- the learner
def fit_lr(epoch: jax.Array, maxlr, minlr) -> jax.Array:
    """Learning rate (float32 []) of retraining epoch ``epoch`` (int32 [],
    0-based): ``maxlr / 10`` at 0, ``maxlr`` at 1, then cosine annealing with
    warm restarts (``T_0=1, T_mult=2``, floor ``minlr``) stepped once per
    epoch from epoch 2: with ``s = epoch - 1`` steps, cycle ``n =
    floor(log2(s + 1))`` of length ``2**n`` at position ``s + 1 - 2**n``
    (Mammoth's ``fit_buffer``; Loshchilov & Hutter 2017, Eq. 5)."""
    e = jnp.asarray(epoch, jnp.int32)
    s1 = jnp.maximum(e, 1)  # s + 1
    n = sum((s1 >= 2 ** k).astype(jnp.int32) for k in range(1, 31))
    period = jnp.left_shift(jnp.int32(1), n)
    t_cur = (s1 - period).astype(jnp.float32)
    maxlr, minlr = jnp.asarray(maxlr, jnp.float32), jnp.asarray(minlr, jnp.float32)
    cos = minlr + (maxlr - minlr) * 0.5 * (1.0 + jnp.cos(math.pi * t_cur / period.astype(jnp.float32)))
    return jnp.where(e == 0, 0.1 * maxlr, jnp.where(e == 1, maxlr, cos))


def cutmix(rng: jax.Array, x: jax.Array, y: jax.Array, valid: jax.Array, alpha: float, prob: float):
    """CutMix of one batch as Mammoth's ``cutmix_data`` (Yun et al., ICCV
    2019): with probability ``prob``, ``lam ~ Beta(alpha, alpha)``, a box of
    side ``int(H * sqrt(1 - lam))`` x ``int(W * sqrt(1 - lam))`` (halved each
    side of a uniform centre, clipped to the image) is copied from a random
    permutation of the batch's valid rows, and ``lam`` becomes the kept area
    fraction.

    Args:
      rng: PRNG key.
      x: float32 [B, H, W, C]; y: int32 [B].
      valid: bool [B], the real rows (a prefix of the batch).
      alpha, prob: Beta parameter and probability (static).

    Returns:
      ``(x, y_a, y_b, lam)``: the mixed images, the labels of the kept and of
      the pasted images (int32 [B]) and ``lam`` float32 [] (1 and ``y_b =
      y_a`` when the batch is not mixed).
    """
    k_apply, k_lam, k_perm, k_cx, k_cy = jax.random.split(rng, 5)
    B, H, W = x.shape[0], x.shape[1], x.shape[2]
    apply = jax.random.uniform(k_apply) < prob
    lam = jax.random.beta(k_lam, alpha, alpha)
    keys = jnp.where(valid, jax.random.uniform(k_perm, (B,)), 2.0 + jnp.arange(B))
    perm = jnp.argsort(keys)  # a permutation of the valid prefix; padding rows map to themselves
    cut = jnp.sqrt(1.0 - lam)
    ch, cw = jnp.floor(H * cut).astype(jnp.int32), jnp.floor(W * cut).astype(jnp.int32)
    cx, cy = jax.random.randint(k_cx, (), 0, H), jax.random.randint(k_cy, (), 0, W)
    x1, x2 = jnp.clip(cx - ch // 2, 0, H), jnp.clip(cx + ch // 2, 0, H)
    y1, y2 = jnp.clip(cy - cw // 2, 0, W), jnp.clip(cy + cw // 2, 0, W)
    r, c = jnp.arange(H)[:, None], jnp.arange(W)[None, :]
    box = (r >= x1) & (r < x2) & (c >= y1) & (c < y2)
    mixed = jnp.where(box[None, :, :, None], x[perm], x)
    lam_area = 1.0 - ((x2 - x1) * (y2 - y1)).astype(jnp.float32) / float(H * W)
    return (jnp.where(apply, mixed, x), y, jnp.where(apply, y[perm], y),
            jnp.where(apply, lam_area, 1.0).astype(jnp.float32))


def fresh_network(state: State, rng: jax.Array) -> ModelState:
    """The network re-initialised from ``rng`` (same module and optimizer as
    ``state.net``), as a retraining starts."""
    net = state.net
    return common.init_model_state(rng, net.model, net.optim, tuple(state.buffer.x.shape[1:]))


def fit_memory(state: State, rng: jax.Array) -> ModelState:
    """Trains a freshly initialised network on the memory alone (module doc).

    Args:
      state: the State (its ``buffer`` is the training set).
      rng: PRNG key of the fresh weights, the shuffles, the augmentation and
        CutMix.

    Returns:
      the trained :class:`ModelState`.
    """
    st, buf = state.static, state.buffer
    k_init, k_loop = jax.random.split(rng)
    net = fresh_network(state, k_init)
    M, B = buf.y.shape[0], st.fit_batch_size
    nb = -(-M // B)
    size = buf.size()
    maxlr, minlr = state.swept["gdumb.maxlr"], state.swept["gdumb.minlr"]

    def epoch(e, carry):
        net, key = carry
        key, k_perm = jax.random.split(key)
        order = jnp.argsort(jnp.where(jnp.arange(M) < size, jax.random.uniform(k_perm, (M,)), 2.0))
        pos = jnp.arange(nb * B)
        valid_all = pos < size
        rows_all = order[jnp.where(valid_all, pos, pos % jnp.maximum(size, 1)) % M]
        lr = fit_lr(e, maxlr, minlr)

        def step(j, carry):
            net, key = carry
            key, k_aug, k_mix = jax.random.split(key, 3)
            rows = jax.lax.dynamic_slice(rows_all, (j * B,), (B,))
            valid = jax.lax.dynamic_slice(valid_all, (j * B,), (B,))
            x = st.augment(buf.x[rows], k_aug, train=True)
            ya = yb = buf.y[rows]
            lam = jnp.float32(1.0)
            if st.cutmix:
                x, ya, yb, lam = cutmix(k_mix, x, ya, valid, st.cutmix_alpha, st.cutmix_prob)

            def loss_fn(params):
                logits, bs = common.forward(net, params, net.batch_stats, x, train=True)
                loss = lam * common.cross_entropy(logits, ya, valid) + (1.0 - lam) * common.cross_entropy(
                    logits, yb, valid)
                return loss, bs

            (_, bs), grads = jax.value_and_grad(loss_fn, has_aux=True)(net.params)
            opt_state = net.opt_state._replace(hyperparams={**net.opt_state.hyperparams, "learning_rate": lr})
            updates, opt_state = net.tx.update(grads, opt_state, net.params)
            new = net.replace(params=optax.apply_updates(net.params, updates), batch_stats=bs, opt_state=opt_state,
                              step=net.step + 1)
            take = jnp.any(valid)
            net = jax.tree_util.tree_map(lambda a, b: jnp.where(take, a, b), new, net)
            return net, key

        return jax.lax.fori_loop(0, nb, step, (net, key))

    net, _ = jax.lax.fori_loop(0, st.fitting_epochs, epoch, (net, k_loop))
    return net


def end_task(state: State, task_data) -> State:
    """Retrains the network from scratch on the memory when ``gdumb.retrain``
    says so (after the last task, or after every task); otherwise only
    advances the key.

    Args:
      task_data: ``info`` (:class:`TaskInfo`) of the task just trained (its
        images are not used: the learner sees the memory only).
    """
    key, k_fit = jax.random.split(state.key)
    st = state.static
    if st.retrain == "every_task":
        net = fit_memory(state, k_fit)
    else:
        last = jnp.asarray(task_data["info"].task_id, jnp.int32) == st.num_tasks - 1
        net = jax.lax.cond(last, lambda s: fit_memory(s, k_fit), lambda s: s.net, state)
    return state.replace(net=net, key=key)


def predict(state: State, x: jax.Array, task_id: jax.Array | None = None) -> jax.Array:
    """Logits float32 [B, C] of normalised x float32 [B, H, W, C] (BN in eval mode)."""
    del task_id
    logits, _ = common.forward(state.net, state.net.params, state.net.batch_stats, x, train=False)
    return logits


def memory_bytes(state: State) -> dict:
    """Bytes of the memory and of the model's parameters."""
    return {"buffer": buffer_nbytes(state.buffer), "model": common.param_bytes(state.net.params)}


def _spec():
    from clj.methods.api import MethodSpec

    return MethodSpec(init=init, begin_task=begin_task, train_step=train_step, end_task=end_task,
                      predict=predict, memory_bytes=memory_bytes, sweepable=SWEEPABLE)


SPEC = _spec()
