"""Coil: co-transport between the classifiers of old and new classes, on a
cosine classifier with a herding exemplar memory, as PyCIL runs it.

Source: Zhou, Ye & Zhan, "Co-Transport for Class-Incremental Learning",
ACM MM 2021 (Sec. 3: semantic relations between classes as an optimal
transport plan over class-mean distances; prospective transport old -> new
initialises and guides the new classifier, Eq. 5-7; retrospective transport
new -> old regularises the features, Eq. 8-9); PyCIL ``models/coil.py``
(commit 87cc411), whose choices this module follows (``docs/memo.md``,
"Coil").

The network is the backbone of ``config.model`` with a cosine classifier
over all C classes, ``logits = sigma * cos(f, w_c)`` (one learnable scale
sigma; PyCIL's ``SimpleCosineIncrementalNet``); the backbone's own linear
head is unused and frozen.  Per task t:

1. ``begin_task``: the phase optimizer (``config.optim`` for task 0, the
   ``cil.update_*`` settings later) is reset and the task's statics set.
2. Prospective transport (tasks >= 1, before the task's first update): class
   means (mean of L2-normalised features, normalised again) of the old
   classes (the memory's NME means, computed with the network at the end of
   task t-1) and of the new classes (the new rows of the task's first batch,
   eval mode, the same network); cost = Minkowski-p distance between them;
   plan ``P = sinkhorn(1/K, 1/K, cost)`` (K old classes, the new marginal
   1/K per class as PyCIL); the new rows of the classifier are set to
   ``K * gamma * P^T normalize(W_old)``, ``gamma`` = mean old row norm /
   mean transported row norm (the calibration term, kept for step 4).
3. ``train_step``: a batch of new data and exemplars (``cil.batching``); task
   0: CE; tasks >= 1: ``(1 - l) CE + l KD`` (l = known / total, KD over the
   old classes at temperature ``cil.kd_T`` to the network of task t-1) plus,
   in the first epoch, ``coil.prospective_weight`` x the distillation of the
   new-class logits toward ``softmax(cos(f, W_prospective) / T)``, and from
   the second epoch ``coil.reg_term * (epoch / epochs)^2`` x the
   distillation of the old model's old-class probabilities into
   ``log_softmax(cos(f, W_retrospective) / T)``, where the retrospective
   classifier ``K * gamma * Q^T normalize(W_new)``, ``Q = sinkhorn(1/K, 1/K,
   cost(new, old))``, is recomputed every ``coil.ot_every`` steps of an epoch
   (PyCIL: every 30 batches) from the class means of the features the steps
   of the window computed (running sums, so no extra forward pass).
4. ``end_task``: herding (reduce, then construct) with the backbone's
   features, NME means, and a frozen copy of the network for the next task.

Differences from PyCIL (``docs/memo.md``, "Coil"): PyCIL computes the
prospective plan at the end of task t from the *next* task's whole training
set (and the old classes' whole training sets); here it uses what the method
can see, the memory and the new task's first batch.  The retrospective means
come from the training-mode features of the last window's batches instead of
a fresh eval-mode pass over the memory and the task's data.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import struct

from clj.data.augment import Augment  # noqa: F401 - the inherited Static fields' annotations (API reference)
from clj.methods.common import OptimSpec  # noqa: F401 - likewise
from clj.methods import common, sections
from clj.methods.cil import common as cc
from clj.methods.cil import icarl
from clj.methods.cil.icarl_phases import begin_phase, phase_lr, resolve_memory_size, task_statics, task_steps
from clj.methods.cil.section import CIL, COIL
from clj.methods.common import ModelState, TaskInfo, any_seed
from clj.replay import exemplars as ex

NORM_EPS = 1e-12  # torch.nn.functional.normalize's eps
COST_EPS = 1e-8   # PyCIL's EPSILON added to the retrospective cost


# ------------------------------------------------------------ transport pieces
def minkowski_cdist(a: jax.Array, b: jax.Array, p: float) -> jax.Array:
    """Pairwise Minkowski distances ``(sum_d |a_i - b_j|^p)^(1/p)``
    (``torch.cdist(a, b, p)``), float32 [n, m] from float32 [n, D] and
    [m, D].  Computed by broadcasting (no matrix product)."""
    d = jnp.abs(a.astype(jnp.float32)[:, None, :] - b.astype(jnp.float32)[None, :, :])
    s = jnp.sum(d ** p, -1)
    return jnp.where(s > 0, s, 1.0) ** (1.0 / p) * (s > 0)


def sinkhorn(a: jax.Array, b: jax.Array, cost: jax.Array, reg: float | jax.Array,
             num_iters: int = 1000) -> jax.Array:
    """Entropic optimal transport plan by Sinkhorn-Knopp scaling (Cuturi,
    NeurIPS 2013), POT's ``ot.sinkhorn`` iteration run a fixed number of times.

    Args:
      a: float32 [n] source weights (rows); b: float32 [m] target weights
        (columns); cost: float32 [n, m]; reg: entropic regularisation (> 0).
      num_iters: iterations (static); POT stops earlier once the column sums
        are within 1e-9 of ``b``, which changes nothing beyond that tolerance.

    Returns:
      float32 [n, m] plan ``diag(u) K diag(v)``, ``K = exp(-cost / reg)``;
      its row sums equal ``a`` (the last update is u's) and, when ``sum a ==
      sum b``, its column sums converge to ``b``.  With unequal masses (PyCIL's
      1/K weights of the new classes) the rows still sum to ``a``; u is
      rescaled by its mean before each update (the plan is invariant to that
      scale), so the scalings, which drift by ``sum a / sum b`` per
      iteration in POT's float64 loop, cannot overflow in float32.
    """
    a = a.astype(jnp.float32)
    b = b.astype(jnp.float32)
    K = jnp.exp(-cost.astype(jnp.float32) / reg)
    Kp = K / a[:, None]
    n, m = K.shape

    def body(_, uv):
        u, _v = uv
        u = u / jnp.mean(u)  # the plan is invariant to u -> u / c, v -> c v: no drift to overflow
        v = b / jnp.sum(K * u[:, None], 0)      # b / (K^T u)
        u = 1.0 / jnp.sum(Kp * v[None, :], 1)   # a / (K v)
        return u, v

    u, v = jax.lax.fori_loop(0, int(num_iters), body, (jnp.full((n,), 1.0 / n), jnp.full((m,), 1.0 / m)))
    return u[:, None] * K * v[None, :]


def transport_weights(plan: jax.Array, weights: jax.Array, scale: jax.Array | float) -> jax.Array:
    """Classifier rows moved through a plan: ``scale * plan^T normalize(W)``.

    Args:
      plan: float32 [n, m]; weights: float32 [n, D] the source classes' rows.
      scale: the factor (PyCIL: number of old classes x calibration).

    Returns:
      float32 [m, D] (broadcast and sum, no matrix product).
    """
    return scale * jnp.sum(plan[:, :, None] * common.l2_normalize(weights)[:, None, :], 0)


def prospective_plan(old_means: jax.Array, new_means: jax.Array, old_weights: jax.Array, reg, p: float,
                     num_iters: int):
    """Old -> new transport (Coil Eq. 5-7; PyCIL ``solving_ot``).

    Args:
      old_means: float32 [K, D] unit class means of the K old classes;
        new_means: float32 [N, D] of the N new classes.
      old_weights: float32 [K, D] the old classes' classifier rows.
      reg, p, num_iters: Sinkhorn regularisation, cost exponent, iterations.

    Returns:
      (new rows float32 [N, D] = ``K * gamma * P^T normalize(W_old)``,
      gamma float32 [] the calibration, plan P float32 [K, N] with row
      weights 1/K and column weights 1/K).
    """
    K, N = old_means.shape[0], new_means.shape[0]
    plan = sinkhorn(jnp.full((K,), 1.0 / K), jnp.full((N,), 1.0 / K), minkowski_cdist(old_means, new_means, p),
                    reg, num_iters)
    hat = transport_weights(plan, old_weights, float(K))
    gamma = jnp.mean(jnp.linalg.norm(old_weights, axis=1)) / jnp.maximum(jnp.mean(jnp.linalg.norm(hat, axis=1)),
                                                                        NORM_EPS)
    return hat * gamma, gamma, plan


def retrospective_plan(old_means: jax.Array, new_means: jax.Array, new_weights: jax.Array, calib, reg, p: float,
                       num_iters: int):
    """New -> old transport (Coil Eq. 8-9; PyCIL ``solving_ot_to_old``).

    Returns:
      (old-class rows float32 [K, D] = ``K * calib * Q^T normalize(W_new)``,
      plan Q float32 [N, K] with row weights 1/K and column weights 1/K).
    """
    K, N = old_means.shape[0], new_means.shape[0]
    cost = minkowski_cdist(new_means, old_means, p) + COST_EPS
    plan = sinkhorn(jnp.full((N,), 1.0 / K), jnp.full((K,), 1.0 / K), cost, reg, num_iters)
    return transport_weights(plan, new_weights, float(K) * calib), plan


def cosine_logits(f: jax.Array, w: jax.Array, dtype=jnp.float32) -> jax.Array:
    """``cos(f_i, w_c)`` float32 [B, C] of features [B, D] and rows [C, D],
    the product computed in the network's ``dtype``."""
    return (common.l2_normalize(f).astype(dtype) @ common.l2_normalize(w).astype(dtype).T).astype(jnp.float32)


def soft_ce(target_logits: jax.Array, logits: jax.Array, T, weights: jax.Array) -> jax.Array:
    """``-sum softmax(target / T) log_softmax(logits / T)``, mean over the
    rows where ``weights`` (float32 []).  The gradient flows into both
    arguments (PyCIL's prospective term differentiates its target too)."""
    p = jax.nn.softmax(target_logits / T, -1)
    per = -jnp.sum(p * jax.nn.log_softmax(logits / T, -1), -1)
    w = weights.astype(jnp.float32)
    return jnp.sum(per * w) / jnp.maximum(jnp.sum(w), 1.0)


# -------------------------------------------------------------------- method
@dataclasses.dataclass(frozen=True)
class Static(icarl.Static):
    """:class:`clj.methods.cil.icarl.Static` plus the ``coil`` block and the
    network's compute dtype."""

    sinkhorn_reg: float = 0.464
    norm_p: float = 3.0
    reg_term: float = 1e-3
    prospective_weight: float = 1e-3
    ot_every: int = 30
    sinkhorn_iters: int = 1000
    dtype: str = "float32"


@struct.dataclass
class State:
    """Network, frozen old network, memory and the transport state.

    Attributes:
      net: params ``{"model": the backbone + unused head, "fc": {"weight":
        float32 [C, D], "sigma": float32 []}}`` (the cosine classifier),
        BN statistics, optimizer state, counters.
      old_params, old_batch_stats: the network at the end of task t-1.
      mem: the exemplar memory (NME means over D features).
      key: PRNG key of the ``"pycil"`` per-epoch memory permutations.
      ot_new: float32 [C, D] prospective classifier (rows of the task's new
        classes); ot_old: float32 [C, D] retrospective classifier (rows of
        the old classes); calib: float32 [] calibration term gamma.
      means: float32 [C, D] last unit class means; acc_sum: float32 [C, D]
        and acc_cnt: float32 [C] the running sums of normalised features
        since the last retrospective plan.
      swept: ``optim.lr``, ``cil.update_lr`` as float32 [].
      static: :class:`Static`.
    """

    net: ModelState
    old_params: common.PyTree
    old_batch_stats: common.PyTree
    mem: ex.ExemplarMemory
    key: jax.Array
    ot_new: jax.Array
    ot_old: jax.Array
    calib: jax.Array
    means: jax.Array
    acc_sum: jax.Array
    acc_cnt: jax.Array
    swept: dict
    static: Static = struct.field(pytree_node=False)


SWEEPABLE = ("optim.lr", "cil.update_lr")


def init(rng: jax.Array, config, scenario) -> State:
    """A fresh State: backbone from ``config.model``, cosine classifier rows
    uniform in ``±1/sqrt(D)`` and sigma = 1 (PyCIL's ``CosineLinear``),
    empty memory of the ``config.cil`` budget.

    Raises:
      clj.errors.ConfigError: bad ``config.cil`` / ``config.coil`` values.
    """
    from clj.models import compute_dtype

    cil = sections.block(config, CIL)
    co = sections.block(config, COIL)
    mem_size = resolve_memory_size(config, scenario, "single", cil)
    init_o, upd_o = cc.optim_specs(config, cil)
    init_ep, ep = cc.phase_epochs(config)
    C = scenario.num_classes
    static = Static(objective="coil", augment=common.augment_from_config(config.augment, scenario),
                    memory_size=mem_size, fixed_memory=bool(cil.fixed_memory),
                    memory_per_class=int(cil.memory_per_class), kd_T=float(cil.kd_T), kd_weight=1.0,
                    predict=str(cil.predict), init_optim=init_o, update_optim=upd_o,
                    batch_size=int(config.train.batch_size), feature_batch_size=int(cil.feature_batch_size),
                    num_classes=C, replay_batch_size=int(cil.replay_batch_size),
                    max_replay_batch=int(cil.max_replay_batch), batching=str(cil.batching),
                    class_sizes=cc.class_sizes(scenario),
                    task_classes=tuple(tuple(int(c) for c in t.classes) for t in scenario.tasks),
                    init_epochs=init_ep, epochs=ep, sinkhorn_reg=float(co.sinkhorn_reg), norm_p=float(co.norm_p),
                    reg_term=float(co.reg_term), prospective_weight=float(co.prospective_weight),
                    ot_every=int(co.ot_every), sinkhorn_iters=int(co.sinkhorn_iters),
                    dtype=jnp.dtype(compute_dtype(config.model)).name)
    model = common.model_from_config(config.model, C)
    k_net, k_fc, k_state = jax.random.split(rng, 3)
    variables = model.init(k_net, jnp.zeros((1, *scenario.image_shape), jnp.float32), train=False)
    D = int(model.feature_dim)
    stdv = 1.0 / math.sqrt(D)
    fc = {"weight": jax.random.uniform(k_fc, (C, D), jnp.float32, -stdv, stdv), "sigma": jnp.ones((), jnp.float32)}
    params = {"model": variables["params"], "fc": fc}
    z = jnp.zeros((), jnp.int32)
    net = ModelState(params=params, batch_stats=variables.get("batch_stats", {}),
                     opt_state=init_o.make().init(params), step=z, task_step=z, task_steps=z,
                     steps_per_epoch=jnp.ones((), jnp.int32), model=model, optim=init_o)
    cap = ex.memory_capacity(C, mem_size, static.fixed_memory, static.memory_per_class)
    zc = jnp.zeros((C, D), jnp.float32)
    return State(net=net, old_params=params, old_batch_stats=net.batch_stats,
                 mem=ex.init_memory(cap, scenario.image_shape, C, D), key=k_state, ot_new=zc, ot_old=zc,
                 calib=jnp.ones((), jnp.float32), means=zc, acc_sum=zc, acc_cnt=jnp.zeros((C,), jnp.float32),
                 swept={"optim.lr": jnp.float32(config.optim.lr), "cil.update_lr": jnp.float32(cil.update_lr)},
                 static=static)


def begin_task(state: State, task: TaskInfo) -> State:
    """Task boundary: phase optimizer reset, task statics, empty running sums."""
    static = dataclasses.replace(state.static, st=task_statics(state.static, task))
    return state.replace(net=begin_phase(state.net, static, task), static=static,
                         acc_sum=jnp.zeros_like(state.acc_sum), acc_cnt=jnp.zeros_like(state.acc_cnt))


def forward(state: State, params, batch_stats, x: jax.Array, train: bool):
    """(logits float32 [B, C] = sigma cos(f, W), features float32 [B, D],
    new BN statistics) of normalised inputs x."""
    (_, f), bs = common.forward(state.net, params["model"], batch_stats, x, train=train, return_features=True)
    logits = params["fc"]["sigma"] * cosine_logits(f, params["fc"]["weight"], jnp.dtype(state.static.dtype))
    return logits, f, bs


def update_mask(params, total: int):
    """True for the backbone, sigma and the classifier rows of seen classes;
    False for the backbone's unused linear head and unseen rows."""
    mask = jax.tree_util.tree_map(lambda p: jnp.ones((), bool), params)
    model = dict(mask["model"])
    if "head" in model:
        model["head"] = jax.tree_util.tree_map(lambda p: jnp.zeros((), bool), model["head"])
    C = params["fc"]["weight"].shape[0]
    return {"model": model, "fc": {"weight": (jnp.arange(C) < total)[:, None], "sigma": jnp.ones((), bool)}}


def _select(flag: jax.Array, new, old):
    return jax.tree_util.tree_map(lambda a, b: jnp.where(flag, a, b), new, old)


def prospective(state: State, x_new: jax.Array, y_new: jax.Array) -> State:
    """Step 2 of the module doc: the new classes' rows of the classifier,
    ``ot_new``, ``calib`` and the initial class means, from the memory's
    old-class means and the new examples ``x_new`` [b, ...] / ``y_new`` [b]
    (eval-mode features of the current network)."""
    static, st = state.static, state.static.st
    K, N, C = st.known, st.total, static.num_classes
    _, f, _ = forward(state, state.net.params, state.net.batch_stats, x_new, train=False)
    means_all = ex.class_means(f, y_new, (y_new >= K) & (y_new < N), C)
    old_means, new_means = state.mem.class_means[:K], means_all[K:N]
    W = state.net.params["fc"]["weight"]
    rows, gamma, _ = prospective_plan(old_means, new_means, W[:K], static.sinkhorn_reg, static.norm_p,
                                      static.sinkhorn_iters)
    params = {**state.net.params, "fc": {**state.net.params["fc"], "weight": W.at[K:N].set(rows)}}
    zc = jnp.zeros_like(state.ot_new)
    return state.replace(net=state.net.replace(params=params), ot_new=zc.at[K:N].set(rows), calib=gamma,
                         means=zc.at[:K].set(old_means).at[K:N].set(new_means))


def retrospective(state: State) -> State:
    """Step 3's retrospective classifier from the running class means (a
    class not seen since the last plan keeps its previous mean); the
    running sums restart."""
    static, st = state.static, state.static.st
    K, N = st.known, st.total
    cnt = state.acc_cnt[:, None]
    fresh = state.acc_sum / jnp.maximum(cnt, 1.0)
    fresh = fresh / (jnp.linalg.norm(fresh, axis=1, keepdims=True) + ex.EPS)
    means = jnp.where(cnt > 0, fresh, state.means)
    rows, _ = retrospective_plan(means[:K], means[K:N], state.net.params["fc"]["weight"][K:N], state.calib,
                                 static.sinkhorn_reg, static.norm_p, static.sinkhorn_iters)
    return state.replace(ot_old=jnp.zeros_like(state.ot_old).at[:K].set(rows), means=means,
                         acc_sum=jnp.zeros_like(state.acc_sum), acc_cnt=jnp.zeros_like(state.acc_cnt))


def train_step(state: State, batch: dict, rng: jax.Array):
    """One step (module doc, items 2-3).

    Args:
      batch: ``x`` float32 [B, H, W, C] augmented, ``y`` int32 [B].

    Returns:
      (State, {"loss", "ce", "kd", "ot", "acc"} float32 scalars).
    """
    static, st = state.static, state.static.st
    K, N, C = st.known, st.total, static.num_classes
    nb = st.new_per_step if static.batching == "pycil" else batch["y"].shape[0]
    T = static.kd_T
    spe = jnp.maximum(state.net.steps_per_epoch, 1)
    epoch = state.net.task_step // spe
    if K > 0:
        first = state.net.task_step == 0
        state = jax.lax.cond(any_seed(first),
                             lambda s: _select(first, prospective(s, batch["x"][:nb], batch["y"][:nb]), s),
                             lambda s: s, state)
        redo = (epoch >= 1) & ((state.net.task_step % spe) % static.ot_every == 0)
        state = jax.lax.cond(any_seed(redo), lambda s: _select(redo, retrospective(s), s), lambda s: s, state)
    net = state.net
    x, y, w = icarl.mixed_batch(static, state.mem, state.key, net.task_step, batch, rng)
    wf = w.astype(jnp.float32)
    old = (jax.lax.stop_gradient(forward(state, state.old_params, state.old_batch_stats, x, train=False)[0])
           if K > 0 else None)
    lam = K / N if N > 0 else 0.0
    ep = jnp.asarray(epoch, jnp.float32)
    w_init = jnp.maximum(1.0 - (ep / 2.0) ** 2, 0.0)
    w_co = (ep / max(static.init_epochs if st.task == 0 else static.epochs, 1e-9)) ** 2
    dt = jnp.dtype(static.dtype)

    def loss_fn(params):
        logits, f, bs = forward(state, params, net.batch_stats, x, train=True)
        ce = common.cross_entropy(cc.mask_logits(logits, N), y, w)
        if K == 0:
            z = jnp.zeros((), jnp.float32)
            return ce, (bs, logits, f, ce, z, z)
        kd = cc.kd_loss(logits, old, K, T, w)
        l_new = soft_ce(cosine_logits(f, state.ot_new[K:N], dt), logits[:, K:N], T, wf)
        l_old = soft_ce(old[:, :K], cosine_logits(f, state.ot_old[:K], dt), T, wf)
        ot = jnp.where(epoch < 1, static.prospective_weight * w_init * l_new, static.reg_term * w_co * l_old)
        return lam * kd + (1.0 - lam) * ce + ot, (bs, logits, f, ce, kd, ot)

    (loss, (bs, logits, f, ce, kd, ot)), grads = jax.value_and_grad(loss_fn, has_aux=True)(net.params)
    new_net = common.apply_gradients(net, grads, bs, update_mask(net.params, N), base_lr=phase_lr(state.swept, st.task))
    state = state.replace(net=new_net)
    if K > 0:  # running class sums for the next retrospective plan
        v = jax.lax.stop_gradient(common.l2_normalize(f)) * wf[:, None]
        state = state.replace(acc_sum=state.acc_sum + jax.ops.segment_sum(v, y, C),
                              acc_cnt=state.acc_cnt + jax.ops.segment_sum(wf, y, C))
    acc = jnp.mean((jnp.argmax(cc.mask_logits(logits, N)[:nb], -1) == y[:nb]).astype(jnp.float32))
    return state, {"loss": loss, "ce": ce, "kd": kd, "ot": ot, "acc": acc}


def features(state: State, x: jax.Array) -> jax.Array:
    """Backbone features float32 [B, D] of normalised inputs (eval mode)."""
    return forward(state, state.net.params, state.net.batch_stats, x, train=False)[1]


def end_task(state: State, task_data: dict) -> State:
    """Herding memory with the current network, then the frozen copy (module
    doc, item 4).  ``task_data``: ``x`` uint8 [n, ...], ``y`` int32 [n],
    ``info`` TaskInfo."""
    static, st = state.static, state.static.st
    classes = tuple(int(c) for c in task_data["info"].classes)
    mem = ex.update_memory(state.mem, lambda xf: features(state, xf),
                           lambda xb: static.augment(xb, None, train=False), task_data["x"], task_data["y"],
                           classes, st.quota, static.num_classes, static.feature_batch_size)
    return state.replace(mem=mem, old_params=state.net.params, old_batch_stats=state.net.batch_stats)


def predict(state: State, x: jax.Array, task_id: jax.Array | None = None) -> jax.Array:
    """float32 [B, C]: cosine-classifier logits (``cnn``) or NME scores."""
    del task_id
    logits, f, _ = forward(state, state.net.params, state.net.batch_stats, x, train=False)
    if state.static.predict == "nme":
        return ex.nme_scores(f, state.mem.class_means)
    return logits


def memory_bytes(state: State) -> dict:
    """Stored exemplars (uint8) + 4 bytes per backbone parameter (the
    classifier and the unused linear head excluded)."""
    from clj.models.utils import count_params

    buf = ex.exemplar_bytes(state.mem)
    model = 4 * count_params({k: v for k, v in state.net.params["model"].items() if k != "head"})
    return {"buffer": buf, "model": model, "total": buf + model}


def result_extras(state: State) -> dict:
    static = state.static
    return {"exemplars": int(state.mem.count()), "memory_size": static.memory_size,
            "exemplars_per_class": static.st.quota, "predict": static.predict,
            "head_bytes": common.param_bytes(state.net.params["fc"])}


def make_spec():
    """Coil's :class:`~clj.methods.api.MethodSpec` (host task info: the known
    / total class counts are static per task)."""
    from clj.methods.api import Capabilities, MethodSpec

    return MethodSpec(init=init, begin_task=begin_task, train_step=train_step, end_task=end_task, predict=predict,
                      capabilities=Capabilities(static_task_info=True), memory_bytes=memory_bytes,
                      result_extras=result_extras, task_steps=task_steps, sweepable=SWEEPABLE)


SPEC = make_spec()
