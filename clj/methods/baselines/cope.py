"""CoPE: continual prototype evolution.

Source: De Lange & Tuytelaars, "Continual Prototype Evolution: Learning Online
from Non-Stationary Data Streams", ICCV 2021 (Sec. 3: the pseudo-prototypical
proxy loss, Eq. 3-6; prototype evolution, Eq. 7; the class-balanced
reservoir), as the official code runs it (``Mattdl/ContinualPrototypeEvolution``,
``model/prototypical/``: ``CoPE.py``, ``loss_scheme.py``, ``p_scheme.py``
with its default ``batch_momentum_incr``, ``mem_scheme.py`` with
``dyn_mem``, ``sample_scheme.py``; docs/baselines.md, "CoPE"):

* the network outputs a ``D``-dim embedding (``online.cope_dim``), L2-normalised;
* every class ``c`` has a prototype ``p_c`` (a fixed [C, D] array with a
  ``seen`` mask): drawn uniform in [0, 1]^D and L2-normalised, first used
  when ``c`` first appears; after each update
  ``p_c <- m p_c + (1 - m) mean(f)``, the mean over the step's (pre-update,
  detached) embeddings of class ``c``, new and replayed; not re-normalised
  (``online.cope_renormalize`` normalises it, the official code's
  commented-out option);
* each step draws ``replay.minibatch_size`` buffer examples, class-balanced:
  one class at a time uniformly among the classes with examples left, then
  that many examples of each class without replacement; one forward pass
  over the new and replayed examples;
* the PPP loss (module function :func:`ppp_loss`) with temperature
  ``online.cope_temperature``, once at least two classes have been seen (no
  update before); one optimizer step; ``online.cope_iters`` such updates per
  incoming batch (each with its own replay draw, prototypes updated once
  after the last);
* the buffer (``replay.buffer_size`` = M examples, all classes together)
  is class-balanced: with ``n`` classes seen each class holds at most
  ``M // n`` examples; a class below its share appends its new examples
  (keeping the newest), a full class replaces by reservoir sampling within
  the class, and when a new class shrinks the share every class keeps a
  random subset;
* prediction: the nearest prototype by dot product with the normalised
  embedding (scores ``f . p_c``; unseen classes get ``-inf``-like scores).

Config: the shared ``replay`` block (``buffer_size``, ``minibatch_size``) and
``online.cope_*``.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import struct

from clj.data.augment import Augment
from clj.methods import common, sections
from clj.methods.baselines.section import ONLINE, REPLAY
from clj.methods.common import ModelState, TaskInfo

UNSEEN_SCORE = -1e9
"""Score :func:`predict` gives a class without a prototype yet."""


@dataclasses.dataclass(frozen=True)
class Static:
    """Static hyperparameters (hashable).

    Attributes:
      augment: training transform of new and replayed examples.
      buffer_size: M, examples the class-balanced buffer keeps.
      slots: M + B, the buffer's arrays (B spare slots hold a new class's
        examples until the shares shrink, as the official code's queues do).
      minibatch_size: replayed examples per update.
      dim: D, the embedding width.
      temperature: T of the PPP loss.
      momentum: m of the prototype update.
      iters: updates per incoming batch.
      renormalize: L2-normalise prototypes after each update.
      num_classes: C.
    """

    augment: Augment = Augment()
    buffer_size: int = 200
    slots: int = 210
    minibatch_size: int = 10
    dim: int = 100
    temperature: float = 0.1
    momentum: float = 0.99
    iters: int = 1
    renormalize: bool = False
    num_classes: int = 10


@struct.dataclass
class ClassBuffer:
    """The class-balanced buffer.

    Attributes:
      x: uint8 [S, H, W, C] stored (non-augmented) images.
      y: int32 [S] labels, -1 for an empty slot.
      key: int32 [S] queue order inside a class (larger = newer).
      counter: int32 [] the next queue key.
      seen_count: int32 [C] examples of each class met in the stream.
      share: int32 [] examples a class may hold (``M // classes seen``).
    """

    x: jax.Array
    y: jax.Array
    key: jax.Array
    counter: jax.Array
    seen_count: jax.Array
    share: jax.Array

    def counts(self, num_classes: int) -> jax.Array:
        """int32 [C]: examples each class holds."""
        return jnp.sum(self.y[:, None] == jnp.arange(num_classes)[None, :], axis=0).astype(jnp.int32)


@struct.dataclass
class State:
    """CoPE state.

    Attributes:
      net: the embedding network, BN statistics, optimizer state, counters.
      buffer: the class-balanced buffer.
      prototypes: float32 [C, D] one prototype per class.
      seen: bool [C] classes met in the stream (their prototype is in use).
      swept: the sweepable hyperparameters (:data:`SWEEPABLE`) as float32 [].
      static: the static (hashable) hyperparameters of the run.
    """

    net: ModelState
    buffer: ClassBuffer
    prototypes: jax.Array
    seen: jax.Array
    swept: dict
    static: Static = struct.field(pytree_node=False)


SWEEPABLE = ("optim.lr",)
"""Config fields carried as arrays in ``State.swept`` (no shape depends on them)."""


def init(rng: jax.Array, config, scenario) -> State:
    """A fresh CoPE State: an embedding network of ``online.cope_dim``
    outputs from ``config.model``, optimizer from ``config.optim``, an empty
    class-balanced buffer, random unit prototypes.

    Raises:
      ConfigError: a bad ``replay`` or ``online`` block; ValueError: a
      buffer smaller than the number of classes (a class would get no slot).
    """
    r = sections.block(config, REPLAY)
    o = sections.block(config, ONLINE)
    C, M, B = int(scenario.num_classes), int(r["buffer_size"]), int(config.train.batch_size)
    if M < C:
        raise ValueError(f"replay.buffer_size={M} is invalid for cope with {C} classes: each seen class "
                         f"keeps buffer_size // classes_seen examples, so it must be >= {C}.")
    static = Static(augment=common.augment_from_config(config.augment, scenario), buffer_size=M, slots=M + B,
                    minibatch_size=int(r["minibatch_size"]), dim=int(o["cope_dim"]),
                    temperature=float(o["cope_temperature"]), momentum=float(o["cope_momentum"]),
                    iters=int(o["cope_iters"]), renormalize=bool(o["cope_renormalize"]), num_classes=C)
    k_net, k_proto = jax.random.split(rng)
    model = common.model_from_config(config.model, static.dim)
    net = common.init_model_state(k_net, model, common.optim_spec_from_config(config.optim), scenario.image_shape)
    S = static.slots
    buf = ClassBuffer(x=jnp.zeros((S, *scenario.image_shape), jnp.uint8), y=jnp.full((S,), -1, jnp.int32),
                      key=jnp.zeros((S,), jnp.int32), counter=jnp.zeros((), jnp.int32),
                      seen_count=jnp.zeros((C,), jnp.int32), share=jnp.asarray(M // C, jnp.int32))
    return State(net=net, buffer=buf, prototypes=init_prototypes(k_proto, C, static.dim),
                 seen=jnp.zeros((C,), bool), swept={"optim.lr": jnp.float32(config.optim.lr)}, static=static)


def init_prototypes(rng: jax.Array, num_classes: int, dim: int) -> jax.Array:
    """float32 [C, D]: uniform [0, 1) vectors, L2-normalised (the official
    initial prototype)."""
    return common.l2_normalize(jax.random.uniform(rng, (num_classes, dim), jnp.float32))


def begin_task(state: State, task: TaskInfo) -> State:
    """Resets the optimizer state and the in-task counters."""
    return state.replace(net=common.begin_task_model(state.net, task))


def end_task(state: State, task_data) -> State:
    del task_data
    return state


def embed(state: State, params, batch_stats, x: jax.Array, train: bool):
    """(L2-normalised embeddings float32 [N, D], new batch_stats)."""
    out, bs = common.forward(state.net, params, batch_stats, x, train=train)
    return common.l2_normalize(out), bs


# --------------------------------------------------------------- the loss
def _lse(a: jax.Array, mask: jax.Array, axis: int) -> jax.Array:
    """Masked log-sum-exp; 0 where the mask is empty (never -inf, so a
    gradient through a masked-out branch stays finite)."""
    a = jnp.where(mask, a, -jnp.inf)
    m = jnp.max(a, axis=axis, keepdims=True)
    m = jnp.where(jnp.isfinite(m), m, 0.0)
    s = jnp.sum(jnp.where(mask, jnp.exp(a - m), 0.0), axis=axis)
    return jnp.where(jnp.any(mask, axis=axis), jnp.log(jnp.maximum(s, 1e-38)) + jnp.squeeze(m, axis), 0.0)


def ppp_loss(f: jax.Array, y: jax.Array, valid: jax.Array, prototypes: jax.Array, seen: jax.Array,
             temperature) -> jax.Array:
    """The pseudo-prototypical proxy loss (De Lange & Tuytelaars 2021, Eq. 3-6),
    as the official ``PPPloss.softmax_joint`` computes it.

    For an example ``i`` of class ``c`` (``B^c`` its class's examples in the
    batch, ``p_k`` the prototypes of the other seen classes, all similarities
    ``u . v / T``):

    * attractor: ``P(c | i)`` averaged over the ``|B^c|`` proxies of class
      ``c`` seen from ``i``: the prototype ``p_c`` and each other example
      ``j`` of ``B^c`` (a pseudo-prototype), each as ``e^{j.i} / (e^{j.i} +
      sum_k e^{p_k.i})``; the proxies and prototypes are constants, the
      gradient flows through ``f_i``; term ``-log`` of the average;
    * repellor: for every example ``k`` of another class, ``P(c | k)`` as the
      mean of the same ratio through the proxy ``i`` and through ``p_c``
      (denominator over the prototypes other than ``p_c``); term
      ``-log(1 - P(c | k))``, the gradient through both ``f_i`` and ``f_k``;
    * summed over classes and examples, divided by the number of examples.

    Args:
      f: float32 [N, D] L2-normalised embeddings (new and replayed).
      y: int32 [N] labels.
      valid: bool [N] the rows that count.
      prototypes: float32 [C, D] (treated as constants).
      seen: bool [C] the classes whose prototypes exist; every valid label
        must be seen, and at least two classes (the official code skips the
        loss before that; here the caller does).
      temperature: T > 0 (float or float32 []).

    Returns:
      float32 [] the loss (0 for an empty batch).
    """
    f = f.astype(jnp.float32)
    p = jax.lax.stop_gradient(prototypes.astype(jnp.float32))
    C = p.shape[0]
    n = f.shape[0]
    inv_t = 1.0 / temperature
    q = (f @ p.T) * inv_t                                            # [N, C] example . prototype
    # others[k, c] = log sum_{m seen, m != c} e^{q[k, m]}
    excl = seen[None, None, :] & ~jnp.eye(C, dtype=bool)[None, :, :]   # [1, C(c), C(m)]
    others = _lse(jnp.broadcast_to(q[:, None, :], (n, C, C)), excl, axis=-1)    # [N, C]
    same = (y[:, None] == y[None, :]) & valid[:, None] & valid[None, :]
    not_self = ~jnp.eye(n, dtype=bool)

    # attractor: rows i (the example, with gradient), proxies j of its class (constants)
    a = (f @ jax.lax.stop_gradient(f).T) * inv_t                     # a[i, j] = f_j . f_i / T
    lk_i = jnp.take_along_axis(others, y[:, None], axis=1)[:, 0]     # [N]
    q_own = jnp.take_along_axis(q, y[:, None], axis=1)[:, 0]         # [N]
    log_p_pseudo = a - jnp.logaddexp(a, lk_i[:, None])               # [N, N]
    log_p_proto = q_own - jnp.logaddexp(q_own, lk_i)                 # [N]
    terms = jnp.concatenate([log_p_pseudo, log_p_proto[:, None]], axis=1)
    tmask = jnp.concatenate([same & not_self, valid[:, None]], axis=1)
    n_c = jnp.sum(same, axis=1).astype(jnp.float32)                  # |B^c| of row i's class
    log_mean = _lse(terms, tmask, axis=1) - jnp.log(jnp.maximum(n_c, 1.0))
    attract = jnp.sum(jnp.where(valid, log_mean, 0.0))

    # repellor: rows i of class c (with gradient) against columns k of other classes (with gradient)
    s = (f @ f.T) * inv_t                                            # s[i, k]
    l_ck = others[:, y].T                                            # l_ck[i, k] = others[k, y_i]
    q_ck = q[:, y].T                                                 # q_ck[i, k] = p_{y_i} . f_k / T
    log_not = jnp.logaddexp(jax.nn.log_sigmoid(-(s - l_ck)), jax.nn.log_sigmoid(-(q_ck - l_ck))) - math.log(2.0)
    pair = (y[:, None] != y[None, :]) & valid[:, None] & valid[None, :]
    repel = jnp.sum(jnp.where(pair, log_not, 0.0))
    return -(attract + repel) / jnp.maximum(jnp.sum(valid).astype(jnp.float32), 1.0)


# ------------------------------------------------------------- the buffer
def _class_rank(y: jax.Array, order_key: jax.Array, num_classes: int):
    """Rank of each slot inside its class when the class is sorted by
    ``order_key`` ascending, and the sorted slot order.

    Returns:
      (rank int32 [S] (empty slots: undefined), order int32 [S] the slots
      sorted by (class, order_key), empty slots last, start int32 [C] the
      sorted position of each class's first slot).
    """
    S = y.shape[0]
    ys = jnp.where(y < 0, num_classes, y)
    order = jnp.lexsort((order_key, ys)).astype(jnp.int32)
    counts = jnp.sum(ys[:, None] == jnp.arange(num_classes)[None, :], axis=0).astype(jnp.int32)
    start = jnp.concatenate([jnp.zeros((1,), jnp.int32), jnp.cumsum(counts)[:-1].astype(jnp.int32)])
    pos = jnp.zeros((S,), jnp.int32).at[order].set(jnp.arange(S, dtype=jnp.int32))
    rank = pos - start[jnp.minimum(ys, num_classes - 1)]
    return rank, order, start


def sample_balanced(buf: ClassBuffer, rng: jax.Array, size: int, num_classes: int):
    """The official class-balanced draw (``SampleScheme.sample_random``):
    ``min(size, stored)`` picks, each of a class chosen uniformly among the
    classes with stored examples not yet picked, then that many examples of
    each class drawn without replacement.

    Returns:
      (idx int32 [size] buffer slots, valid bool [size]); the valid rows come first.
    """
    k_cls, k_ex = jax.random.split(rng)
    counts = buf.counts(num_classes)
    total = jnp.sum(counts)

    def pick(t, cnt):
        avail = cnt < counts
        u = jax.random.uniform(jax.random.fold_in(k_cls, t), (num_classes,))
        c = jnp.argmax(jnp.where(avail, u, -1.0))
        return cnt.at[c].add(jnp.where((t < total) & jnp.any(avail), 1, 0))

    cnt = jax.lax.fori_loop(0, size, pick, jnp.zeros((num_classes,), jnp.int32))
    u = jax.random.uniform(k_ex, buf.y.shape)
    rank, _, _ = _class_rank(buf.y, u, num_classes)
    chosen = (buf.y >= 0) & (rank < cnt[jnp.maximum(buf.y, 0)])
    S = buf.y.shape[0]
    # chosen slots first (a stable sort on "not chosen")
    idx = jnp.argsort(~chosen, stable=True)[:size].astype(jnp.int32)
    if size > S:
        idx = jnp.concatenate([idx, jnp.zeros((size - S,), jnp.int32)])
    valid = jnp.arange(size) < jnp.sum(chosen)
    return idx, valid


def buffer_add(buf: ClassBuffer, rng: jax.Array, x: jax.Array, y: jax.Array, seen: jax.Array,
               buffer_size: int, valid: jax.Array | None = None) -> ClassBuffer:
    """Adds a batch to the class-balanced buffer (official ``MemoryScheme``,
    ``update_reservoir_queue`` then ``update_mem_sizes``).

    A class holding fewer than ``share`` examples appends its new ones and
    keeps its newest ``share``; a full class offers each new example to a
    reservoir within the class (slot ``r ~ U{0..seen_count-1}``, replaced when
    ``r < share``; the later example wins a collision); then, if the classes
    seen (``seen``, this batch's included) make ``M // n`` differ from
    ``share``, every class keeps a uniformly random ``M // n`` of its
    examples, in a random queue order.

    Args:
      buf: the buffer.
      rng: PRNG key.
      x: uint8 [B, H, W, C] non-augmented images; y: int32 [B] labels.
      seen: bool [C] classes seen, this batch's included.
      buffer_size: M.
      valid: optional bool [B] the rows offered.

    Returns:
      the new buffer; afterwards every class holds ``min(seen_count, share)``
      examples.

    Raises:
      ValueError: more new examples than spare slots (B > S - M).
    """
    B, S, C = y.shape[0], buf.y.shape[0], buf.seen_count.shape[0]
    if B > S - buffer_size:
        raise ValueError(f"cope: a batch of {B} needs {B} spare buffer slots, the buffer has {S - buffer_size} "
                         "(slots = replay.buffer_size + train.batch_size).")
    valid = jnp.ones((B,), bool) if valid is None else valid.astype(bool)
    k_res, k_cut = jax.random.split(rng)
    counts = buf.counts(C)
    share = buf.share
    yc = jnp.clip(y, 0, C - 1)
    n_new = jnp.zeros((C,), jnp.int32).at[yc].add(valid.astype(jnp.int32))
    seen_count = buf.seen_count + n_new
    full = counts[yc] >= share                                       # [B] the class replaces by reservoir

    # appends: the j-th appending row takes the j-th free slot
    app = valid & ~full
    free_order = jnp.argsort(buf.y >= 0, stable=True).astype(jnp.int32)   # free slots first
    app_rank = jnp.cumsum(app.astype(jnp.int32)) - 1
    app_slot = jnp.where(app, free_order[jnp.clip(app_rank, 0, S - 1)], S)
    # reservoir inside a full class: queue position r of that class
    r = jnp.floor(jax.random.uniform(k_res, (B,)) * seen_count[yc].astype(jnp.float32)).astype(jnp.int32)
    r = jnp.minimum(r, seen_count[yc] - 1)
    _, order, start = _class_rank(buf.y, buf.key, C)
    res_slot = order[jnp.clip(start[yc] + r, 0, S - 1)]
    res = valid & full & (r < share)
    slot = jnp.where(app, app_slot, jnp.where(res, res_slot, S))
    later = jnp.arange(B)[None, :] > jnp.arange(B)[:, None]
    clobbered = jnp.any(later & (slot[None, :] == slot[:, None]) & (slot[None, :] < S), axis=1)
    slot = jnp.where(clobbered, S, slot)
    new_key = jnp.where(app, buf.counter + jnp.arange(B, dtype=jnp.int32), buf.key[jnp.minimum(slot, S - 1)])
    bx = buf.x.at[slot].set(x.astype(jnp.uint8), mode="drop")
    by = buf.y.at[slot].set(y.astype(jnp.int32), mode="drop")
    bkey = buf.key.at[slot].set(new_key, mode="drop")
    counter = buf.counter + B

    # a class over its share after appending keeps its newest `share`
    rank_new, _, _ = _class_rank(by, -bkey, C)
    by = jnp.where((by >= 0) & (rank_new >= share), -1, by)

    # a new share when the number of classes seen changes: a random subset per class
    n_seen = jnp.maximum(jnp.sum(seen.astype(jnp.int32)), 1)
    new_share = jnp.asarray(buffer_size, jnp.int32) // n_seen
    u = jax.random.uniform(k_cut, (S,))
    rank_cut, _, _ = _class_rank(by, u, C)
    glob = jnp.zeros((S,), jnp.int32).at[jnp.argsort(u)].set(jnp.arange(S, dtype=jnp.int32))
    cut = new_share != share
    by = jnp.where(cut & (by >= 0) & (rank_cut >= new_share), -1, by)
    bkey = jnp.where(cut, counter + glob, bkey)
    counter = jnp.where(cut, counter + S, counter)
    return buf.replace(x=bx, y=by, key=bkey, counter=counter, seen_count=seen_count, share=new_share)


# ------------------------------------------------------------------ step
def train_step(state: State, batch: dict, rng: jax.Array):
    """One CoPE step on an incoming batch (module doc).

    Args:
      state: the State.
      batch: ``x`` float32 [B, H, W, C] augmented images, ``x_raw`` uint8
        [B, H, W, C], ``y`` int32 [B].
      rng: PRNG key of the replay draws, their augmentation and the buffer update.

    Returns:
      (new State, metrics: ``loss`` (PPP loss of the last update, 0 before
      two classes are seen), ``acc`` (nearest-prototype accuracy on the
      incoming batch before the update), ``replayed`` (examples replayed)).
    """
    static, buf = state.static, state.buffer
    C, B, R = static.num_classes, batch["y"].shape[0], static.minibatch_size
    keys = jax.random.split(rng, 2 * static.iters + 1)
    seen = state.seen.at[batch["y"]].set(True)
    learn = jnp.sum(seen.astype(jnp.int32)) >= 2
    protos = state.prototypes
    p_sum = jnp.zeros((C, static.dim), jnp.float32)
    p_cnt = jnp.zeros((C,), jnp.float32)
    net = state.net
    loss = jnp.zeros((), jnp.float32)
    first_f = None
    for it in range(static.iters):
        idx, mvalid = sample_balanced(buf, keys[2 * it], R, C)
        rows = jnp.arange(R) % B
        mx = static.augment(buf.x[idx], keys[2 * it + 1], train=True)
        mx = jnp.where(mvalid[:, None, None, None], mx, batch["x"][rows].astype(mx.dtype))
        my = jnp.where(mvalid, buf.y[idx], batch["y"][rows])
        x_ext = jnp.concatenate([batch["x"].astype(mx.dtype), mx])
        y_ext = jnp.concatenate([batch["y"], my])
        v_ext = jnp.concatenate([jnp.ones((B,), bool), mvalid])

        def loss_fn(params, net=net):
            f, bs = embed(state, params, net.batch_stats, x_ext, train=True)
            return ppp_loss(f, y_ext, v_ext, protos, seen, static.temperature), (f, bs)

        (l, (f, bs)), g = jax.value_and_grad(loss_fn, has_aux=True)(net.params)
        stepped = common.apply_gradients(net, g, bs, base_lr=state.swept["optim.lr"])
        net = stepped.replace(params=jax.tree.map(lambda a, b: jnp.where(learn, a, b), stepped.params, net.params),
                              opt_state=jax.tree.map(lambda a, b: jnp.where(learn, a, b), stepped.opt_state,
                                                     net.opt_state))
        loss = jnp.where(learn, l, 0.0)
        f = jax.lax.stop_gradient(f)
        if first_f is None:
            first_f = f[:B]
        # replayed rows' embeddings accumulate every update, the new rows' only at the last
        w = jnp.concatenate([jnp.full((B,), it == static.iters - 1), mvalid]).astype(jnp.float32)
        onehot = jax.nn.one_hot(y_ext, C, dtype=jnp.float32) * w[:, None]
        p_sum = p_sum + onehot.T @ f
        p_cnt = p_cnt + jnp.sum(onehot, axis=0)
    mean = p_sum / jnp.maximum(p_cnt, 1.0)[:, None]
    m = static.momentum
    moved = m * protos + (1.0 - m) * mean
    if static.renormalize:
        moved = common.l2_normalize(moved)
    protos = jnp.where((p_cnt > 0)[:, None], moved, protos)
    new_buf = buffer_add(buf, keys[-1], batch["x_raw"], batch["y"], seen, static.buffer_size)
    acc = common.accuracy(_scores(first_f, state.prototypes, state.seen), batch["y"])
    metrics = {"loss": loss, "acc": acc, "replayed": jnp.sum(mvalid).astype(jnp.float32)}
    return state.replace(net=net, buffer=new_buf, prototypes=protos, seen=seen), metrics


def _scores(f: jax.Array, prototypes: jax.Array, seen: jax.Array) -> jax.Array:
    return jnp.where(seen[None, :], f @ prototypes.T, UNSEEN_SCORE)


def predict(state: State, x: jax.Array, task_id: jax.Array | None = None) -> jax.Array:
    """Nearest-prototype scores float32 [B, C] of normalised x float32
    [B, H, W, C]: ``f . p_c`` for the seen classes (f the L2-normalised
    embedding, BatchNorm in eval mode), :data:`UNSEEN_SCORE` for the others;
    the argmax is the official prediction."""
    del task_id
    f, _ = embed(state, state.net.params, state.net.batch_stats, x, train=False)
    return _scores(f, state.prototypes, state.seen)


def memory_bytes(state: State) -> dict:
    """Bytes of the buffer (its M examples; the B spare slots not counted),
    the prototypes and the network's parameters."""
    per = int(state.buffer.x[0].nbytes) + 4
    return {"buffer": per * state.static.buffer_size, "prototypes": int(state.prototypes.nbytes),
            "model": common.param_bytes(state.net.params)}


def _spec():
    from clj.methods.api import MethodSpec

    return MethodSpec(init=init, begin_task=begin_task, train_step=train_step, end_task=end_task,
                      predict=predict, memory_bytes=memory_bytes, sweepable=SWEEPABLE)


SPEC = _spec()
