"""iCaRL, WA and Replay with a herding exemplar memory, as PyCIL runs them.

Sources: Rebuffi et al., "iCaRL: Incremental Classifier and Representation
Learning", CVPR 2017 (herding Alg. 4, reduction Alg. 5, NME Alg. 1,
distillation Sec. 2.4); Zhao et al., "Maintaining Discrimination and
Fairness in Class Incremental Learning", CVPR 2020 (WA: distillation plus
weight aligning, Eq. 6); PyCIL (Zhou et al. 2021) ``models/icarl.py``,
``wa.py``, ``replay.py`` for the protocol (``docs/memo.md``, "PyCIL and MEMO as
their code runs them").

One single-backbone network with a head over all classes of the scenario
(logits of classes not seen yet are masked out of every loss; their head
columns are not updated, so a new class starts from its initial weights, as
PyCIL's freshly initialised ``update_fc`` rows).  Per task t:

1. ``begin_task``: the optimizer is reset; task 0 uses ``config.optim``,
   later tasks the ``cil.update_*`` settings (PyCIL's init / update phases).
2. ``train_step``: a batch of new-task data and exemplars of the memory
   (augmented), one forward pass (one BatchNorm batch), ``CE`` over the seen
   classes; iCaRL and WA add :func:`~clj.methods.cil.common.kd_loss`
   between the current logits of the old classes and a frozen copy of the
   network from the end of task t-1, temperature ``kd_T``: iCaRL
   ``CE + KD``; WA ``CE + 2 KD`` (``cil.wa_loss="kd2"``, the PyCIL / CIL-survey
   code of the MEMO paper's tables) or ``(1 - l) CE + l KD``, l = known /
   total (``"lambda"``, PyCIL since February 2023).
   Batch composition (``cil.batching``, :func:`~clj.methods.cil.common.batch_plan`):
   ``"pycil"``: B examples per step, ``new_per_step`` of them the first rows
   of the loop's batch and the rest consecutive slots of a per-epoch
   permutation of the stored exemplars, ``ceil((n_new + n_mem) / B)`` steps
   per epoch (the loop takes the count from :func:`task_steps`);
   ``"concat"``: the loop's B new examples plus R exemplars drawn with
   replacement, R in the proportion of the *stored* exemplars to the new
   data, ``ceil(n_new / B)`` steps per epoch.
3. ``end_task``: WA aligns the new classes' head weights (tasks >= 1); the
   memory is reduced and the new classes herded
   (:func:`clj.replay.exemplars.update_memory`); NME means recomputed; the
   old network snapshotted.

The budget, the per-task statics, the batch plan and the phase optimizer
are :mod:`clj.methods.cil.icarl_phases` (shared with AKR, MEMO and DER (Yan)).

``predict`` returns the head's logits (``cil.predict="cnn"``) or NME scores
(``"nme"``).  Differences from PyCIL in ``"pycil"`` mode: every batch has the
same share of new data (PyCIL's shuffled union varies it around that mean)
and B examples (PyCIL's last batch of an epoch is smaller).
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
from clj.methods.cil.icarl_phases import (backbone_param_count, begin_phase, enter_task, phase_lr,  # noqa: F401
                                      resolve_memory_size, task_statics, task_steps)
from clj.replay import exemplars as ex

OBJECTIVES = ("icarl", "wa", "replay")


@dataclasses.dataclass(frozen=True)
class Static:
    """Static hyperparameters (hashable).

    Attributes:
      objective: one of ``OBJECTIVES``.
      augment: the scenario's transform (train: augmented; test: normalise).
      memory_size, fixed_memory, memory_per_class: the exemplar budget.
      kd_T, kd_weight: distillation temperature and weight.
      predict: ``"cnn"`` or ``"nme"``.
      init_optim, update_optim: task-0 and later-task optimizers.
      batch_size: the loop's batch size B (for the replay share).
      feature_batch_size: chunk size of feature extraction in ``end_task``.
      num_classes: C.
      replay_batch_size, max_replay_batch: see :func:`clj.methods.cil.common.replay_batch`.
      batching: ``"pycil"`` or ``"concat"`` (module doc).
      wa_loss: ``"kd2"`` or ``"lambda"`` (module doc).
      class_sizes: training images per class (static).
      task_classes: the classes of every task (static).
      init_epochs, epochs: epochs of task 0 and of later tasks.
      phase: the current task's :class:`~clj.methods.cil.common.Phase` (iCaRL,
        WA, Replay, AKR, PODNet and LUCIR keep the task's counts in
        ``State.tc``, so every task >= 1 runs one compiled step).
      st: the current task's :class:`~clj.methods.cil.common.TaskStatics`, for
        the methods built on this class that still read them as statics
        (BiC, Coil, FOSTER: compiled once per task); the others use the
        task's statics only in ``end_task`` (compiled per task).
    """

    objective: str = "icarl"
    augment: Augment = Augment()
    memory_size: int = 2000
    fixed_memory: bool = False
    memory_per_class: int = 20
    kd_T: float = 2.0
    kd_weight: float = 1.0
    predict: str = "cnn"
    init_optim: OptimSpec = OptimSpec()
    update_optim: OptimSpec = OptimSpec()
    batch_size: int = 32
    feature_batch_size: int = 256
    num_classes: int = 10
    replay_batch_size: int = -1
    max_replay_batch: int = 512
    batching: str = "concat"
    wa_loss: str = "kd2"
    class_sizes: tuple = ()
    task_classes: tuple = ()
    init_epochs: float = 1.0
    epochs: float = 1.0
    phase: cc.Phase = cc.Phase()
    st: cc.TaskStatics = cc.TaskStatics()


@struct.dataclass
class State:
    """Network, frozen old network, exemplar memory.

    Attributes:
      net: the network being trained.
      old_params, old_batch_stats: the network at the end of the previous
        task (teacher of the distillation).
      mem: the exemplar memory (:class:`clj.replay.exemplars.ExemplarMemory`).
      key: PRNG key of the per-epoch memory permutations (``"pycil"``).
      swept: the sweepable hyperparameters (:data:`SWEEPABLE`) as float32 []
        arrays (:func:`sweep_values`), so a grid of them is a vmapped axis.
      tc: the current task's counts (:class:`~clj.methods.cil.common.TaskCounts`).
      static: the static (hashable) hyperparameters of the run (``kd_T`` and ``kd_weight`` there are the
        config's values, kept for the record; the step reads ``swept``).
    """

    net: ModelState
    old_params: common.PyTree
    old_batch_stats: common.PyTree
    mem: ex.ExemplarMemory
    key: jax.Array
    swept: dict
    tc: cc.TaskCounts
    static: Static = struct.field(pytree_node=False)


SWEEPABLE = ("optim.lr", "cil.update_lr", "cil.kd_T", "cil.kd_weight")
"""Config fields carried as arrays in ``State.swept`` (no shape depends on
them): the learning rates of task 0 (``optim.lr``) and of later tasks
(``cil.update_lr``), the distillation temperature and weight (``kd_weight``
< 0 = the method's default, resolved in the step by :func:`kd_weight`)."""


def sweep_values(config, cil) -> dict:
    """The :data:`SWEEPABLE` fields of the config as float32 [] arrays
    (``cil``: the checked ``config.cil`` block)."""
    return {"optim.lr": jnp.float32(config.optim.lr), "cil.update_lr": jnp.float32(cil.update_lr),
            "cil.kd_T": jnp.float32(cil.kd_T), "cil.kd_weight": jnp.float32(cil.kd_weight)}


def init(rng: jax.Array, config, scenario, objective: str = "icarl") -> State:
    """A fresh State: network from ``config.model``, empty exemplar memory of
    the ``config.cil`` budget (``"single"`` kind under ``budget="fair"``).

    Raises:
      clj.config.ConfigError: bad ``config.cil`` values or an unknown objective.
    """
    from clj.errors import ConfigError

    if objective not in OBJECTIVES:
        raise ConfigError(f"objective={objective!r} is unknown; valid: {', '.join(OBJECTIVES)}.")
    cil = sections.block(config, CIL)
    mem_size = resolve_memory_size(config, scenario, "single", cil)
    init_o, upd_o = cc.optim_specs(config, cil)
    kd_w = float(cil.kd_weight) if float(cil.kd_weight) >= 0 else (2.0 if objective == "wa" else 1.0)
    init_ep, ep = cc.phase_epochs(config)
    static = Static(objective=objective, augment=common.augment_from_config(config.augment, scenario),
                    memory_size=mem_size, fixed_memory=bool(cil.fixed_memory),
                    memory_per_class=int(cil.memory_per_class), kd_T=float(cil.kd_T), kd_weight=kd_w,
                    predict=str(cil.predict), init_optim=init_o, update_optim=upd_o,
                    batch_size=int(config.train.batch_size), feature_batch_size=int(cil.feature_batch_size),
                    num_classes=scenario.num_classes, replay_batch_size=int(cil.replay_batch_size),
                    max_replay_batch=int(cil.max_replay_batch), batching=str(cil.batching),
                    wa_loss=str(cil.wa_loss), class_sizes=cc.class_sizes(scenario),
                    task_classes=tuple(tuple(int(c) for c in t.classes) for t in scenario.tasks),
                    init_epochs=init_ep, epochs=ep)
    model = common.model_from_config(config.model, scenario.num_classes)
    k_net, k_state = jax.random.split(rng)
    net = common.init_model_state(k_net, model, init_o, scenario.image_shape)
    D = int(model.feature_dim)
    cap = ex.memory_capacity(scenario.num_classes, mem_size, static.fixed_memory, static.memory_per_class)
    mem = ex.init_memory(cap, scenario.image_shape, scenario.num_classes, D)
    return State(net=net, old_params=net.params, old_batch_stats=net.batch_stats, mem=mem, key=k_state,
                 swept=sweep_values(config, cil), tc=cc.TaskCounts.of(), static=static)


def begin_task(state: State, task: TaskInfo) -> State:
    """Task boundary: phase optimizer, reset of its state, the task's
    counts (``State.tc``) and phase."""
    st, static, counts = enter_task(state.static, task)
    return state.replace(net=begin_phase(state.net, static, task, st), static=static, tc=counts)


def head_update_mask(params, total: int, feature_rows: int | None = None):
    """The update mask (bool, same structure as params, leaves broadcastable
    to theirs) of :func:`clj.methods.common.apply_gradients`: True everywhere
    except the head columns of classes >= ``total`` (and, with
    ``feature_rows``, kernel rows >= it), which stay at their initial values."""
    mask = dict(jax.tree_util.tree_map(lambda p: jnp.ones((), bool), params))
    k = params["head"]["kernel"]
    col = jnp.arange(k.shape[1]) < total
    km = col[None, :]
    if feature_rows is not None:
        km = km & (jnp.arange(k.shape[0]) < feature_rows)[:, None]
    mask["head"] = {"kernel": km, "bias": col}
    return mask


def draw_exemplars(static, mem: ex.ExemplarMemory, rng: jax.Array, key: jax.Array | None = None,
                   task_step: jax.Array | None = None, counts=None, phase: cc.Phase | None = None,
                   spread: bool = False):
    """The step's ``phase.rows`` exemplars
    (:func:`clj.methods.cil.common.draw_replay_rows`: uniform with
    replacement, or with ``key`` under ``"pycil"`` batching the epoch's
    permutation, one candidate per batch row; ``spread``: each stored
    exemplar once per epoch, spread evenly), augmented.  ``counts`` /
    ``phase``: the task's (default: those of ``static.st``).

    Returns:
      (x float32 [R, H, W, C], y int32 [R], valid bool [R]).
    """
    counts, phase = _counts_phase(static, counts, phase)
    k_idx, k_aug = jax.random.split(rng)
    idx, valid = cc.draw_replay_rows(mem, counts, phase, static.batching, key, task_step, k_idx, spread)
    return static.augment(mem.x[idx], k_aug, train=True), mem.y[idx], valid


def _counts_phase(static, counts, phase):
    """``(counts, phase)``, from ``static.st`` where not given (the methods
    that keep the task's counts as statics)."""
    if counts is None:
        counts = static.st
    if phase is None:
        phase = cc.phase_of(static.st, static.batching, static.batch_size)
    return counts, phase


def old_logits(state, x: jax.Array) -> jax.Array:
    """Logits float32 [N, C] of the frozen previous-task network (eval-mode
    BN, stop-gradient) on x: the distillation targets (iCaRL Sec. 2.4)."""
    out, _ = common.forward(state.net, state.old_params, state.old_batch_stats, x, train=False)
    return jax.lax.stop_gradient(out)


def mixed_batch(static, mem: ex.ExemplarMemory, key: jax.Array | None, task_step: jax.Array, batch: dict,
                rng: jax.Array, counts=None, phase: cc.Phase | None = None, spread: bool = False):
    """The step's batch (module doc, item 2): ``(x, y, w)`` float32 [N, ...],
    int32 [N], bool [N] (w: the row counts in the losses), N = B in
    ``"pycil"`` mode (the first ``new_per_step`` rows of ``batch``, then
    exemplars), B + R in ``"concat"`` mode.  ``counts`` (a
    :class:`~clj.methods.cil.common.TaskCounts` or host
    :class:`~clj.methods.cil.common.TaskStatics`) and ``phase``: the task's
    (default: those of ``static.st``); ``spread``: see :func:`draw_exemplars`."""
    counts, phase = _counts_phase(static, counts, phase)
    x, y = batch["x"], batch["y"]
    w = jnp.ones(y.shape, bool)
    if phase.rows <= 0:
        return x, y, w
    rx, ry, valid = draw_exemplars(static, mem, rng, key, task_step, counts, phase, spread)
    if static.batching == "pycil":
        new = jnp.arange(y.shape[0]) < counts.new_per_step
        return jnp.where(new.reshape((-1,) + (1,) * (x.ndim - 1)), x, rx), jnp.where(new, y, ry), new | valid
    return jnp.concatenate([x, rx]), jnp.concatenate([y, ry]), jnp.concatenate([w, valid])


def new_rows(static, counts, batch: dict) -> jax.Array:
    """bool [B]: the rows of the loop's batch that are the task's new data
    (the first ``new_per_step`` under ``"pycil"`` batching, all otherwise)."""
    rows = jnp.arange(batch["y"].shape[0])
    return rows < counts.new_per_step if static.batching == "pycil" else rows >= 0


def kd_weight(static, swept: dict) -> jax.Array:
    """The KD weight float32 [] of ``swept["cil.kd_weight"]``: its value,
    or the method's PyCIL default when it is < 0 (WA 2, otherwise 1)."""
    w = swept["cil.kd_weight"]
    return jnp.where(w < 0, jnp.float32(2.0 if static.objective == "wa" else 1.0), w)


def loss_weights(static, swept: dict | None = None, counts=None, phase: cc.Phase | None = None) -> tuple:
    """(CE weight, KD weight) of the objective (module doc): Replay (1, 0);
    iCaRL (1, kd_weight); WA ``kd2`` (1, kd_weight = 2); WA ``lambda``
    (1 - l, l), l = known / total.  With ``swept`` (the State's) the
    ``kd_weight`` is :func:`kd_weight` (float32 []), else ``static.kd_weight``.
    ``counts`` / ``phase``: the task's (default: those of ``static.st``)."""
    counts, phase = _counts_phase(static, counts, phase)
    if static.objective == "replay" or phase.first:
        return 1.0, 0.0
    if static.objective == "wa" and static.wa_loss == "lambda":
        lam = jnp.asarray(counts.known, jnp.float32) / jnp.maximum(jnp.asarray(counts.total, jnp.float32), 1.0)
        return 1.0 - lam, lam
    return 1.0, (static.kd_weight if swept is None else kd_weight(static, swept))


def train_step(state: State, batch: dict, rng: jax.Array):
    """One step (module doc, item 2).

    Args:
      batch: ``x`` float32 [B, H, W, C] augmented, ``y`` int32 [B] (the loop's
        batch of the current task).

    Returns:
      (State, {"loss", "ce", "kd", "acc"} float32 scalars).
    """
    static, tc, phase, net = state.static, state.tc, state.static.phase, state.net
    x, y, w = mixed_batch(static, state.mem, state.key, net.task_step, batch, rng, tc, phase)
    use_kd = static.objective in ("icarl", "wa") and not phase.first
    w_ce, w_kd = loss_weights(static, state.swept, tc, phase)
    targets = old_logits(state, x) if use_kd else None

    def loss_fn(params):
        logits, bs = common.forward(net, params, net.batch_stats, x, train=True)
        ce = common.cross_entropy(cc.mask_logits(logits, tc.total), y, w)
        kd = (cc.kd_loss(logits, targets, tc.known, state.swept["cil.kd_T"], w) if use_kd
              else jnp.zeros((), jnp.float32))
        return w_ce * ce + w_kd * kd, (bs, logits, ce, kd)

    (loss, (bs, logits, ce, kd)), grads = jax.value_and_grad(loss_fn, has_aux=True)(net.params)
    new_net = common.apply_gradients(net, grads, bs, head_update_mask(net.params, tc.total),
                                     base_lr=phase_lr(state.swept, 0 if phase.first else 1))
    acc = new_data_accuracy(logits, y, tc.total, new_rows(static, tc, batch))
    return state.replace(net=new_net), {"loss": loss, "ce": ce, "kd": kd, "acc": acc}


def new_data_accuracy(logits: jax.Array, y: jax.Array, total, rows: jax.Array) -> jax.Array:
    """float32 []: accuracy over the seen classes (``< total``) of the rows
    ``rows`` (bool [B]) of the first B rows of ``logits`` [N, C] / ``y`` [N]."""
    B = rows.shape[0]
    hit = (jnp.argmax(cc.mask_logits(logits[:B], total), -1) == y[:B]) & rows
    return jnp.sum(hit.astype(jnp.float32)) / jnp.maximum(jnp.sum(rows.astype(jnp.float32)), 1.0)


def features(state: State, x: jax.Array) -> jax.Array:
    """Backbone features float32 [B, D] of normalised inputs (eval mode)."""
    (_, f), _ = common.forward(state.net, state.net.params, state.net.batch_stats, x, train=False,
                               return_features=True)
    return f


def end_task(state: State, task_data: dict) -> State:
    """Task end (module doc, item 3).  ``task_data``: ``x`` uint8 [n, ...],
    ``y`` int32 [n], ``info`` TaskInfo."""
    static = state.static
    st = task_statics(static, task_data["info"])  # host ints (end_task is compiled per task)
    net = state.net
    if static.objective == "wa" and st.known > 0:
        p = dict(net.params)
        p["head"] = {**p["head"], "kernel": cc.weight_align(p["head"]["kernel"], st.known, st.total)}
        net = net.replace(params=p)
    state = state.replace(net=net)
    classes = tuple(int(c) for c in task_data["info"].classes)
    mem = ex.update_memory(state.mem, lambda xf: features(state, xf),
                           lambda xb: static.augment(xb, None, train=False), task_data["x"], task_data["y"],
                           classes, st.quota, static.num_classes, static.feature_batch_size)
    return state.replace(mem=mem, old_params=net.params, old_batch_stats=net.batch_stats)


def predict(state: State, x: jax.Array, task_id: jax.Array | None = None) -> jax.Array:
    """float32 [B, C]: head logits (``cnn``) or NME scores (``nme``)."""
    del task_id
    if state.static.predict == "nme":
        return ex.nme_scores(features(state, x), state.mem.class_means)
    logits, _ = common.forward(state.net, state.net.params, state.net.batch_stats, x, train=False)
    return logits


def memory_bytes(state: State) -> dict:
    """Byte-counted memory of the protocol: stored exemplars (uint8) and the
    backbone's parameters at 4 bytes each (FC excluded, BN statistics
    excluded); ``total`` is their sum."""
    from clj.models.utils import count_params

    buf = ex.exemplar_bytes(state.mem)
    model = 4 * count_params({k: v for k, v in state.net.params.items() if k != "head"})
    return {"buffer": buf, "model": model, "total": buf + model}


def result_extras(state: State) -> dict:
    static = state.static
    return {"exemplars": int(state.mem.count()), "memory_size": static.memory_size,
            "exemplars_per_class": int(state.tc.quota) if hasattr(state, "tc") else static.st.quota,
            "predict": static.predict,
            "head_bytes": common.param_bytes(state.net.params["head"])}


def make_spec(objective: str):
    """The :class:`~clj.methods.api.MethodSpec` of ``icarl``, ``wa`` or ``replay``
    (host task info: the known/total class counts are static per task)."""
    import functools

    from clj.methods.api import Capabilities, MethodSpec

    sweepable = SWEEPABLE if objective != "replay" else SWEEPABLE[:2]  # Replay has no distillation
    return MethodSpec(init=functools.partial(init, objective=objective), begin_task=begin_task,
                      train_step=train_step, end_task=end_task, predict=predict,
                      capabilities=Capabilities(static_task_info=True),
                      memory_bytes=memory_bytes, result_extras=result_extras, task_steps=task_steps,
                      sweepable=sweepable)


SPEC = make_spec("icarl")
