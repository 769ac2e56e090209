"""PODNet: pooled outputs distillation with a local similarity classifier.

Source: Douillard, Cord, Ollion, Robert, Valle, "PODNet: Pooled Outputs
Distillation for Small-Tasks Incremental Learning", ECCV 2020: POD-spatial
(Sec. 3.1, Eq. 2-4) on the intermediate feature maps, POD-flat on the final
embedding, the local similarity classifier (LSC, Sec. 3.2, Eq. 5-6) trained
with the NCA loss (Eq. 7), class-balanced finetuning and NME/CNN evaluation.
The protocol is PyCIL's ``models/podnet.py`` (``docs/memo.md``), whose code
differs from the paper in two places, both config switches:

* NCA: PyCIL subtracts its margin 0.6 from *every* similarity, so it cancels
  (``podnet.nca_margin=0``, ``nca_hinge=False``, the defaults; the paper's
  ``delta = 0.6`` on the target and the hinge are ``nca_margin=0.6,
  nca_hinge=True``), and it zeroes the target's slot of the denominator
  after subtracting the row maximum, so that slot still adds 1
  (:func:`nca_loss`);
* the distillation weights are ``lambda_c = 5`` (spatial) and ``lambda_f = 1``
  (flat), both times ``sqrt(total / new)`` (PyCIL's adaptive factor, the
  paper's ``sqrt(N / T)``), and 0 in task 0.

Network: the config's backbone (its ``head`` is not used and stays frozen)
and the LSC: ``nb_proxy`` = K proxies per class (``[C, K, D]``) and a learned
scale ``sigma`` (init 1).  A class's score is ``sigma * sum_k a_k <f, p_k>``
with cosine similarities and ``a = softmax_k`` of them (PyCIL's
``reduce_proxies``).  The intermediate maps are the outputs of the
backbone's residual stages (PyCIL's ``fmaps``), taken with Flax's
``capture_intermediates``, and the two conv stages of ``small_cnn`` (sown
into the same collection); a backbone without stages (an MLP) has no
POD-spatial term.

Per task t (shapes static per task, ``static_task_info``):

1. ``begin_task``: the phase optimizer (task 0 ``config.optim``, later
   ``cil.update_*``; PyCIL: SGD 0.1, momentum 0.9, wd 5e-4, cosine over 160
   epochs in every task);
2. ``train_step``: new data and exemplars (``cil.batching``, as iCaRL), loss
   ``NCA + factor (lambda_f POD-flat + lambda_c POD-spatial)`` against the
   network frozen at the end of task t-1; the old classes' proxies are
   frozen (PyCIL: ``fc1`` at lr 0, wd 0), classes not seen yet masked;
3. ``end_task``: for t >= 1, class-balanced finetuning: the old exemplars
   (``memory_size // known`` per class, what the memory holds) and as many
   herded exemplars of each new class, ``podnet.ft_epochs`` epochs at
   ``podnet.ft_lr`` (cosine per epoch), same loss, old proxies frozen (a
   jitted ``lax.fori_loop``); then the memory is rebuilt at the new quota
   with the finetuned network (herding, NME means) and the network is
   snapshotted as the next task's teacher.

``predict``: the LSC scores (``cil.predict="cnn"``) or NME (``"nme"``, the
numbers PyCIL's PODNet reports), classes not seen yet masked.
"""
from __future__ import annotations

import dataclasses
import functools
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
from clj.methods.cil.section import CIL, PODNET
from clj.methods.common import ModelState, TaskInfo
from clj.replay import exemplars as ex


@dataclasses.dataclass(frozen=True)
class Static(icarl.Static):
    """iCaRL's static fields (budget, phases, batching, task statics) plus
    PODNet's.

    Attributes:
      nb_proxy: K proxies per class.
      lambda_c, lambda_f: POD-spatial / POD-flat weights.
      nca_margin, nca_scale, nca_hinge: the NCA loss (module doc).
      ft_epochs, ft_lr: the class-balanced finetuning.
      ft_capacity: slots of the finetuning set (the largest over the tasks).
    """

    nb_proxy: int = 10
    lambda_c: float = 5.0
    lambda_f: float = 1.0
    nca_margin: float = 0.0
    nca_scale: float = 1.0
    nca_hinge: bool = False
    ft_epochs: int = 20
    ft_lr: float = 0.005
    ft_capacity: int = 1


@struct.dataclass
class State:
    """Network (backbone + LSC), frozen old network, exemplar memory.

    Attributes:
      net: ``params = {"net": backbone params, "lsc": {"proxies" float32 [C, K, D],
        "sigma" float32 []}}``, BN statistics, optimizer state, counters.
      old_params, old_batch_stats: the network at the end of the previous task.
      mem: the exemplar memory.
      key: PRNG key (per-epoch permutations, finetuning draws).
      swept: ``optim.lr`` and ``cil.update_lr`` as float32 [].
      tc: the current task's counts (:class:`~clj.methods.cil.common.TaskCounts`).
      static: the static hyperparameters.
    """

    net: ModelState
    old_params: common.PyTree
    old_batch_stats: common.PyTree
    mem: ex.ExemplarMemory
    key: jax.Array
    swept: dict
    tc: cc.TaskCounts
    static: Static = struct.field(pytree_node=False)


SWEEPABLE = ("optim.lr", "cil.update_lr")


def _ft_capacity(static: Static, num_tasks_classes) -> int:
    """Slots the finetuning set needs: max over tasks >= 1 of (old quota) x total."""
    cap = 1
    for t, classes in enumerate(num_tasks_classes):
        if t == 0:
            continue
        known, total = int(min(classes)), int(max(classes)) + 1
        m = ex.per_class_quota(known, static.memory_size, static.fixed_memory, static.memory_per_class)
        cap = max(cap, m * total)
    return max(cap, ex.memory_capacity(static.num_classes, static.memory_size, static.fixed_memory,
                                       static.memory_per_class))


def init(rng: jax.Array, config, scenario) -> State:
    """A fresh State: backbone from ``config.model``, LSC proxies drawn
    uniform in ``+-1/sqrt(D)`` (PyCIL), sigma 1, an empty exemplar memory.

    Raises:
      ConfigError: a bad ``cil`` or ``podnet`` block.
    """
    cil = sections.block(config, CIL)
    pod = sections.block(config, PODNET)
    mem_size = resolve_memory_size(config, scenario, "single", cil)
    init_o, upd_o = cc.optim_specs(config, cil)
    init_ep, ep = cc.phase_epochs(config)
    task_classes = tuple(tuple(int(c) for c in t.classes) for t in scenario.tasks)
    static = Static(objective="replay", augment=common.augment_from_config(config.augment, scenario),
                    memory_size=mem_size, fixed_memory=bool(cil.fixed_memory),
                    memory_per_class=int(cil.memory_per_class), predict=str(cil.predict), init_optim=init_o,
                    update_optim=upd_o, batch_size=int(config.train.batch_size),
                    feature_batch_size=int(cil.feature_batch_size), num_classes=scenario.num_classes,
                    replay_batch_size=int(cil.replay_batch_size), max_replay_batch=int(cil.max_replay_batch),
                    batching=str(cil.batching), class_sizes=cc.class_sizes(scenario), task_classes=task_classes,
                    init_epochs=init_ep, epochs=ep, nb_proxy=int(pod.nb_proxy), lambda_c=float(pod.lambda_c),
                    lambda_f=float(pod.lambda_f), nca_margin=float(pod.nca_margin),
                    nca_scale=float(pod.nca_scale), nca_hinge=bool(pod.nca_hinge),
                    ft_epochs=int(pod.ft_epochs), ft_lr=float(pod.ft_lr))
    static = dataclasses.replace(static, ft_capacity=_ft_capacity(static, task_classes))
    model = common.model_from_config(config.model, scenario.num_classes)
    k_net, k_lsc, k_state = jax.random.split(rng, 3)
    variables = model.init(k_net, jnp.zeros((1, *scenario.image_shape), jnp.float32), train=False)
    D, C, K = int(model.feature_dim), int(scenario.num_classes), static.nb_proxy
    bound = 1.0 / math.sqrt(D)
    lsc = {"proxies": jax.random.uniform(k_lsc, (C, K, D), jnp.float32, -bound, bound),
           "sigma": jnp.ones((), jnp.float32)}
    params = {"net": variables["params"], "lsc": lsc}
    z = jnp.zeros((), jnp.int32)
    net = ModelState(params=params, batch_stats=variables.get("batch_stats", {}), opt_state=init_o.make().init(params),
                     step=z, task_step=z, task_steps=z, steps_per_epoch=jnp.ones((), jnp.int32), model=model,
                     optim=init_o)
    cap = ex.memory_capacity(C, mem_size, static.fixed_memory, static.memory_per_class)
    mem = ex.init_memory(cap, scenario.image_shape, C, D)
    return State(net=net, old_params=params, old_batch_stats=net.batch_stats, mem=mem, key=k_state,
                 swept={"optim.lr": jnp.float32(config.optim.lr), "cil.update_lr": jnp.float32(cil.update_lr)},
                 tc=cc.TaskCounts.of(), static=static)


def begin_task(state: State, task: TaskInfo) -> State:
    """Task boundary: phase optimizer, reset of its state, the task's counts
    (``State.tc``) and phase (every task >= 1 runs one compiled step)."""
    st, static, counts = icarl_phases.enter_task(state.static, task)
    return state.replace(net=begin_phase(state.net, static, task, st), static=static, tc=counts)


# ------------------------------------------------------------ the pieces
def _is_stage(mdl, method_name: str) -> bool:
    from clj.models.resnet import ResNetStage

    return method_name == "__call__" and isinstance(mdl, ResNetStage)


def forward(ms: ModelState, params, batch_stats, x: jax.Array, train: bool):
    """The backbone with its intermediate maps.

    Args:
      ms: the ModelState (its ``model``).
      params: ``{"net", "lsc"}`` (only ``net`` is read).
      batch_stats: BN statistics; x: float32 [B, H, W, C].
      train: BN in training mode (updates the statistics).

    Returns:
      ``(features float32 [B, D], fmaps: list of [B, h, w, c] stage outputs
      (the residual stages of a ResNet, the conv stages of ``small_cnn``;
      empty for an MLP), new batch_stats)``.
    """
    variables = {"params": params["net"]}
    has_bn = bool(jax.tree_util.tree_leaves(batch_stats))
    if has_bn:
        variables["batch_stats"] = batch_stats
    mutable = ["intermediates"] + (["batch_stats"] if train and has_bn else [])
    (_, feats), upd = ms.model.apply(variables, x, train=train, return_features=True,
                                     capture_intermediates=_is_stage, mutable=mutable)
    fmaps = jax.tree_util.tree_leaves(upd.get("intermediates", {}))
    return feats.astype(jnp.float32), fmaps, upd.get("batch_stats", batch_stats)


def lsc_logits(lsc: dict, feats: jax.Array) -> jax.Array:
    """The local similarity classifier (PODNet Eq. 5-6; PyCIL's
    ``CosineLinear`` + ``reduce_proxies``).

    Args:
      lsc: ``proxies`` float32 [C, K, D], ``sigma`` float32 [].
      feats: float [B, D].

    Returns:
      float32 [B, C]: ``sigma * sum_k softmax_k(s_ck) s_ck``, ``s_ck`` the
      cosine of the feature and proxy k of class c.
    """
    f = common.l2_normalize(feats)
    w = common.l2_normalize(lsc["proxies"])
    sims = jnp.einsum("bd,ckd->bck", f, w)
    att = jax.nn.softmax(sims, axis=-1)
    return lsc["sigma"] * jnp.sum(att * sims, axis=-1)


def nca_loss(logits: jax.Array, y: jax.Array, seen: jax.Array, w: jax.Array | None = None, margin: float = 0.0,
             scale: float = 1.0, hinge: bool = False) -> jax.Array:
    """NCA loss as PyCIL's ``nca`` computes it (PODNet Eq. 7, "positive
    excluded from the denominator").

    With ``t = eta (s - delta 1[j = y])`` and ``m = max_j t_j`` over the seen
    classes, each example's loss is

        -( (t_y - m) - log(1 + sum_{j != y, seen} exp(t_j - m)) ):

    the target's slot of the denominator is zeroed *after* the row maximum
    is subtracted, so it still adds ``exp(0) = 1`` (PyCIL's ``disable_pos``),
    which keeps the loss >= 0 and equal to the cross-entropy whenever the
    target has the largest similarity.  PyCIL subtracts its margin from every
    similarity, which cancels: its loss is ``delta = 0``.

    Args:
      logits: float32 [B, C] class similarities; y: int32 [B].
      seen: bool [C] classes that take part (the rest are left out).
      w: bool/float [B] rows that count (None = all).
      margin: delta, subtracted from the target's similarity; scale: eta.
      hinge: clip each example's loss at 0 (the paper; a no-op on this form).

    Returns:
      float32 []: the mean over the counted rows.
    """
    C = logits.shape[1]
    onehot = jax.nn.one_hot(y, C, dtype=bool)
    t = scale * (logits.astype(jnp.float32) - margin * onehot.astype(jnp.float32))
    t = jnp.where(seen[None, :], t, -jnp.inf)
    t = t - jax.lax.stop_gradient(jnp.max(t, axis=1, keepdims=True))
    pos = jnp.sum(jnp.where(onehot, t, 0.0), axis=1)
    others = jnp.sum(jnp.where(onehot | ~seen[None, :], 0.0, jnp.exp(t)), axis=1)
    loss = -(pos - jnp.log(1.0 + others))
    if hinge:
        loss = jnp.maximum(loss, 0.0)
    if w is None:
        return jnp.mean(loss)
    wf = w.astype(jnp.float32)
    return jnp.sum(loss * wf) / jnp.maximum(jnp.sum(wf), 1.0)


def pod_spatial(fmaps_old: list, fmaps_new: list, w: jax.Array | None = None) -> jax.Array:
    """POD-spatial (PODNet Eq. 2-4; PyCIL's ``pod_spatial_loss``).

    For each pair of maps [B, H, W, C]: squares, sums over the width
    (-> [B, H, C]) and over the height (-> [B, W, C]), concatenates both
    flattened, L2-normalises per example, and takes the Euclidean distance
    between old and new, averaged over the counted examples; the layers'
    values are averaged.

    Returns:
      float32 [] (0 when there are no maps).
    """
    if not fmaps_new:
        return jnp.zeros((), jnp.float32)
    wf = None if w is None else w.astype(jnp.float32)
    total = jnp.zeros((), jnp.float32)
    for a, b in zip(fmaps_old, fmaps_new):
        a, b = a.astype(jnp.float32) ** 2, b.astype(jnp.float32) ** 2

        def pool(z):
            n = z.shape[0]
            return jnp.concatenate([z.sum(axis=2).reshape(n, -1), z.sum(axis=1).reshape(n, -1)], axis=-1)

        d = common.safe_norm(common.l2_normalize(pool(a)) - common.l2_normalize(pool(b)), axis=-1)
        total = total + (jnp.mean(d) if wf is None else jnp.sum(d * wf) / jnp.maximum(jnp.sum(wf), 1.0))
    return total / len(fmaps_new)


def pod_flat(f_old: jax.Array, f_new: jax.Array, w: jax.Array | None = None) -> jax.Array:
    """POD-flat (PyCIL: ``cosine_embedding_loss`` with target 1): the mean of
    ``1 - cos(f_new, f_old)`` over the counted examples, float32 []."""
    d = 1.0 - jnp.sum(common.l2_normalize(f_new) * common.l2_normalize(f_old), axis=-1)
    if w is None:
        return jnp.mean(d)
    wf = w.astype(jnp.float32)
    return jnp.sum(d * wf) / jnp.maximum(jnp.sum(wf), 1.0)


def adaptive_factor(known, total) -> jax.Array:
    """PyCIL's distillation factor ``sqrt(total / (total - known))``, 0 in
    task 0 (float32 []; ``known`` / ``total`` host ints or int32 [] arrays)."""
    k, n = jnp.asarray(known, jnp.float32), jnp.asarray(total, jnp.float32)
    return jnp.where(k > 0, jnp.sqrt(n / jnp.maximum(n - k, 1.0)), 0.0)


def update_mask(params, known: int, total: int):
    """The update mask of a task: the backbone trains (its unused ``head``
    does not), the proxies of classes ``known <= c < total`` train (old
    ones frozen, PyCIL's ``fc1`` at lr 0), sigma trains."""
    net_mask = {k: jax.tree_util.tree_map(lambda p: jnp.asarray(k != "head"), v) for k, v in params["net"].items()}
    C = params["lsc"]["proxies"].shape[0]
    c = jnp.arange(C)
    rows = ((c >= known) & (c < total))[:, None, None]
    return {"net": net_mask, "lsc": {"proxies": rows, "sigma": jnp.ones((), bool)}}


def _loss_fn(state: State, net: ModelState, x, y, w, known, total, distil: bool):
    """The PODNet objective on a batch and its pieces (``distil``: the task
    has old classes, static)."""
    static = state.static
    seen = jnp.arange(static.num_classes) < total
    factor = adaptive_factor(known, total)
    if distil:
        f_old, maps_old, _ = forward(net, state.old_params, state.old_batch_stats, x, train=False)
        f_old = jax.lax.stop_gradient(f_old)
        maps_old = [jax.lax.stop_gradient(m) for m in maps_old]

    def loss_fn(params):
        f, maps, bs = forward(net, params, net.batch_stats, x, train=True)
        logits = lsc_logits(params["lsc"], f)
        nca = nca_loss(logits, y, seen, w, static.nca_margin, static.nca_scale, static.nca_hinge)
        if distil:
            flat = pod_flat(f_old, f, w)
            spatial = pod_spatial(maps_old, maps, w)
        else:
            flat = spatial = jnp.zeros((), jnp.float32)
        loss = nca + factor * (static.lambda_f * flat + static.lambda_c * spatial)
        return loss, (bs, logits, nca, flat, spatial)

    return loss_fn


def train_step(state: State, batch: dict, rng: jax.Array):
    """One step (module doc, item 2).

    Args:
      batch: ``x`` float32 [B, H, W, C] augmented, ``y`` int32 [B].

    Returns:
      (State, {"loss", "nca", "pod_flat", "pod_spatial", "acc"} float32 scalars).
    """
    static, tc, phase, net = state.static, state.tc, state.static.phase, state.net
    x, y, w = icarl.mixed_batch(static, state.mem, state.key, net.task_step, batch, rng, tc, phase)
    loss_fn = _loss_fn(state, net, x, y, w, tc.known, tc.total, not phase.first)
    (loss, (bs, logits, nca, flat, spatial)), grads = jax.value_and_grad(loss_fn, has_aux=True)(net.params)
    new_net = common.apply_gradients(net, grads, bs, update_mask(net.params, tc.known, tc.total),
                                     base_lr=phase_lr(state.swept, 0 if phase.first else 1))
    acc = icarl.new_data_accuracy(logits, y, tc.total, icarl.new_rows(static, tc, batch))
    return state.replace(net=new_net), {"loss": loss, "nca": nca, "pod_flat": flat, "pod_spatial": spatial,
                                        "acc": acc}


def features(state: State, x: jax.Array, net: ModelState | None = None) -> jax.Array:
    """Embedding float32 [B, D] of normalised inputs (eval mode)."""
    net = state.net if net is None else net
    f, _, _ = forward(net, net.params, net.batch_stats, x, train=False)
    return f


def _pad_memory(mem: ex.ExemplarMemory, capacity: int) -> ex.ExemplarMemory:
    extra = capacity - mem.capacity
    if extra <= 0:
        return mem
    big = jnp.iinfo(jnp.int32).max
    return mem.replace(x=jnp.concatenate([mem.x, jnp.zeros((extra, *mem.x.shape[1:]), mem.x.dtype)]),
                       y=jnp.concatenate([mem.y, jnp.full((extra,), -1, jnp.int32)]),
                       rank=jnp.concatenate([mem.rank, jnp.full((extra,), big, jnp.int32)]))


def finetune_plan(static: Static, classes: tuple) -> tuple[int, int, int]:
    """(per-class quota m_ft, examples n_ft, steps per epoch) of the
    class-balanced finetuning after the task of ``classes`` (host ints):
    m_ft = ``memory_size // known`` (PyCIL), n_ft = the stored old
    exemplars + min(size, m_ft) per new class."""
    st = static.st
    m_ft = ex.per_class_quota(st.known, static.memory_size, static.fixed_memory, static.memory_per_class)
    n_new = sum(min(static.class_sizes[c], m_ft) for c in classes) if static.class_sizes else m_ft * len(classes)
    n_ft = st.n_mem + n_new
    return m_ft, n_ft, max(1, math.ceil(n_ft / static.batch_size))


def finetune(state: State, ft_mem: ex.ExemplarMemory, steps_per_epoch: int, key: jax.Array) -> ModelState:
    """Class-balanced finetuning (PyCIL ``_train`` after the main phase):
    ``ft_epochs`` epochs over the balanced set, a fresh SGD at ``ft_lr``
    (the update phase's momentum and weight decay), cosine per epoch, batches
    of B from a per-epoch permutation (the last one partial), the PODNet
    loss against the old network, the old proxies frozen.

    Returns:
      the finetuned ModelState (its optimizer state is reset by the next
      ``begin_task``).
    """
    static, st = state.static, state.static.st
    B = static.batch_size
    spec = dataclasses.replace(static.update_optim, lr=static.ft_lr, schedule="cosine",
                               t_max=float(static.ft_epochs))
    n_steps = static.ft_epochs * steps_per_epoch
    net = state.net.replace(optim=spec, opt_state=spec.make().init(state.net.params),
                            task_step=jnp.zeros((), jnp.int32), task_steps=jnp.asarray(n_steps, jnp.int32),
                            steps_per_epoch=jnp.asarray(steps_per_epoch, jnp.int32))
    valid = ft_mem.valid()
    n_valid = jnp.sum(valid)
    cap = ft_mem.capacity
    mask = update_mask(net.params, st.known, st.total)

    def body(i, net):
        e, j = i // steps_per_epoch, i % steps_per_epoch
        k_perm, k_aug = jax.random.split(jax.random.fold_in(key, e))
        rnd = jax.random.uniform(k_perm, (cap,))
        order = jnp.argsort(jnp.where(valid, rnd, 2.0))  # this epoch's shuffle of the filled slots
        pos = j * B + jnp.arange(B)
        rows = order[jnp.minimum(pos, cap - 1)]
        w = pos < n_valid
        x = static.augment(ft_mem.x[rows], jax.random.fold_in(k_aug, j), train=True)
        y = jnp.maximum(ft_mem.y[rows], 0)
        loss_fn = _loss_fn(state, net, x, y, w, st.known, st.total, st.known > 0)
        (_, (bs, *_)), grads = jax.value_and_grad(loss_fn, has_aux=True)(net.params)
        return common.apply_gradients(net, grads, bs, mask)

    return jax.lax.fori_loop(0, n_steps, body, net)


def end_task(state: State, task_data: dict) -> State:
    """Task end (module doc, item 3).  ``task_data``: ``x`` uint8 [n, ...],
    ``y`` int32 [n], ``info`` TaskInfo (host values)."""
    static0 = state.static
    state = icarl_phases.with_task_statics(state, task_data["info"])
    static, st = state.static, state.static.st
    classes = tuple(int(c) for c in task_data["info"].classes)
    transform = functools.partial(static.augment, rng=None, train=False)
    key, k_ft = jax.random.split(state.key)
    net = state.net
    if st.known > 0 and static.ft_epochs > 0:
        m_ft, _, spe = finetune_plan(static, classes)
        ft_mem = ex.update_memory(_pad_memory(state.mem, static.ft_capacity), lambda xf: features(state, xf),
                                  transform, task_data["x"], task_data["y"], classes, m_ft, static.num_classes,
                                  static.feature_batch_size)
        net = finetune(state, ft_mem, spe, k_ft)
    state = state.replace(net=net, key=key)
    mem = ex.update_memory(state.mem, lambda xf: features(state, xf), transform, task_data["x"], task_data["y"],
                           classes, st.quota, static.num_classes, static.feature_batch_size)
    return state.replace(mem=mem, old_params=net.params, old_batch_stats=net.batch_stats, static=static0)


def predict(state: State, x: jax.Array, task_id: jax.Array | None = None) -> jax.Array:
    """float32 [B, C]: LSC scores (``cnn``) or NME scores (``nme``), classes
    not seen yet at -1e9."""
    del task_id
    f = features(state, x)
    if state.static.predict == "nme":
        scores = ex.nme_scores(f, state.mem.class_means)
    else:
        scores = lsc_logits(state.net.params["lsc"], f)
    return cc.mask_logits(scores, state.tc.total)


def memory_bytes(state: State) -> dict:
    """Stored exemplars (uint8) and the backbone + LSC parameters at 4 bytes
    each (the unused head and BN statistics excluded)."""
    from clj.models.utils import count_params

    buf = ex.exemplar_bytes(state.mem)
    p = state.net.params
    model = 4 * (count_params({k: v for k, v in p["net"].items() if k != "head"}) + count_params(p["lsc"]))
    return {"buffer": buf, "model": model, "total": buf + model}


def result_extras(state: State) -> dict:
    static = state.static
    return {"exemplars": int(state.mem.count()), "memory_size": static.memory_size,
            "exemplars_per_class": int(state.tc.quota), "predict": static.predict, "nb_proxy": static.nb_proxy,
            "sigma": float(state.net.params["lsc"]["sigma"])}


def _spec():
    from clj.methods.api import Capabilities, MethodSpec

    return MethodSpec(init=init, begin_task=begin_task, train_step=train_step, end_task=end_task, predict=predict,
                      capabilities=Capabilities(static_task_info=True), memory_bytes=memory_bytes,
                      result_extras=result_extras, task_steps=task_steps, sweepable=SWEEPABLE)


SPEC = _spec()
