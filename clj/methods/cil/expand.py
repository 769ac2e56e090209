"""DER (Yan) and MEMO as methods over the growing network of
:mod:`clj.models.growing` (a new specialized block per task), with weight
aligning and a herding exemplar memory.

Sources: Yan, Xie & He, "DER: Dynamically Expandable Representation for
Class Incremental Learning", CVPR 2021 (Sec. 3: one new feature extractor
per task, old ones frozen, one classifier over the concatenated features,
auxiliary classifier over the new extractor with the old classes as one
extra class; PyCIL's variant without the channel-pruning masks); Zhou et
al., "A Model or 603 Exemplars: Towards Memory-Efficient Class-Incremental
Learning", ICLR 2023 (MEMO, Sec. 4: only the last residual stage is
specialized and replicated; ``train_base``); PyCIL ``models/der.py`` /
``memo.py`` as ``docs/memo.md``, "MEMO's network and its growth", describes them.

The network (its stacked blocks, static shapes, growth) is
:class:`clj.models.growing.GrowingNet`.  Gradients flow through the old
blocks into the generalized stem (``train_base``) but only the trainable
parameters (the newest block, the generalized part while it trains, the
heads) are differentiated, and an update mask keeps every old block's
parameters bit-identical.

Per task t: ``begin_task`` grows the network (:meth:`GrowingNet.grow`: block
t a copy of block t-1, a new head with the old classes x old features
copied in, a fresh auxiliary head of n_new + 1 outputs) and resets the
optimizer (PyCIL's init / update phases).  ``train_step``: CE over the seen
classes + ``alpha_aux`` x CE of the aux head on the newest block's features
(old classes -> 0, new class c -> c - known + 1; tasks >= 1) on the batch of
``cil.batching`` (:func:`clj.methods.cil.icarl.mixed_batch`).  ``end_task``:
weight aligning (tasks >= 1), then reduce + herd the memory on the
concatenated features and recompute the NME means.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from clj.data.augment import Augment
from clj.methods import common, sections
from clj.methods.cil import common as cc
from clj.methods.cil.section import CIL
from clj.methods.common import ModelState, OptimSpec, TaskInfo
from clj.models import growing
from clj.models.growing import GrowingNet, split_param_counts
from clj.replay import exemplars as ex


@dataclasses.dataclass(frozen=True)
class Static:
    """Static hyperparameters (hashable).

    Attributes:
      kind: ``"memo"`` or ``"dynamic_er"`` (DER of Yan et al.).
      network: the growing network (modules, D, T, heads' widths, growth).
      num_classes: C.
      augment: the scenario transform.
      memory_size, fixed_memory, memory_per_class: exemplar budget.
      predict: ``"cnn"`` or ``"nme"``.
      train_base: keep training the generalized part after task 0 (MEMO).
      alpha_aux: weight of the auxiliary loss.
      init_optim, update_optim: task-0 and later-task optimizers.
      batch_size, replay_batch_size, max_replay_batch: replay share.
      feature_batch_size: chunk of feature extraction at task end.
      batching, class_sizes, task_classes, init_epochs, epochs: as
        :class:`clj.methods.cil.icarl.Static`.
      st: the current task's statics.
    """

    kind: str = "memo"
    network: GrowingNet = GrowingNet()
    num_classes: int = 10
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
    st: cc.TaskStatics = cc.TaskStatics()

    @property
    def live(self) -> int:
        """Live specialized blocks (>= 1)."""
        return max(self.st.task + 1, 1)

    @property
    def gen_train(self) -> bool:
        """Whether the generalized part trains (and uses train-mode BN) now."""
        return self.network.gen is not None and (self.st.task <= 0 or self.train_base)


@struct.dataclass
class State:
    """Network, memory, key.

    Attributes:
      net: params and batch_stats of :class:`~clj.models.growing.GrowingNet`;
        optimizer state and counters.
      mem: exemplar memory (class means over T*D features).
      key: PRNG key for the per-task head initialisation.
      swept: the sweepable hyperparameters (:data:`SWEEPABLE`) as float32 []
        arrays, so a grid of them is a vmapped axis.
      static: the static (hashable) hyperparameters of the run.
    """

    net: ModelState
    mem: ex.ExemplarMemory
    key: jax.Array
    swept: dict
    static: Static = struct.field(pytree_node=False)


SWEEPABLE = ("optim.lr", "cil.update_lr")
"""Config fields carried as arrays in ``State.swept`` (no shape depends on
them): the learning rates of task 0 and of later tasks (the phase
optimizers, :func:`clj.methods.cil.icarl_phases.phase_lr`)."""


def init(rng: jax.Array, config, scenario, kind: str = "memo") -> State:
    """A fresh State with all T blocks allocated (block 0 initialised, the
    others copies of it until they become live).

    Raises:
      clj.config.ConfigError: bad ``config.cil`` or model values.
    """
    cil = sections.block(config, CIL)
    network = growing.build(kind, config.model, scenario.num_tasks, scenario.num_classes,
                            max(scenario.classes_per_task) + 1, str(cil.growth))
    from clj.methods.cil.icarl import resolve_memory_size

    counts = split_param_counts(kind, config.model, scenario.image_shape)
    mem_size = resolve_memory_size(config, scenario, kind, cil, counts)
    init_o, upd_o = cc.optim_specs(config, cil)
    init_ep, ep = cc.phase_epochs(config)
    static = Static(kind=kind, network=network, num_classes=scenario.num_classes,
                    augment=common.augment_from_config(config.augment, scenario), memory_size=mem_size,
                    fixed_memory=bool(cil.fixed_memory), memory_per_class=int(cil.memory_per_class),
                    predict=str(cil.predict), train_base=bool(cil.train_base), alpha_aux=float(cil.alpha_aux),
                    init_optim=init_o, update_optim=upd_o, batch_size=int(config.train.batch_size),
                    replay_batch_size=int(cil.replay_batch_size), max_replay_batch=int(cil.max_replay_batch),
                    feature_batch_size=int(cil.feature_batch_size), batching=str(cil.batching),
                    class_sizes=cc.class_sizes(scenario),
                    task_classes=tuple(tuple(int(c) for c in t.classes) for t in scenario.tasks),
                    init_epochs=init_ep, epochs=ep)
    k_gen, k_spec, k_state = jax.random.split(rng, 3)
    params, stats = network.init(k_gen, k_spec, scenario.image_shape)
    tx = init_o.make()
    z = jnp.zeros((), jnp.int32)
    model = ModelState(params=params, batch_stats=stats, opt_state=tx.init(params), step=z, task_step=z,
                       task_steps=z, steps_per_epoch=jnp.ones((), jnp.int32), model=network.spec, optim=init_o)
    cap = ex.memory_capacity(scenario.num_classes, mem_size, static.fixed_memory, static.memory_per_class)
    mem = ex.init_memory(cap, scenario.image_shape, scenario.num_classes, network.T * network.D)
    swept = {"optim.lr": jnp.float32(config.optim.lr), "cil.update_lr": jnp.float32(cil.update_lr)}
    return State(net=model, mem=mem, key=k_state, swept=swept, static=static)


def begin_task(state: State, task: TaskInfo) -> State:
    """Grows the network for ``task`` (module doc) and resets the optimizer."""
    from clj.methods.cil.icarl import begin_phase, task_statics

    st = task_statics(state.static, task)
    static = dataclasses.replace(state.static, st=st)
    p, bs = static.network.grow(state.net.params, state.net.batch_stats, jax.random.fold_in(state.key, st.task),
                                st.task, st.known)
    net = begin_phase(state.net.replace(params=p, batch_stats=bs), static, task)
    return state.replace(net=net, static=static)


def update_mask(static: Static, params):
    """The update mask of this task (:meth:`GrowingNet.update_mask`): the
    seen classes' head columns and the task's aux columns."""
    st = static.st
    return static.network.update_mask(params, live=static.live, gen_train=static.gen_train, classes=st.total,
                                      aux_classes=st.total - st.known + 1)


def aux_labels(y: jax.Array, known: int) -> jax.Array:
    """Aux-head labels: 0 for old classes (y < known), y - known + 1 for new."""
    return jnp.where(y < known, 0, y - known + 1)


def train_step(state: State, batch: dict, rng: jax.Array):
    """One step: CE(seen classes) + alpha_aux * CE(aux head) (module doc).

    Args:
      batch: ``x`` float32 [B, H, W, C] augmented, ``y`` int32 [B].

    Returns:
      (State, {"loss", "ce", "aux", "acc"} float32 scalars).
    """
    from clj.methods.cil.icarl import mixed_batch, phase_lr

    static, st, net = state.static, state.static.st, state.net
    gnet, live = static.network, static.live
    x, y, w = mixed_batch(static, state.mem, state.key, net.task_step, batch, rng)
    nb = st.new_per_step if static.batching == "pycil" else batch["y"].shape[0]
    use_aux = st.task >= 1 and static.alpha_aux > 0

    def loss_from(params, new_block):
        feats, bs, f_new = gnet.features(params, net.batch_stats, x, live=live, gen_train=static.gen_train,
                                         train=True, new_block=new_block)
        logits = gnet.logits(params, feats)
        ce = common.cross_entropy(cc.mask_logits(logits, st.total), y, w)
        aux = jnp.zeros((), jnp.float32)
        if use_aux:
            al = gnet.aux_logits(params, f_new)
            aux = common.cross_entropy(cc.mask_logits(al, st.total - st.known + 1), aux_labels(y, st.known), w)
        return ce + static.alpha_aux * aux, (bs, logits, ce, aux)

    if gnet.growth == "loop":  # differentiate the trainable subtree only
        tp = gnet.trainable(net.params, live=live, gen_train=static.gen_train)
        (loss, (bs, logits, ce, aux)), g_tp = jax.value_and_grad(
            lambda tp: loss_from(*gnet.merge_trainable(net.params, tp)), has_aux=True)(tp)
        grads = gnet.full_grads(net.params, g_tp, live=live)
    else:
        (loss, (bs, logits, ce, aux)), grads = jax.value_and_grad(
            lambda p: loss_from(p, None), has_aux=True)(net.params)
    new_net = common.apply_gradients(net, grads, bs, update_mask(static, net.params),
                                     base_lr=phase_lr(state.swept, st.task))
    acc = jnp.mean((jnp.argmax(cc.mask_logits(logits[:nb], st.total), -1) == y[:nb]).astype(jnp.float32))
    return state.replace(net=new_net), {"loss": loss, "ce": ce, "aux": aux, "acc": acc}


def features(state: State, x: jax.Array) -> jax.Array:
    """Concatenated features float32 [B, T*D] (eval mode; zeros for blocks
    not live yet) of normalised inputs."""
    static = state.static
    return static.network.features(state.net.params, state.net.batch_stats, x, live=static.live,
                                   gen_train=static.gen_train, train=False)[0]


def end_task(state: State, task_data: dict) -> State:
    """Weight aligning (tasks >= 1), then the exemplar memory (module doc)."""
    static, st = state.static, state.static.st
    if st.known > 0:
        p = dict(state.net.params)
        p["head"] = {**p["head"], "kernel": cc.weight_align(p["head"]["kernel"], st.known, st.total)}
        state = state.replace(net=state.net.replace(params=p))
    classes = tuple(int(c) for c in task_data["info"].classes)
    mem = ex.update_memory(state.mem, lambda xf: features(state, xf),
                           lambda xb: static.augment(xb, None, train=False), task_data["x"], task_data["y"],
                           classes, st.quota, static.num_classes, static.feature_batch_size)
    return state.replace(mem=mem)


def predict(state: State, x: jax.Array, task_id: jax.Array | None = None) -> jax.Array:
    """float32 [B, C]: head logits (``cnn``) or NME scores (``nme``)."""
    del task_id
    f = features(state, x)
    if state.static.predict == "nme":
        return ex.nme_scores(f, state.mem.class_means)
    return state.static.network.logits(state.net.params, f)


def model_param_count(state: State) -> int:
    """Parameters of the live network, FC and aux heads excluded: the
    generalized part plus the live specialized blocks."""
    return GrowingNet.param_count(state.net.params, live=state.static.live)


def memory_bytes(state: State) -> dict:
    """Stored exemplars (uint8 bytes) + live model parameters x 4 bytes
    (FC / aux heads / BN statistics excluded); ``total`` is their sum."""
    buf = ex.exemplar_bytes(state.mem)
    model = 4 * model_param_count(state)
    return {"buffer": buf, "model": model, "total": buf + model}


def result_extras(state: State) -> dict:
    static = state.static
    return {"exemplars": int(state.mem.count()), "memory_size": static.memory_size,
            "exemplars_per_class": static.st.quota, "live_blocks": static.live, "predict": static.predict,
            "train_base": static.train_base, "model_params_no_fc": model_param_count(state),
            "head_bytes": common.param_bytes(state.net.params["head"]) + common.param_bytes(state.net.params["aux"])}


def make_spec(kind: str):
    """The :class:`~clj.methods.api.MethodSpec` of ``memo`` or DER (Yan et al.)
    (host task info: a task boundary grows the network)."""
    import functools

    from clj.methods.api import Capabilities, MethodSpec
    from clj.methods.cil.icarl import task_steps as icarl_task_steps  # the same batch plan (static fields shared)

    return MethodSpec(init=functools.partial(init, kind=kind), begin_task=begin_task,
                      train_step=train_step, end_task=end_task, predict=predict,
                      capabilities=Capabilities(static_task_info=True, conv=True),
                      memory_bytes=memory_bytes, result_extras=result_extras, task_steps=icarl_task_steps,
                      sweepable=SWEEPABLE)
