"""Growing networks: DER (a new backbone per task) and MEMO (a new
specialized stage per task over a shared generalized stem), with weight
aligning and a herding exemplar memory.

Sources: Yan, Xie & He, "DER: Dynamically Expandable Representation for
Class Incremental Learning", CVPR 2021 (Sec. 3: one new feature extractor
per task, old ones frozen, concatenated features, one classifier, auxiliary
classifier over the new extractor with the old classes as one extra class;
PyCIL's variant without the channel-pruning masks); Zhou et al., "A Model or
603 Exemplars: Towards Memory-Efficient Class-Incremental Learning", ICLR
2023 (MEMO, Sec. 4: only the last residual stage is specialized and
replicated; ``train_base``); PyCIL ``models/der.py`` / ``memo.py`` as
summarised in ``shared/specs/memo.md`` Secs. 4-5.

Growth as explicit state, static shapes for the whole run:

* ``params["spec"]`` / ``batch_stats["spec"]`` stack the specialized blocks
  of all T tasks along a leading axis [T, ...], allocated at ``init``; block
  t becomes live at task t, initialised as a copy of block t-1 (BN
  statistics included);
* the head is allocated for T*D features and all C classes; the feature of
  a block that is not live yet is zero and its head rows are zero;
* the live old blocks run one after the other (a Python loop over the static
  number of live blocks; ``cil.growth="vmap"``, the earlier version, runs
  them under ``vmap`` over the block axis and is about as slow as all of
  them together on the CPU) in eval-mode BN; the newest one runs in train
  mode; gradients flow through the old blocks into the generalized stem
  (``train_base``) but only the trainable parameters (the newest block, the
  generalized part while it trains, the heads) are differentiated, and an
  update mask keeps every old block's parameters bit-identical;
* the number of live blocks is a static per-task value, so each task
  compiles once (the live blocks are a static slice: no work on the blocks
  of future tasks) and no array is ever reallocated.

Per task t: ``begin_task`` copies block t-1 into block t, builds the new
head (fresh Kaiming-uniform weights of fan-in D (t+1), the old classes x old
features block copied in, bias of old classes kept) and a fresh auxiliary
head of n_new + 1 outputs, and resets the optimizer (PyCIL's init / update
phases).  ``train_step``: CE over the seen classes + ``alpha_aux`` x CE of
the aux head on the newest block's features (old classes -> 0, new class c
-> c - known + 1; tasks >= 1) on the batch of ``cil.batching``
(:func:`clj.methods.icarl.mixed_batch`).  ``end_task``: weight aligning (tasks >= 1),
then reduce + herd the memory on the concatenated features and recompute the
NME means.
"""
from __future__ import annotations

import dataclasses
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct

from clj.data.augment import Augment
from clj.methods import cil_common as cc
from clj.methods import common
from clj.methods.common import ModelState, OptimSpec, TaskInfo
from clj.models.resnet import RESNET32_FEATURE_DIM, ResNet32Backbone, ResNet32Deep, ResNet32Shallow
from clj.models.utils import count_params
from clj.replay import exemplars as ex

KINDS = ("memo", "dynamic_er")  # "der" elsewhere in clj is Dark Experience Replay
MODELS = ("resnet32",)


def split_modules(kind: str, model_cfg) -> tuple[nn.Module | None, nn.Module, int]:
    """(generalized module or None, specialized module, feature dim D).

    MEMO: ``ResNet32Shallow`` (stem + stages 1-2) / ``ResNet32Deep`` (stage 3
    + pool); DER: no generalized part / the whole ``ResNet32Backbone``.
    ``model_cfg.num_blocks`` sets the blocks per stage (5 = ResNet-32).

    Raises:
      clj.config.ConfigError: a model other than ``resnet32`` or a bad kind.
    """
    from clj.config import ConfigError

    if model_cfg.name not in MODELS:
        raise ConfigError(f"model.name={model_cfg.name!r} is not supported by {kind}; valid: {', '.join(MODELS)} "
                          "(model.num_blocks sets the depth: 5 = ResNet-32, 1 = ResNet-8).")
    nb = int(model_cfg.get("num_blocks", 5))
    if nb < 1:
        raise ConfigError(f"model.num_blocks={nb} is invalid: it must be >= 1.")
    if kind == "memo":
        return ResNet32Shallow(nb), ResNet32Deep(nb), RESNET32_FEATURE_DIM
    if kind == "dynamic_er":
        return None, ResNet32Backbone(nb), RESNET32_FEATURE_DIM
    raise ConfigError(f"kind={kind!r} is unknown; valid: {', '.join(KINDS)}.")


def split_param_counts(kind: str, model_cfg, image_shape) -> dict:
    """Parameter counts (FC excluded, BN statistics excluded) from shapes:
    ``{"shallow": generalized, "deep": one specialized block, "total": one
    whole backbone}`` for the scenario's image shape."""
    _, deep_m, _ = split_modules("memo", model_cfg)
    shallow_m, _, _ = split_modules("memo", model_cfg)
    key = jax.random.PRNGKey(0)
    x = jax.ShapeDtypeStruct((1, *image_shape), jnp.float32)
    sv = jax.eval_shape(shallow_m.init, key, x)
    b = jax.eval_shape(lambda v, x: shallow_m.apply(v, x), sv, x)
    dv = jax.eval_shape(deep_m.init, key, b)
    s, d = count_params(sv["params"]), count_params(dv["params"])
    return {"shallow": s, "deep": d, "total": s + d}


@dataclasses.dataclass(frozen=True)
class Hparams:
    """Static hyperparameters (hashable).

    Attributes:
      kind: ``"memo"`` or ``"dynamic_er"`` (DER of Yan et al.).
      gen, spec: the generalized (None for DER) and specialized modules.
      D: features per block; T: blocks allocated (tasks of the scenario).
      num_classes: C; aux_max: width of the aux head (largest task + 1).
      augment: the scenario transform.
      memory_size, fixed_memory, memory_per_class: exemplar budget.
      predict: ``"cnn"`` or ``"nme"``.
      train_base: keep training the generalized part after task 0 (MEMO).
      alpha_aux: weight of the auxiliary loss.
      init_optim, update_optim: task-0 and later-task optimizers.
      batch_size, replay_batch_size, max_replay_batch: replay share.
      feature_batch_size: chunk of feature extraction at task end.
      batching, class_sizes, task_classes, init_epochs, epochs: as
        :class:`clj.methods.icarl.Hparams`.
      growth: ``"loop"`` or ``"vmap"`` (module doc).
      st: the current task's statics.
    """

    kind: str = "memo"
    gen: nn.Module | None = None
    spec: nn.Module | None = None
    D: int = 64
    T: int = 1
    num_classes: int = 10
    aux_max: int = 2
    augment: Augment = Augment()
    memory_size: int = 2000
    fixed_memory: bool = False
    memory_per_class: int = 20
    predict: str = "cnn"
    train_base: bool = True
    alpha_aux: float = 1.0
    init_optim: OptimSpec = OptimSpec()
    update_optim: OptimSpec = OptimSpec()
    batch_size: int = 32
    replay_batch_size: int = -1
    max_replay_batch: int = 512
    feature_batch_size: int = 256
    batching: str = "concat"
    class_sizes: tuple = ()
    task_classes: tuple = ()
    init_epochs: float = 1.0
    epochs: float = 1.0
    growth: str = "loop"
    st: cc.TaskStatics = cc.TaskStatics()

    @property
    def live(self) -> int:
        """Live specialized blocks (>= 1)."""
        return max(self.st.task + 1, 1)

    @property
    def gen_train(self) -> bool:
        """Whether the generalized part trains (and uses train-mode BN) now."""
        return self.gen is not None and (self.st.task <= 0 or self.train_base)


@struct.dataclass
class State:
    """Network (params ``gen``/``spec``/``head``/``aux``), memory, key.

    Attributes:
      net: params ``{"gen", "spec" [T, ...], "head": {"kernel" [T*D, C],
        "bias" [C]}, "aux": {"kernel" [D, A], "bias" [A]}}``; batch_stats
        ``{"gen", "spec" [T, ...]}``; optimizer state and counters.
      mem: exemplar memory (class means over T*D features).
      key: PRNG key for the per-task head initialisation.
      hp: static hyperparameters.
    """

    net: ModelState
    mem: ex.ExemplarMemory
    key: jax.Array
    hp: Hparams = struct.field(pytree_node=False)


def _uniform(key, shape, fan_in):
    b = math.sqrt(3.0 / fan_in)  # Kaiming-uniform, linear gain (PyCIL SimpleLinear)
    return jax.random.uniform(key, shape, jnp.float32, -b, b)


def init(rng: jax.Array, config, scenario, kind: str = "memo") -> State:
    """A fresh State with all T blocks allocated (block 0 initialised, the
    others copies of it until they become live).

    Raises:
      clj.config.ConfigError: bad ``config.cil`` or model values.
    """
    cil = cc.get_cil(config)
    gen, spec, D = split_modules(kind, config.model)
    T, C = scenario.num_tasks, scenario.num_classes
    from clj.methods.icarl import resolve_memory_size

    counts = split_param_counts(kind, config.model, scenario.image_shape)
    mem_size = resolve_memory_size(config, scenario, kind, cil, counts)
    init_o, upd_o = cc.optim_specs(config, cil)
    init_ep, ep = cc.phase_epochs(config)
    hp = Hparams(kind=kind, gen=gen, spec=spec, D=D, T=T, num_classes=C,
                 aux_max=max(scenario.classes_per_task) + 1,
                 augment=common.augment_from_config(config.augment, scenario), memory_size=mem_size,
                 fixed_memory=bool(cil.fixed_memory), memory_per_class=int(cil.memory_per_class),
                 predict=str(cil.predict), train_base=bool(cil.train_base), alpha_aux=float(cil.alpha_aux),
                 init_optim=init_o, update_optim=upd_o, batch_size=int(config.train.batch_size),
                 replay_batch_size=int(cil.replay_batch_size), max_replay_batch=int(cil.max_replay_batch),
                 feature_batch_size=int(cil.feature_batch_size), batching=str(cil.batching),
                 class_sizes=cc.class_sizes(scenario),
                 task_classes=tuple(tuple(int(c) for c in t.classes) for t in scenario.tasks),
                 init_epochs=init_ep, epochs=ep, growth=str(cil.growth))
    k_gen, k_spec, k_state = jax.random.split(rng, 3)
    x = jnp.zeros((1, *scenario.image_shape), jnp.float32)
    params, stats = {}, {}
    b = x
    if gen is not None:
        gv = gen.init(k_gen, x, train=False)
        params["gen"], stats["gen"] = gv["params"], gv.get("batch_stats", {})
        b = gen.apply(gv, x, train=False)
    sv = spec.init(k_spec, b, train=False)
    tile = lambda a: jnp.broadcast_to(a[None], (T, *a.shape))  # noqa: E731
    params["spec"] = jax.tree_util.tree_map(tile, sv["params"])
    stats["spec"] = jax.tree_util.tree_map(tile, sv["batch_stats"])
    params["head"] = {"kernel": jnp.zeros((T * D, C), jnp.float32), "bias": jnp.zeros((C,), jnp.float32)}
    params["aux"] = {"kernel": jnp.zeros((D, hp.aux_max), jnp.float32),
                     "bias": jnp.zeros((hp.aux_max,), jnp.float32)}
    tx = init_o.make()
    z = jnp.zeros((), jnp.int32)
    net = ModelState(params=params, batch_stats=stats, opt_state=tx.init(params), step=z, task_step=z,
                     task_steps=z, steps_per_epoch=jnp.ones((), jnp.int32), model=spec, optim=init_o)
    cap = ex.memory_capacity(C, mem_size, hp.fixed_memory, hp.memory_per_class)
    mem = ex.init_memory(cap, scenario.image_shape, C, T * D)
    return State(net=net, mem=mem, key=k_state, hp=hp)


def _take(tree, idx):
    return jax.tree_util.tree_map(lambda a: a[idx], tree)


def begin_task(state: State, task: TaskInfo) -> State:
    """Grows the network for ``task`` (module doc) and resets the optimizer."""
    from clj.methods.icarl import begin_phase, task_statics

    hp = state.hp
    st = task_statics(hp, task)
    hp = dataclasses.replace(hp, st=st)
    t, D = st.task, hp.D
    p = dict(state.net.params)
    bs = dict(state.net.batch_stats)
    if t >= 1:  # the new block starts as a copy of the previous one
        p["spec"] = jax.tree_util.tree_map(lambda a: a.at[t].set(a[t - 1]), p["spec"])
        bs["spec"] = jax.tree_util.tree_map(lambda a: a.at[t].set(a[t - 1]), bs["spec"])
    k_head, k_aux = jax.random.split(jax.random.fold_in(state.key, t))
    K = p["head"]["kernel"]
    fresh = _uniform(k_head, K.shape, D * (t + 1))
    rows = jnp.arange(K.shape[0])[:, None]
    cols = jnp.arange(K.shape[1])[None, :]
    kern = jnp.where((rows < D * t) & (cols < st.known), K, fresh)
    kern = jnp.where(rows < D * (t + 1), kern, 0.0)
    bias = jnp.where(jnp.arange(K.shape[1]) < st.known, p["head"]["bias"], 0.0)
    p["head"] = {"kernel": kern, "bias": bias}
    A = p["aux"]["kernel"]
    p["aux"] = {"kernel": _uniform(k_aux, A.shape, D), "bias": jnp.zeros((A.shape[1],), jnp.float32)}
    net = begin_phase(state.net.replace(params=p, batch_stats=bs), hp, task)
    return state.replace(net=net, hp=hp)


def _features(hp: Hparams, params, stats, x, train: bool, new_block=None):
    """(concatenated features float32 [B, T*D], new batch_stats, newest
    block's features [B, D]).

    ``new_block``: the newest block's parameters when they are
    differentiated apart from the stack (``growth="loop"`` training)."""
    n = hp.live
    new_stats = dict(stats)
    b = x
    if hp.gen is not None:
        gv = {"params": params["gen"], "batch_stats": stats["gen"]}
        if train and hp.gen_train:
            b, upd = hp.gen.apply(gv, x, train=True, mutable=["batch_stats"])
            new_stats["gen"] = upd["batch_stats"]
        else:
            b = hp.gen.apply(gv, x, train=False)

    def run_eval(pp, ss):
        return hp.spec.apply({"params": pp, "batch_stats": ss}, b, train=False).astype(jnp.float32)

    sp, ss = params["spec"], stats["spec"]
    loop = hp.growth == "loop"
    n_eval = n - 1 if train else n
    if loop:  # one block after the other (static count): no vmap over the stack
        old = [run_eval(_take(sp, i), _take(ss, i)) for i in range(n_eval)]
    else:
        old = []
        if n_eval > 0:
            allf = jax.vmap(run_eval)(_take(sp, slice(0, n_eval)), _take(ss, slice(0, n_eval)))  # [n, B, D]
            old = [allf[i] for i in range(n_eval)]
    if train:
        pn = new_block if new_block is not None else _take(sp, n - 1)
        f_new, upd = hp.spec.apply({"params": pn, "batch_stats": _take(ss, n - 1)}, b, train=True,
                                   mutable=["batch_stats"])
        f_new = f_new.astype(jnp.float32)
        new_stats["spec"] = jax.tree_util.tree_map(lambda a, u: a.at[n - 1].set(u), ss, upd["batch_stats"])
        parts = old + [f_new]
    else:
        parts = old
        f_new = old[n - 1]
    feats = jnp.concatenate(parts, 1) if len(parts) > 1 else parts[0]
    pad = hp.T * hp.D - feats.shape[1]
    if pad:
        feats = jnp.concatenate([feats, jnp.zeros((feats.shape[0], pad), feats.dtype)], 1)
    return feats, new_stats, f_new


def _head(params, feats):
    return feats @ params["head"]["kernel"] + params["head"]["bias"]


def update_mask(hp: Hparams, params):
    """The update mask (bool, leaves broadcastable to params) of
    :func:`clj.methods.common.apply_gradients`: True where parameters may
    move this task: the generalized part when it trains, the newest block
    only, head rows of live blocks x seen classes, aux columns of the task
    (old blocks stay bit-identical)."""
    st, n = hp.st, hp.live
    m = {}
    if "gen" in params:
        m["gen"] = jax.tree_util.tree_map(lambda a: jnp.full((), hp.gen_train), params["gen"])
    m["spec"] = jax.tree_util.tree_map(
        lambda a: (jnp.arange(a.shape[0]) == n - 1).reshape((-1,) + (1,) * (a.ndim - 1)), params["spec"])
    K = params["head"]["kernel"]
    col = jnp.arange(K.shape[1]) < st.total
    m["head"] = {"kernel": (jnp.arange(K.shape[0]) < n * hp.D)[:, None] & col[None, :], "bias": col}
    acol = jnp.arange(params["aux"]["kernel"].shape[1]) < (st.total - st.known + 1)
    m["aux"] = {"kernel": acol[None, :], "bias": acol}
    return m


def aux_labels(y: jax.Array, known: int) -> jax.Array:
    """Aux-head labels: 0 for old classes (y < known), y - known + 1 for new."""
    return jnp.where(y < known, 0, y - known + 1)


def trainable(hp: Hparams, params) -> dict:
    """The parameters a step differentiates (``growth="loop"``): ``new``
    (the newest block), ``head``, ``aux`` and ``gen`` while it trains."""
    tp = {"new": _take(params["spec"], hp.live - 1), "head": params["head"], "aux": params["aux"]}
    if hp.gen_train:
        tp["gen"] = params["gen"]
    return tp


def full_grads(hp: Hparams, params, g_tp) -> dict:
    """Gradients of the trainable subtree placed in a zero tree shaped like
    ``params`` (the frozen blocks get zeros; the update mask stops them)."""
    g = {k: jax.tree_util.tree_map(jnp.zeros_like, v) for k, v in params.items()}
    g["head"], g["aux"] = g_tp["head"], g_tp["aux"]
    if "gen" in g_tp:
        g["gen"] = g_tp["gen"]
    n = hp.live
    g["spec"] = jax.tree_util.tree_map(lambda z, gn: z.at[n - 1].set(gn), g["spec"], g_tp["new"])
    return g


def train_step(state: State, batch: dict, rng: jax.Array):
    """One step: CE(seen classes) + alpha_aux * CE(aux head) (module doc).

    Args:
      batch: ``x`` float32 [B, H, W, C] augmented, ``y`` int32 [B].

    Returns:
      (State, {"loss", "ce", "aux", "acc"} float32 scalars).
    """
    from clj.methods.icarl import mixed_batch

    hp, st, net = state.hp, state.hp.st, state.net
    x, y, w = mixed_batch(hp, state.mem, state.key, net.task_step, batch, rng)
    nb = st.new_per_step if hp.batching == "pycil" else batch["y"].shape[0]
    use_aux = st.task >= 1 and hp.alpha_aux > 0

    def loss_from(params, new_block):
        feats, bs, f_new = _features(hp, params, net.batch_stats, x, train=True, new_block=new_block)
        logits = _head(params, feats)
        ce = common.cross_entropy(cc.mask_logits(logits, st.total), y, w)
        aux = jnp.zeros((), jnp.float32)
        if use_aux:
            al = f_new @ params["aux"]["kernel"] + params["aux"]["bias"]
            aux = common.cross_entropy(cc.mask_logits(al, st.total - st.known + 1), aux_labels(y, st.known), w)
        return ce + hp.alpha_aux * aux, (bs, logits, ce, aux)

    if hp.growth == "loop":
        def loss_fn(tp):
            params = {**net.params, "head": tp["head"], "aux": tp["aux"]}
            if "gen" in tp:
                params["gen"] = tp["gen"]
            return loss_from(params, tp["new"])

        (loss, (bs, logits, ce, aux)), g_tp = jax.value_and_grad(loss_fn, has_aux=True)(trainable(hp, net.params))
        grads = full_grads(hp, net.params, g_tp)
    else:
        (loss, (bs, logits, ce, aux)), grads = jax.value_and_grad(
            lambda p: loss_from(p, None), has_aux=True)(net.params)
    new_net = common.apply_gradients(net, grads, bs, update_mask(hp, net.params))
    acc = jnp.mean((jnp.argmax(cc.mask_logits(logits[:nb], st.total), -1) == y[:nb]).astype(jnp.float32))
    return state.replace(net=new_net), {"loss": loss, "ce": ce, "aux": aux, "acc": acc}


def features(state: State, x: jax.Array) -> jax.Array:
    """Concatenated features float32 [B, T*D] (eval mode; zeros for blocks
    not live yet) of normalised inputs."""
    return _features(state.hp, state.net.params, state.net.batch_stats, x, train=False)[0]


def end_task(state: State, task_data: dict) -> State:
    """Weight aligning (tasks >= 1), then the exemplar memory (module doc)."""
    hp, st = state.hp, state.hp.st
    if st.known > 0:
        p = dict(state.net.params)
        p["head"] = {**p["head"], "kernel": cc.weight_align(p["head"]["kernel"], st.known, st.total)}
        state = state.replace(net=state.net.replace(params=p))
    classes = tuple(int(c) for c in task_data["info"].classes)
    mem = ex.update_memory(state.mem, lambda xf: features(state, xf),
                           lambda xb: hp.augment(xb, None, train=False), task_data["x"], task_data["y"],
                           classes, st.quota, hp.num_classes, hp.feature_batch_size)
    return state.replace(mem=mem)


def predict(state: State, x: jax.Array, task_id: jax.Array | None = None) -> jax.Array:
    """float32 [B, C]: head logits (``cnn``) or NME scores (``nme``)."""
    del task_id
    f = features(state, x)
    if state.hp.predict == "nme":
        return ex.nme_scores(f, state.mem.class_means)
    return _head(state.net.params, f)


def model_param_count(state: State) -> int:
    """Parameters of the live network, FC and aux heads excluded: the
    generalized part plus the live specialized blocks."""
    p = state.net.params
    one_block = count_params(_take(p["spec"], 0))
    return count_params(p.get("gen", {})) + state.hp.live * one_block


def memory_bytes(state: State) -> dict:
    """Stored exemplars (uint8 bytes) + live model parameters x 4 bytes
    (FC / aux heads / BN statistics excluded); ``total`` is their sum."""
    buf = ex.exemplar_bytes(state.mem)
    model = 4 * model_param_count(state)
    return {"buffer": buf, "model": model, "total": buf + model}


def result_extras(state: State) -> dict:
    hp = state.hp
    return {"exemplars": int(state.mem.count()), "memory_size": hp.memory_size,
            "exemplars_per_class": hp.st.quota, "live_blocks": hp.live, "predict": hp.predict,
            "train_base": hp.train_base, "model_params_no_fc": model_param_count(state),
            "head_bytes": common.param_bytes(state.net.params["head"]) + common.param_bytes(state.net.params["aux"])}


def make_spec(kind: str):
    """The :class:`~clj.methods.api.MethodSpec` of ``memo`` or DER (Yan et al.)
    (host task info: a task boundary grows the network)."""
    import functools

    from clj.methods.api import Capabilities, MethodSpec
    from clj.methods.icarl import task_steps as icarl_task_steps  # the same batch plan (hp fields shared)

    return MethodSpec(init=functools.partial(init, kind=kind), begin_task=begin_task,
                      train_step=train_step, end_task=end_task, predict=predict,
                      capabilities=Capabilities(static_task_info=True, conv=True),
                      memory_bytes=memory_bytes, result_extras=result_extras, task_steps=icarl_task_steps)
