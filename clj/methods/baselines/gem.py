"""GEM: gradient episodic memory.

Source: Lopez-Paz & Ranzato, "Gradient Episodic Memory for Continual
Learning", NeurIPS 2017, Sec. 3: every past task ``k`` keeps an episodic
memory; a step's proposed gradient ``g`` may not increase any memory's loss,
``<g~, g_k> >= 0`` for every past task (Eq. 7-8).  When ``g`` violates a
constraint, it is replaced by the closest gradient that satisfies all of
them, found through the dual QP of Eq. 10-11:

    min_v  1/2 v^T G G^T v + g^T G^T v   s.t.  v >= 0,      g~ = G^T v + g,

``G`` [t, P] stacking the past tasks' memory gradients.

The protocol is Mammoth's ``gem`` model (the GEM authors' code, as Mammoth
runs it), with PyCIL's class-IL variant as a switch:

* the episodic memory has a fixed number of slots per task,
  ``replay.buffer_size // num_tasks`` (the paper's "m = M / T"), filled at the
  task's end with examples drawn uniformly without replacement from its
  training data (non-augmented images and labels); ``gem.memory =
  "class_balanced"`` is Mammoth's current ``fill_buffer`` instead: at every
  task's end each seen class gets ``buffer_size // seen_classes`` slots, the
  old classes keep the first examples of their share and the new classes'
  examples are drawn uniformly without replacement (task 1 of Seq-MNIST at
  M = 200 keeps 200 examples, cut to 100 after task 2, ...);
* every step computes, for each stored task, the cross-entropy gradient over
  all of that task's memory (augmented with the training transform, one
  forward per task, as Mammoth), then the stream batch's gradient;
* if any ``g . g_k < 0``, the dual QP is solved with Mammoth's margin and
  ridge: ``min 1/2 v^T (G G^T + eps I) v + (G g)^T v`` s.t. ``v >= gamma``
  (``gem.margin``; the paper's QP is ``margin = eps = 0``), and the step uses
  ``g~ = G^T v + g``; else ``g`` is kept unchanged;
* ``gem.logit_mask = "task"`` is PyCIL's ``models/gem.py``: the stream loss is
  taken over the current task's classes, task ``k``'s memory loss over task
  ``k``'s classes (and PyCIL sets ``margin = eps = 0``).

The QP has fixed shapes: ``num_tasks`` dual variables, the tasks not yet
stored masked out, solved by a jitted active-set method (Lawson & Hanson's
NNLS scheme on the bound-constrained QP) with a fixed iteration count
(:func:`solve_dual`).

Config: ``replay.buffer_size`` (M; ``minibatch_size``, ``alpha``, ``beta``
are not used) and the ``gem`` block (``margin``, ``eps``, ``logit_mask``,
``qp_iters``, ``memory``).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct
from jax.flatten_util import ravel_pytree

from clj.data.augment import Augment
from clj.methods import common, sections
from clj.methods.baselines import section as baselines_section
from clj.methods.common import ModelState, TaskInfo

_NEG = -1e9


@dataclasses.dataclass(frozen=True)
class Static:
    """Static hyperparameters (hashable).

    Attributes:
      augment: training transform of stream and memory examples.
      num_tasks: T, tasks of the scenario (the dual QP's size).
      per_task: m, memory slots of each task's row: ``buffer_size // T``,
        or with ``memory="class_balanced"`` the most any task holds (at
        its own end), ``max_k (M // seen_k) * |C_k|``.
      buffer_size: M.
      memory: ``"per_task"`` or ``"class_balanced"`` (module doc).
      margin: gamma, lower bound of the used dual variables.
      eps: ridge added to the Gram matrix's diagonal.
      logit_mask: ``"none"`` or ``"task"`` (module doc).
      qp_iters: outer iterations of :func:`solve_dual`.
    """

    augment: Augment = Augment()
    num_tasks: int = 5
    per_task: int = 40
    margin: float = 0.5
    eps: float = 1e-3
    logit_mask: str = "none"
    qp_iters: int = 15
    buffer_size: int = 200
    memory: str = "per_task"


@struct.dataclass
class State:
    """GEM state.

    Attributes:
      net: network, BN statistics, optimizer state, counters.
      mem_x: uint8 [T, m, H, W, C] the episodic memory, one row per task.
      mem_y: int32 [T, m] labels.
      mem_valid: bool [T, m] filled slots.
      stored: bool [T] tasks whose memory is filled.
      task_classes: bool [T, C] each stored task's classes.
      cur_classes: bool [C] classes of the task being trained.
      key: PRNG key of the task-end draws.
      swept: the sweepable hyperparameters (``optim.lr``) as float32 [].
      static: the static (hashable) hyperparameters of the run.
    """

    net: ModelState
    mem_x: jax.Array
    mem_y: jax.Array
    mem_valid: jax.Array
    stored: jax.Array
    task_classes: jax.Array
    cur_classes: jax.Array
    key: jax.Array
    swept: dict
    static: Static = struct.field(pytree_node=False)


SWEEPABLE = ("optim.lr",)
"""Config fields carried as arrays in ``State.swept``."""


def init(rng: jax.Array, config, scenario) -> State:
    """A fresh State: network from ``config.model``, optimizer from
    ``config.optim``, an empty memory of ``replay.buffer_size // num_tasks``
    slots per task (``gem.memory="class_balanced"``: rows of
    :func:`class_balanced_rows` slots).

    Raises:
      ConfigError: a bad ``replay`` or ``gem`` block; ValueError: a memory
        smaller than the number of tasks (no task would get a slot), or with
        ``class_balanced`` smaller than the number of classes.
    """
    r = sections.block(config, baselines_section.REPLAY)
    g = sections.block(config, baselines_section.GEM)
    M, T = int(r["buffer_size"]), int(scenario.num_tasks)
    memory = str(g["memory"])
    if memory == "class_balanced":
        C_all = int(scenario.num_classes)
        if M < C_all:
            raise ValueError(f"replay.buffer_size={M} is invalid for gem with memory='class_balanced' and "
                             f"{C_all} classes: each seen class gets buffer_size // seen_classes slots, so it "
                             f"must be >= {C_all}.")
        m = class_balanced_rows(M, scenario.classes_per_task)
    else:
        if M < T:
            raise ValueError(f"replay.buffer_size={M} is invalid for gem with {T} tasks: each task gets "
                             f"buffer_size // num_tasks slots, so it must be >= {T}.")
        m = M // T
    static = Static(augment=common.augment_from_config(config.augment, scenario), num_tasks=T, per_task=m,
                    margin=float(g["margin"]), eps=float(g["eps"]), logit_mask=str(g["logit_mask"]),
                    qp_iters=int(g["qp_iters"]) or 3 * T, buffer_size=M, memory=memory)
    k_net, k_state = jax.random.split(rng)
    C = int(scenario.num_classes)
    model = common.model_from_config(config.model, C)
    net = common.init_model_state(k_net, model, common.optim_spec_from_config(config.optim), scenario.image_shape)
    return State(net=net, mem_x=jnp.zeros((T, m, *scenario.image_shape), jnp.uint8),
                 mem_y=jnp.zeros((T, m), jnp.int32), mem_valid=jnp.zeros((T, m), bool),
                 stored=jnp.zeros((T,), bool), task_classes=jnp.zeros((T, C), bool),
                 cur_classes=jnp.ones((C,), bool), key=k_state,
                 swept={"optim.lr": jnp.float32(config.optim.lr)}, static=static)


def begin_task(state: State, task: TaskInfo) -> State:
    """Resets the optimizer state and the in-task counters; records the
    task's classes (for ``logit_mask="task"``)."""
    cur = state.cur_classes if task.class_mask is None else jnp.asarray(task.class_mask, bool)
    return state.replace(net=common.begin_task_model(state.net, task), cur_classes=cur)


def solve_dual(A: jax.Array, b: jax.Array, used: jax.Array, margin: float = 0.0,
               iters: int | None = None) -> jax.Array:
    """GEM's dual QP (Lopez-Paz & Ranzato 2017, Eq. 10-11, with the margin of
    the authors' code): ``min_v 1/2 v^T A v + b^T v`` s.t. ``v_k >= margin``
    for the used rows, ``v_k = 0`` for the others.

    With ``u = v - margin`` it is a bound-constrained QP (``u >= 0``), solved
    by Lawson & Hanson's active-set scheme (NNLS, 1974, Ch. 23) with fixed
    shapes: an outer loop frees the coordinate of largest negative gradient,
    an inner loop solves the free block exactly (masked linear solve) and
    steps back to feasibility.  Exact once converged (finite steps; 3T outer
    iterations suffice in practice), all under ``jit``/``vmap``.

    Args:
      A: float32 [T, T] symmetric positive (semi)definite (``G G^T + eps I``).
      b: float32 [T] (``G g``).
      used: bool [T], the tasks that constrain the step.
      margin: gamma >= 0.
      iters: outer iterations (default 3T).

    Returns:
      v float32 [T] (0 on unused rows).
    """
    T = A.shape[0]
    iters = 3 * T if iters is None else int(iters)
    A = A.astype(jnp.float32)
    used = used.astype(bool)
    pair = used[:, None] & used[None, :]
    A = jnp.where(pair, A, 0.0)
    mvec = jnp.where(used, jnp.float32(margin), 0.0)
    c = jnp.where(used, b.astype(jnp.float32) + A @ mvec, 0.0)
    scale = jnp.maximum(jnp.max(jnp.abs(c)), jnp.max(jnp.abs(jnp.diagonal(A))))
    tol = 1e-6 * jnp.maximum(scale, 1e-30)
    # a tiny ridge keeps the free block solvable when A is only semidefinite
    ridge = 1e-7 * jnp.maximum(jnp.max(jnp.diagonal(A)), 1e-30)
    eye = jnp.eye(T, dtype=jnp.float32)

    def solve_free(P):
        M = jnp.where(P[:, None] & P[None, :], A + ridge * eye, eye)
        s = jnp.linalg.solve(M, jnp.where(P, -c, 0.0))
        return jnp.where(P, s, 0.0)

    def inner(_, carry):
        u, P, fin = carry
        s = solve_free(P)
        ok = jnp.all(jnp.where(P, s > 0, True))
        neg = P & (s <= 0)
        ratio = jnp.where(neg, u / jnp.where(neg, u - s, 1.0), jnp.inf)
        alpha = jnp.clip(jnp.min(ratio), 0.0, 1.0)
        u_step = u + alpha * (s - u)
        P_step = P & (u_step > tol * 1e-3) & ~(neg & (ratio <= alpha))
        u_step = jnp.where(P_step, u_step, 0.0)
        u_new = jnp.where(fin, u, jnp.where(ok, s, u_step))
        P_new = jnp.where(fin, P, jnp.where(ok, P, P_step))
        return u_new, P_new, fin | ok

    def outer(_, carry):
        u, P = carry
        w = -(A @ u + c)
        cand = used & ~P & (w > tol)
        done = ~jnp.any(cand)
        j = jnp.argmax(jnp.where(cand, w, -jnp.inf))
        P1 = jnp.where(done, P, P.at[j].set(True))
        u1, P1, _ = jax.lax.fori_loop(0, T, inner, (u, P1, done))
        return u1, P1

    u0 = jnp.zeros((T,), jnp.float32)
    u, _ = jax.lax.fori_loop(0, iters, outer, (u0, jnp.zeros((T,), bool)))
    return jnp.where(used, jnp.maximum(u, 0.0) + mvec, 0.0)


def project(g_flat: jax.Array, G: jax.Array, used: jax.Array, margin: float = 0.5, eps: float = 1e-3,
            iters: int | None = None):
    """GEM's projection of a proposed gradient (Eq. 10-11; Mammoth's
    ``project2cone2``).

    Args:
      g_flat: float32 [P] the proposed gradient, flattened.
      G: float32 [T, P] the memory gradients of the tasks (rows of unused
        tasks are ignored).
      used: bool [T] the stored tasks.
      margin, eps: Mammoth's gamma and ridge.
      iters: outer iterations of :func:`solve_dual`.

    Returns:
      ``(g~, dots, violated)``: ``g~`` float32 [P] = ``G^T v + g`` when some
      used ``g . g_k < 0`` (``violated``, bool []), else ``g`` unchanged
      (bit-identical); ``dots`` float32 [T] the products ``G g`` before the
      projection (0 on unused rows).
    """
    G = jnp.where(used[:, None], G.astype(jnp.float32), 0.0)
    g = g_flat.astype(jnp.float32)
    dots = G @ g
    violated = jnp.any(used & (dots < 0))
    A = G @ G.T
    A = 0.5 * (A + A.T) + eps * jnp.eye(A.shape[0], dtype=jnp.float32)
    v = solve_dual(A, dots, used, margin, iters)
    g_new = g + G.T @ v
    return jnp.where(violated, g_new, g), dots, violated


def _mask(logits, classes):
    return jnp.where(classes[None, :], logits, _NEG)


def train_step(state: State, batch: dict, rng: jax.Array):
    """One GEM step (module doc).

    Args:
      state: the State.
      batch: ``x`` float32 [B, H, W, C] augmented stream images, ``y`` int32 [B].
      rng: PRNG key of the memory augmentation.

    Returns:
      (new State, metrics: ``loss`` (stream CE), ``loss_mem`` (mean memory CE
      over the stored tasks, 0 while none is), ``projected`` (1 when the step
      projected), ``acc``).
    """
    static, net = state.static, state.net
    task_mask = static.logit_mask == "task"

    # one gradient per stored task (Mammoth: memory first, one forward per task)
    keys = jax.random.split(rng, static.num_tasks)

    def task_grad(bs, k):
        x = static.augment(state.mem_x[k], keys[k], train=True)
        y, w = state.mem_y[k], state.mem_valid[k]

        def loss_fn(p):
            out, bs_new = common.forward(net, p, bs, x, train=True)
            if task_mask:
                out = _mask(out, state.task_classes[k])
            return common.cross_entropy(out, y, w), bs_new

        (l, bs_new), gk = jax.value_and_grad(loss_fn, has_aux=True)(net.params)
        return bs_new, ravel_pytree(gk)[0].astype(jnp.float32), l

    P = ravel_pytree(net.params)[0].shape[0]

    def scan_body(bs, k):
        live = state.stored[k]

        def run(bs):
            bs_new, gk, l = task_grad(bs, k)
            bs_new = jax.tree_util.tree_map(lambda a, b: jnp.where(live, b, a), bs, bs_new)
            return bs_new, jnp.where(live, gk, 0.0), jnp.where(live, l, 0.0)

        def skip(bs):
            return bs, jnp.zeros((P,), jnp.float32), jnp.zeros((), jnp.float32)

        bs, gk, l = jax.lax.cond(common.any_seed(live), run, skip, bs)
        return bs, (gk, l)

    bs, (G, losses) = jax.lax.scan(scan_body, net.batch_stats, jnp.arange(static.num_tasks))

    def stream_loss(params):
        logits, bs_new = common.forward(net, params, bs, batch["x"], train=True)
        if task_mask:
            logits = _mask(logits, state.cur_classes)
        return common.cross_entropy(logits, batch["y"]), (bs_new, logits)

    (loss, (bs, logits)), g = jax.value_and_grad(stream_loss, has_aux=True)(net.params)
    g_flat, unravel = ravel_pytree(g)
    g_new, _, violated = project(g_flat, G, state.stored, static.margin, static.eps, static.qp_iters)
    g = jax.tree_util.tree_map(lambda a, b: b.astype(a.dtype), g, unravel(g_new))
    new_net = common.apply_gradients(net, g, bs, base_lr=state.swept["optim.lr"])
    n_stored = jnp.maximum(jnp.sum(state.stored), 1)
    metrics = {"loss": loss, "loss_mem": jnp.sum(losses) / n_stored, "projected": violated.astype(jnp.float32),
               "acc": common.accuracy(logits, batch["y"])}
    return state.replace(net=new_net), metrics


def class_balanced_rows(buffer_size: int, classes_per_task) -> int:
    """Slots of one task's memory row under ``gem.memory="class_balanced"``:
    the most any task holds, which is at its own end,
    ``max_k (M // seen_k) * |C_k|`` (``seen_k`` the classes of tasks 0..k).

    Args:
      buffer_size: M, examples in the whole memory.
      classes_per_task: |C_k| for each task in order.

    Returns:
      int >= 1.
    """
    seen, most = 0, 1
    for n in classes_per_task:
        seen += int(n)
        most = max(most, (int(buffer_size) // max(seen, 1)) * int(n))
    return most


def _within_class_rank(y: jax.Array, valid: jax.Array, num_classes: int) -> jax.Array:
    """int32 [..., m]: for each valid slot, how many valid slots before it
    (in slot order) hold the same label; y int32 [..., m], valid bool [..., m]."""
    onehot = (y[..., None] == jnp.arange(num_classes)) & valid[..., None]
    before = jnp.cumsum(onehot.astype(jnp.int32), axis=-2) - onehot.astype(jnp.int32)
    return jnp.take_along_axis(before, y[..., None], axis=-1)[..., 0]


def _pack(keep: jax.Array, cap: int):
    """Slot indices int32 [cap] that put the kept slots first (in order) and
    fill the rest by repeating them, and the bool [cap] mask of the kept
    count; keep bool [n]."""
    n_keep = jnp.sum(keep)
    order = jnp.nonzero(keep, size=cap, fill_value=0)[0]
    pick = order[jnp.arange(cap) % jnp.maximum(n_keep, 1)]
    return pick, jnp.arange(cap) < n_keep


def _end_task_class_balanced(state: State, task_data, t, classes, k_perm) -> State:
    """``gem.memory="class_balanced"``: Mammoth's ``fill_buffer`` (module doc)."""
    static = state.static
    cap, C = static.per_task, state.task_classes.shape[1]
    n_seen = jnp.sum(jnp.any(state.task_classes & state.stored[:, None], axis=0) | classes)
    share = static.buffer_size // jnp.maximum(n_seen, 1)

    # 1) the stored rows: each old class keeps its first `share` examples
    rank = _within_class_rank(state.mem_y, state.mem_valid, C)
    keep = state.mem_valid & (rank < share) & state.stored[:, None]
    pick, valid = jax.vmap(lambda k: _pack(k, cap))(keep)
    mem_x = jnp.take_along_axis(state.mem_x, pick.reshape(pick.shape + (1,) * (state.mem_x.ndim - 2)), axis=1)
    mem_y = jnp.take_along_axis(state.mem_y, pick, axis=1)

    # 2) the new row: `share` examples of each of the task's classes, drawn
    # uniformly without replacement, grouped by class
    y = task_data["y"].astype(jnp.int32)
    n = y.shape[0]
    perm = jax.random.permutation(k_perm, n)
    by_class = perm[jnp.argsort(y[perm], stable=True)]
    ys = y[by_class]
    rank_new = jnp.arange(n) - jnp.searchsorted(ys, ys, side="left")
    sel, valid_t = _pack(rank_new < share, cap)
    rows = by_class[sel]
    return state.replace(
        mem_x=mem_x.at[t].set(task_data["x"][rows]),
        mem_y=mem_y.at[t].set(y[rows]),
        mem_valid=valid.at[t].set(valid_t),
        stored=state.stored.at[t].set(True),
        task_classes=state.task_classes.at[t].set(classes))


def end_task(state: State, task_data) -> State:
    """Fills the memory row of the task just trained with ``per_task``
    examples drawn uniformly without replacement (all of them, the rest of
    the row empty, when the task has fewer).  With ``gem.memory =
    "class_balanced"``, first cuts every stored class to ``M // seen``
    examples, then stores ``M // seen`` of each new class (module doc).
    A row's unused slots repeat its used ones (so a BatchNorm forward over
    the row sees only stored examples) and carry zero loss weight.

    Args:
      task_data: ``x`` uint8 [N, H, W, C], ``y`` int32 [N], ``info``
        (:class:`TaskInfo`) of the task just trained.
    """
    if state.static.memory == "class_balanced":
        key, k_perm = jax.random.split(state.key)
        info = task_data["info"]
        classes = state.cur_classes if info.class_mask is None else jnp.asarray(info.class_mask, bool)
        new = _end_task_class_balanced(state, task_data, jnp.asarray(info.task_id, jnp.int32), classes, k_perm)
        return new.replace(key=key)
    key, k_perm = jax.random.split(state.key)
    n, m = task_data["y"].shape[0], state.static.per_task
    order = jax.random.permutation(k_perm, n)
    pick = order[jnp.arange(m) % n]
    valid = jnp.arange(m) < n
    info = task_data["info"]
    t = jnp.asarray(info.task_id, jnp.int32)
    classes = state.cur_classes if info.class_mask is None else jnp.asarray(info.class_mask, bool)
    return state.replace(
        mem_x=state.mem_x.at[t].set(task_data["x"][pick]),
        mem_y=state.mem_y.at[t].set(task_data["y"][pick].astype(jnp.int32)),
        mem_valid=state.mem_valid.at[t].set(valid),
        stored=state.stored.at[t].set(True),
        task_classes=state.task_classes.at[t].set(classes),
        key=key)


def predict(state: State, x: jax.Array, task_id: jax.Array | None = None) -> jax.Array:
    """Logits float32 [B, C] of normalised x float32 [B, H, W, C] (BN in eval mode)."""
    del task_id
    logits, _ = common.forward(state.net, state.net.params, state.net.batch_stats, x, train=False)
    return logits


def memory_bytes(state: State) -> dict:
    """Bytes of the episodic memory (images, labels, masks) and of the model's parameters."""
    buf = sum(int(a.size * a.dtype.itemsize) for a in (state.mem_x, state.mem_y, state.mem_valid, state.stored))
    return {"buffer": buf, "model": common.param_bytes(state.net.params)}


def _spec():
    from clj.methods.api import MethodSpec

    return MethodSpec(init=init, begin_task=begin_task, train_step=train_step, end_task=end_task,
                      predict=predict, memory_bytes=memory_bytes, sweepable=SWEEPABLE)


SPEC = _spec()
