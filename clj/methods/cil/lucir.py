"""LUCIR: a cosine-normalised classifier, less-forget feature distillation
and a margin ranking loss, as Mammoth runs it.

Sources: Hou et al., "Learning a Unified Classifier Incrementally via
Rebalancing", CVPR 2019 (Sec. 3.2 cosine normalisation
``p_i = softmax(sigma <w_i/|w_i|, f/|f|>)`` with a learned scale sigma,
Eq. 3; Sec. 3.3 less-forget constraint ``1 - <f*/|f*|, f/|f|>`` with the
adaptive weight ``lambda_base sqrt(|C_old| / |C_new|)``, Eq. 5-7; Sec. 3.4
inter-class separation, the margin ranking loss on the top-K new-class
scores of old-class examples, Eq. 8; class-balanced finetuning, Sec. 4);
Mammoth (Boschini et al.) ``models/lucir.py``, which PyCIL does not have,
for the protocol: weight imprinting of a new task's classes, the weight of
task t = ``lamda_base sqrt(t - 1)`` (set at the end of task t-1 from the
ended task's index), the cross-entropy and the hard negatives over every
output of the head (the unseen classes' fixed random weights included), and
the class-balanced finetuning of the classifier on the exemplars after each
task (its lr schedule stepped once per batch).

The cosine head is ``State.net.params["cosine"]``: ``weight`` float32 [C, D]
(one row per class of the scenario, Mammoth's uniform(-1/sqrt(D), 1/sqrt(D))
draw) and ``sigma`` float32 [] (1 at the start); the model's own linear head
is not used and stays frozen.  The old/new split is static per task (old
``[0, known)``, new ``[known, total)``); only the new rows and sigma train in
a task (Mammoth's ``requires_grad`` on the current task's weights).

Per task t:

1. ``begin_task``: PyCIL's phase optimizer (task 0 ``config.optim``, later
   tasks ``cil.update_*``); the task's counts (``State.tc``) and less-forget
   weight (``State.lamda``) as arrays, so every task >= 1 runs one compiled
   step (the margin loss's K, ``static.mr_k``, is the only other static).
2. ``train_step``: a batch of new data and exemplars
   (:func:`clj.methods.cil.icarl.mixed_batch`'s composition; with
   ``lucir.exemplar_repeats="once"`` each stored exemplar counts once per
   epoch, :func:`clj.methods.cil.common.draw_replay_rows`); at the first step of a task
   t >= 1 (``lucir.imprint``) the new rows are imprinted from the batch's
   new-class examples (:func:`imprint_rows`); loss ``CE(sigma cos)`` plus,
   for t >= 1, ``lambda_t`` x :func:`less_forget_loss` (features of the
   frozen network of the end of task t-1) plus ``lamda_mr`` x
   :func:`margin_ranking_loss`.
3. ``end_task``: the memory is reduced and the new classes herded; the
   network is snapshotted; ``lucir.finetune_epochs`` epochs of
   class-balanced finetuning (:func:`finetune_classifier`).

``predict``: ``sigma cos`` (``cil.predict="cnn"``) or NME.
Differences from Mammoth: imprinting reads the task's first batch (the loop
gives ``begin_task`` no data; Mammoth averages all of the task's images);
the finetuning's last batch of an epoch is masked to the real exemplars
(BatchNorm, if any, still sees the padding rows); every step has the same
numbers of new and replay rows (``"once"``: the stored exemplars spread
evenly over the epoch, the replay rows without an exemplar masked out of the
losses but seen by BatchNorm).
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
from clj.methods.cil import icarl, icarl_phases
from clj.methods.cil.icarl_phases import begin_phase, phase_lr, resolve_memory_size, task_steps
from clj.methods.cil.section import CIL, LUCIR
from clj.methods.common import ModelState, TaskInfo
from clj.replay import exemplars as ex

COS_EPS = 1e-12


@dataclasses.dataclass(frozen=True)
class Static(icarl.Static):
    """:class:`clj.methods.cil.icarl.Static` plus LUCIR's settings (hashable).

    Attributes:
      lamda_base, lamda_mr, k_mr, mr_margin, adaptive, unseen, imprint,
      finetune_epochs, finetune_lr, finetune_milestones: the ``lucir`` block.
      momentum, weight_decay: SGD settings of the finetuning (``config.optim``'s).
      exemplar_repeats: ``"once"`` or ``"wrap"``
        (:func:`clj.methods.cil.common.draw_replay_rows`, ``spread``).
      mr_k: K of the margin ranking loss in the current task (0 in task 0;
        static: ``top_k``'s size; the same in every later task unless a task
        has fewer than ``k_mr`` new classes).
    """

    lamda_base: float = 5.0
    lamda_mr: float = 1.0
    k_mr: int = 2
    mr_margin: float = 0.5
    adaptive: str = "mammoth"
    unseen: str = "all"
    imprint: bool = True
    finetune_epochs: int = 20
    finetune_lr: float = 0.01
    finetune_milestones: tuple = (10,)
    momentum: float = 0.0
    weight_decay: float = 0.0
    exemplar_repeats: str = "once"
    mr_k: int = 0


@struct.dataclass
class State:
    """Network (with its cosine head), frozen old network, exemplar memory.

    Attributes:
      net: the network; ``net.params["cosine"]`` is the cosine head.
      old_params, old_batch_stats: the network at the end of the previous task.
      mem: the exemplar memory.
      key: PRNG key (memory permutations, finetuning batches).
      swept: ``optim.lr`` and ``cil.update_lr`` as float32 [].
      tc: the current task's counts (:class:`~clj.methods.cil.common.TaskCounts`).
      lamda: float32 [], the less-forget weight of the current task
        (:func:`lamda_of_task`).
      static: :class:`Static`.
    """

    net: ModelState
    old_params: common.PyTree
    old_batch_stats: common.PyTree
    mem: ex.ExemplarMemory
    key: jax.Array
    swept: dict
    tc: cc.TaskCounts
    lamda: jax.Array
    static: Static = struct.field(pytree_node=False)


SWEEPABLE = ("optim.lr", "cil.update_lr")


def init(rng: jax.Array, config, scenario) -> State:
    """A fresh State: network from ``config.model`` plus the cosine head.

    Raises:
      clj.config.ConfigError: bad ``config.cil`` / ``config.lucir`` values.
    """
    cil = sections.block(config, CIL)
    lu = sections.block(config, LUCIR)
    mem_size = resolve_memory_size(config, scenario, "single", cil)
    init_o, upd_o = cc.optim_specs(config, cil)
    init_ep, ep = cc.phase_epochs(config)
    static = Static(objective="lucir", augment=common.augment_from_config(config.augment, scenario),
                    memory_size=mem_size, fixed_memory=bool(cil.fixed_memory),
                    memory_per_class=int(cil.memory_per_class), predict=str(cil.predict), init_optim=init_o,
                    update_optim=upd_o, batch_size=int(config.train.batch_size),
                    feature_batch_size=int(cil.feature_batch_size), num_classes=scenario.num_classes,
                    replay_batch_size=int(cil.replay_batch_size), max_replay_batch=int(cil.max_replay_batch),
                    batching=str(cil.batching), class_sizes=cc.class_sizes(scenario),
                    task_classes=tuple(tuple(int(c) for c in t.classes) for t in scenario.tasks),
                    init_epochs=init_ep, epochs=ep, lamda_base=float(lu.lamda_base), lamda_mr=float(lu.lamda_mr),
                    k_mr=int(lu.k_mr), mr_margin=float(lu.mr_margin), adaptive=str(lu.adaptive),
                    unseen=str(lu.unseen), imprint=bool(lu.imprint), finetune_epochs=int(lu.finetune_epochs),
                    finetune_lr=float(lu.finetune_lr),
                    finetune_milestones=tuple(int(m) for m in lu.finetune_milestones),
                    momentum=float(config.optim.get("momentum", 0.0)),
                    weight_decay=float(config.optim.get("weight_decay", 0.0)),
                    exemplar_repeats=str(lu.exemplar_repeats))
    model = common.model_from_config(config.model, scenario.num_classes)
    k_net, k_head, k_state = jax.random.split(rng, 3)
    net = common.init_model_state(k_net, model, init_o, scenario.image_shape)
    D, C = int(model.feature_dim), scenario.num_classes
    stdv = 1.0 / math.sqrt(D)
    head = {"weight": jax.random.uniform(k_head, (C, D), jnp.float32, -stdv, stdv), "sigma": jnp.ones((), jnp.float32)}
    params = {**net.params, "cosine": head}
    net = net.replace(params=params, opt_state=init_o.make().init(params))
    cap = ex.memory_capacity(C, mem_size, static.fixed_memory, static.memory_per_class)
    mem = ex.init_memory(cap, scenario.image_shape, C, D)
    swept = {"optim.lr": jnp.float32(config.optim.lr), "cil.update_lr": jnp.float32(cil.update_lr)}
    return State(net=net, old_params=net.params, old_batch_stats=net.batch_stats, mem=mem, key=k_state,
                 swept=swept, tc=cc.TaskCounts.of(), lamda=jnp.float32(0.0), static=static)


def lamda_of_task(static: Static, task_id: int, known: int, total: int) -> float:
    """The less-forget weight of a task (0 in task 0): ``"mammoth"``
    ``lamda_base sqrt(t - 1)``; ``"classes"`` ``lamda_base sqrt(known / (total - known))``
    (LUCIR Eq. 7)."""
    if task_id <= 0 or known <= 0:
        return 0.0
    if static.adaptive == "mammoth":
        return static.lamda_base * math.sqrt(task_id - 1)
    return static.lamda_base * math.sqrt(known / max(total - known, 1))


def begin_task(state: State, task: TaskInfo) -> State:
    """Task boundary (module doc, item 1)."""
    st, static, counts = icarl_phases.enter_task(state.static, task)
    upper = static.num_classes if static.unseen == "all" else st.total
    static = dataclasses.replace(static, mr_k=max(0, min(static.k_mr, upper - st.known)) if st.known > 0 else 0)
    return state.replace(net=begin_phase(state.net, static, task, st), static=static, tc=counts,
                         lamda=jnp.float32(lamda_of_task(static, task.task_id, st.known, st.total)))


# ------------------------------------------------------------- the mechanism
def cosine_scores(features: jax.Array, weight: jax.Array) -> jax.Array:
    """Cosine similarities float32 [N, C] of features [N, D] and class
    weights [C, D] (LUCIR Eq. 3 without sigma); the normalisation is in
    float32, the product in the features' dtype (the network's compute
    dtype)."""
    dt = features.dtype
    f = common.l2_normalize(features).astype(dt)
    w = common.l2_normalize(weight).astype(dt)
    return jnp.matmul(f, w.T).astype(jnp.float32)


def cosine_logits(features: jax.Array, head: dict) -> jax.Array:
    """``sigma * cos(f, w_c)`` float32 [N, C] (LUCIR Eq. 3)."""
    return cosine_scores(features, head["weight"]) * head["sigma"]


def less_forget_loss(features: jax.Array, old_features: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """``mean(1 - cos(f, f_old))`` over the selected rows, float32 [] (LUCIR
    Eq. 6; PyTorch ``cosine_embedding_loss`` with target 1, eps 1e-12)."""
    f, g = features.astype(jnp.float32), old_features.astype(jnp.float32)
    den = jnp.sqrt((jnp.sum(f * f, -1) + COS_EPS) * (jnp.sum(g * g, -1) + COS_EPS))
    per = 1.0 - jnp.sum(f * g, -1) / den
    if weights is None:
        return per.mean()
    w = weights.astype(jnp.float32)
    return jnp.sum(per * w) / jnp.maximum(jnp.sum(w), 1.0)


def margin_ranking_loss(cos: jax.Array, labels: jax.Array, known: int, upper: int, k: int, margin: float,
                        weights: jax.Array | None = None) -> jax.Array:
    """The margin ranking loss on hard negatives (LUCIR Eq. 8; Mammoth's
    ``lucir_batch_hard_triplet_loss``).

    For every (selected) example of an old class (label < ``known``) its
    ground-truth score ``cos[y]`` is ranked against its K largest scores among
    the classes ``[known, upper)``: ``mean over those examples x K of
    max(0, margin - (cos_y - cos_hard))``; 0 when the batch has no
    old-class example.

    Args:
      cos: float32 [N, C] cosine scores (no sigma).
      labels: int32 [N].
      known: old classes are ``[0, known)`` (static).
      upper: the negatives' end (``total``, or C with Mammoth's unseen columns).
      k: K (static, <= upper - known); margin: m.
      weights: bool [N] rows that count (None = all).
    """
    cos = cos.astype(jnp.float32)
    col = jnp.arange(cos.shape[-1])
    gt = jnp.take_along_axis(cos, jnp.clip(labels, 0, cos.shape[-1] - 1)[:, None], axis=-1)[:, 0]
    novel = jnp.where((col >= known) & (col < upper), cos, -jnp.inf)
    hard = jax.lax.top_k(novel, k)[0]  # [N, K]
    per = jnp.maximum(0.0, margin - (gt[:, None] - hard))
    sel = labels < known
    if weights is not None:
        sel = sel & weights
    n = jnp.sum(sel).astype(jnp.float32) * k
    return jnp.where(n > 0, jnp.sum(jnp.where(sel[:, None], per, 0.0)) / jnp.maximum(n, 1.0), 0.0)


def _backbone(params) -> dict:
    return {k: v for k, v in params.items() if k != "cosine"}


def feats(net: ModelState, params, batch_stats, x: jax.Array, train: bool):
    """(features [N, D] in the network's compute dtype, new batch_stats) of the backbone."""
    (_, f), bs = common.forward(net, _backbone(params), batch_stats, x, train=train, return_features=True)
    return f.astype(getattr(net.model, "dtype", None) or jnp.float32), bs


def imprint_rows(weight: jax.Array, f: jax.Array, y: jax.Array, w: jax.Array, known: int, total: int) -> jax.Array:
    """Weight imprinting of the new classes (LUCIR Sec. 4; Mammoth's
    ``imprint_weights``): row c in ``[known, total)`` becomes the normalised
    mean of the normalised features of the class's rows (``w``), scaled to
    the mean norm of the old rows; classes without a row keep their weights.

    Args: weight float32 [C, D]; f float32 [N, D]; y int32 [N]; w bool [N].
    Returns: float32 [C, D].
    """
    C = weight.shape[0]
    col = jnp.arange(C)
    seg = jnp.where(w, jnp.clip(y, 0, C - 1), C)
    cnt = jax.ops.segment_sum(w.astype(jnp.float32), seg, C + 1)[:C]
    mean = jax.ops.segment_sum(common.l2_normalize(f), seg, C + 1)[:C] / jnp.maximum(cnt, 1.0)[:, None]
    old_norm = jnp.sum(jnp.linalg.norm(weight, axis=1) * (col < known)) / jnp.maximum(known, 1)
    new_rows = common.l2_normalize(mean) * old_norm
    take = (cnt > 0) & (col >= known) & (col < total)
    return jnp.where(take[:, None], new_rows, weight)


def update_mask(params, known: int, total: int):
    """Update mask of :func:`clj.methods.common.apply_gradients`: the backbone
    and sigma train, the cosine rows of ``[known, total)`` train, the other
    rows and the unused linear head stay fixed."""
    mask = dict(jax.tree_util.tree_map(lambda p: jnp.ones((), bool), params))
    if "head" in params:
        mask["head"] = jax.tree_util.tree_map(lambda p: jnp.zeros((), bool), params["head"])
    col = jnp.arange(params["cosine"]["weight"].shape[0])
    mask["cosine"] = {"weight": ((col >= known) & (col < total))[:, None], "sigma": jnp.ones((), bool)}
    return mask


def _losses(static: Static, params, f, y, w, f_old, known, total, lamda, mr_k: int):
    """(loss, (ce, lf, mr)) of the cosine head on features ``f``: ``known``
    / ``total`` the task's class counts (ints or int32 []), ``lamda`` its
    less-forget weight, ``mr_k`` the margin loss's K (static; 0 = no
    margin loss)."""
    C = static.num_classes
    cos = cosine_scores(f, params["cosine"]["weight"])
    logits = cos * params["cosine"]["sigma"]
    upper = C if static.unseen == "all" else total
    ce = common.cross_entropy(cc.mask_logits(logits, upper), y, w)
    zero = jnp.zeros((), jnp.float32)
    lf = less_forget_loss(f, f_old, w) if f_old is not None else zero
    mr = margin_ranking_loss(cos, y, known, upper, mr_k, static.mr_margin, w) if mr_k > 0 else zero
    return ce + lamda * lf + static.lamda_mr * mr, (ce, lf, mr, logits)


def train_step(state: State, batch: dict, rng: jax.Array):
    """One step (module doc, item 2).

    Args:
      batch: ``x`` float32 [B, H, W, C] augmented, ``y`` int32 [B].

    Returns:
      (State, {"loss", "ce", "lf", "mr", "acc"} float32 scalars).
    """
    static, tc, phase, net = state.static, state.tc, state.static.phase, state.net
    x, y, w = icarl.mixed_batch(static, state.mem, state.key, net.task_step, batch, rng, tc, phase,
                                spread=static.exemplar_repeats == "once")
    new = icarl.new_rows(static, tc, batch)
    params = net.params
    if static.imprint and not phase.first:
        first = net.task_step == 0

        def do(p):
            f0, _ = feats(net, p, net.batch_stats, x, train=False)
            wn = w & jnp.pad(new, (0, y.shape[0] - new.shape[0]))  # the task's new examples
            cw = imprint_rows(p["cosine"]["weight"], f0, y, wn, tc.known, tc.total)
            return {**p, "cosine": {**p["cosine"], "weight": jnp.where(first, cw, p["cosine"]["weight"])}}

        params = jax.lax.cond(common.any_seed(first), do, lambda p: p, params)
    f_old = None
    if not phase.first:
        f_old, _ = feats(net, state.old_params, state.old_batch_stats, x, train=False)
        f_old = jax.lax.stop_gradient(f_old)

    def loss_fn(p):
        f, bs = feats(net, p, net.batch_stats, x, train=True)
        loss, aux = _losses(static, p, f, y, w, f_old, tc.known, tc.total, state.lamda, static.mr_k)
        return loss, (bs, aux)

    (loss, (bs, (ce, lf, mr, logits))), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    new_net = common.apply_gradients(net.replace(params=params), grads, bs, update_mask(params, tc.known, tc.total),
                                     base_lr=phase_lr(state.swept, 0 if phase.first else 1))
    acc = icarl.new_data_accuracy(logits, y, tc.total, new)
    return state.replace(net=new_net), {"loss": loss, "ce": ce, "lf": lf, "mr": mr, "acc": acc}


def finetune_classifier(state: State) -> State:
    """Class-balanced finetuning (module doc, item 3; Mammoth's ``fit_buffer``).

    ``finetune_epochs`` passes over the exemplar memory in batches of B (a
    fresh permutation per epoch, augmented; the last batch masked to the
    stored exemplars), the task's loss (the less-forget term has no gradient
    here: the backbone is fixed and the old network is the current one) with
    SGD (momentum and weight decay of ``config.optim``) on the current task's
    cosine rows and sigma only, lr ``finetune_lr`` times 0.1 after each
    ``finetune_milestones`` batch count; BatchNorm in training mode without
    updating its running statistics.
    """
    static, st = state.static, state.static.st
    net, mem = state.net, state.mem
    B = static.batch_size
    cap = ex.memory_capacity(static.num_classes, static.memory_size, static.fixed_memory, static.memory_per_class)
    n_static = cc.stored_exemplars(static.class_sizes or (st.quota,) * st.total, st.total, st.quota, cap)
    spe = max(1, math.ceil(n_static / B))
    n = jnp.maximum(mem.count(), 1)
    key = jax.random.fold_in(jax.random.fold_in(state.key, 13), st.task)
    mask = update_mask(net.params, st.known, st.total)["cosine"]
    head0 = net.params["cosine"]
    body = _backbone(net.params)
    mom, wd = static.momentum, static.weight_decay

    def step(carry, i):
        head, buf = carry
        epoch, j = i // spe, i % spe
        ke = jax.random.fold_in(key, epoch)
        order = jnp.argsort(jnp.where(mem.valid(), jax.random.uniform(ke, mem.valid().shape), 2.0))
        pos = j * B + jnp.arange(B)
        ok = pos < n
        sl = order[jnp.minimum(pos, mem.capacity - 1)]
        xb = static.augment(mem.x[sl], jax.random.fold_in(ke, j + 1), train=True)
        yb = mem.y[sl]
        f, _ = feats(net, body, net.batch_stats, xb, train=True)
        f = jax.lax.stop_gradient(f)

        def loss_fn(h):
            return _losses(static, {"cosine": h}, f, yb, ok, None, st.known, st.total, 0.0, static.mr_k)[0]

        g = jax.grad(loss_fn)(head)
        lr = static.finetune_lr * (0.1 ** sum((i >= m).astype(jnp.float32) for m in static.finetune_milestones)
                                   if static.finetune_milestones else 1.0)
        d = jax.tree_util.tree_map(lambda gg, p, m: jnp.where(m, gg + wd * p, 0.0), g, head, mask)
        buf = jax.tree_util.tree_map(lambda b_, d_: mom * b_ + d_, buf, d)
        head = jax.tree_util.tree_map(lambda p, b_, m: jnp.where(m, p - lr * b_, p), head, buf, mask)
        return (head, buf), None

    zeros = jax.tree_util.tree_map(jnp.zeros_like, head0)
    (head, _), _ = jax.lax.scan(step, (head0, zeros), jnp.arange(static.finetune_epochs * spe))
    return state.replace(net=net.replace(params={**net.params, "cosine": head}))


def features(state: State, x: jax.Array) -> jax.Array:
    """Backbone features float32 [B, D] of normalised inputs (eval mode)."""
    return feats(state.net, state.net.params, state.net.batch_stats, x, train=False)[0].astype(jnp.float32)


def end_task(state: State, task_data: dict) -> State:
    """Task end (module doc, item 3)."""
    static0 = state.static
    state = icarl_phases.with_task_statics(state, task_data["info"])
    static, st = state.static, state.static.st
    classes = tuple(int(c) for c in task_data["info"].classes)
    mem = ex.update_memory(state.mem, lambda xf: features(state, xf),
                           lambda xb: static.augment(xb, None, train=False), task_data["x"], task_data["y"],
                           classes, st.quota, static.num_classes, static.feature_batch_size)
    state = state.replace(mem=mem)
    if static.finetune_epochs > 0:
        state = finetune_classifier(state)
    net = state.net
    return state.replace(old_params=net.params, old_batch_stats=net.batch_stats, static=static0)


def predict(state: State, x: jax.Array, task_id: jax.Array | None = None) -> jax.Array:
    """float32 [B, C]: ``sigma cos`` (``cnn``) or NME scores (``nme``)."""
    del task_id
    f = feats(state.net, state.net.params, state.net.batch_stats, x, train=False)[0]
    if state.static.predict == "nme":
        return ex.nme_scores(f.astype(jnp.float32), state.mem.class_means)
    return cosine_logits(f, state.net.params["cosine"])


def memory_bytes(state: State) -> dict:
    """Exemplar bytes and the backbone's parameters at 4 bytes each (both
    heads excluded); ``total`` is their sum."""
    from clj.models.utils import count_params

    buf = ex.exemplar_bytes(state.mem)
    model = 4 * count_params({k: v for k, v in state.net.params.items() if k not in ("head", "cosine")})
    return {"buffer": buf, "model": model, "total": buf + model}


def result_extras(state: State) -> dict:
    out = icarl.result_extras(state)
    out["head_bytes"] = common.param_bytes(state.net.params["cosine"])
    out["sigma"] = float(state.net.params["cosine"]["sigma"])
    return out


def _spec():
    from clj.methods.api import Capabilities, MethodSpec

    return MethodSpec(init=init, begin_task=begin_task, train_step=train_step, end_task=end_task, predict=predict,
                      capabilities=Capabilities(static_task_info=True), memory_bytes=memory_bytes,
                      result_extras=result_extras, task_steps=task_steps, sweepable=SWEEPABLE)


SPEC = _spec()
