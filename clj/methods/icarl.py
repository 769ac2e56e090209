"""iCaRL, WA and Replay with a herding exemplar memory, as PyCIL runs them.

Sources: Rebuffi et al., "iCaRL: Incremental Classifier and Representation
Learning", CVPR 2017 (herding Alg. 4, reduction Alg. 5, NME Alg. 1,
distillation Sec. 2.4); Zhao et al., "Maintaining Discrimination and
Fairness in Class Incremental Learning", CVPR 2020 (WA: distillation plus
weight aligning, Eq. 6); PyCIL (Zhou et al. 2021) ``models/icarl.py``,
``wa.py``, ``replay.py`` for the protocol (``shared/specs/memo.md``).

One single-backbone network with a head over all classes of the scenario
(logits of classes not seen yet are masked out of every loss; their head
columns are not updated, so a new class starts from its initial weights, as
PyCIL's freshly initialised ``update_fc`` rows).  Per task t:

1. ``begin_task``: the optimizer is reset; task 0 uses ``config.optim``,
   later tasks the ``cil.update_*`` settings (PyCIL's init / update phases).
2. ``train_step``: the loop's batch of new-task data plus ``R`` exemplars
   drawn from the memory (augmented), one forward pass (one BatchNorm batch),
   ``CE`` over the seen classes; iCaRL and WA add ``kd_weight *``
   :func:`~clj.methods.cil_common.kd_loss` between the current logits of the
   old classes and a frozen copy of the network from the end of task t-1,
   temperature ``kd_T`` (iCaRL weight 1, WA 2, as PyCIL).
3. ``end_task``: WA aligns the new classes' head weights (tasks >= 1); the
   memory is reduced and the new classes herded
   (:func:`clj.replay.exemplars.update_memory`); NME means recomputed; the
   old network snapshotted.

``predict`` returns the head's logits (``cil.predict="cnn"``) or NME scores
(``"nme"``).  Differences from PyCIL: new data and exemplars come as a batch
of B new examples plus R exemplars (R static per task, in the union's
proportion), so a task has ``ceil(n_new / B)`` steps per epoch instead of
``ceil((n_new + n_mem) / B)``; exemplars are drawn with replacement.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct

from clj.data.augment import Augment
from clj.methods import cil_common as cc
from clj.methods import common
from clj.methods.common import ModelState, OptimSpec, TaskInfo
from clj.replay import exemplars as ex

OBJECTIVES = ("icarl", "wa", "replay")


@dataclasses.dataclass(frozen=True)
class Hparams:
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
      replay_batch_size, max_replay_batch: see :func:`cil_common.replay_batch`.
      st: the current task's :class:`~clj.methods.cil_common.TaskStatics`.
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
    st: cc.TaskStatics = cc.TaskStatics()


@struct.dataclass
class State:
    """Network, frozen old network, exemplar memory.

    Attributes:
      net: the network being trained.
      old_params, old_batch_stats: the network at the end of the previous
        task (teacher of the distillation).
      mem: the exemplar memory (:class:`clj.replay.exemplars.ExemplarMemory`).
      hp: static hyperparameters.
    """

    net: ModelState
    old_params: common.PyTree
    old_batch_stats: common.PyTree
    mem: ex.ExemplarMemory
    hp: Hparams = struct.field(pytree_node=False)


def backbone_param_count(config, scenario) -> int:
    """Parameters of the backbone (FC excluded) of ``config.model``."""
    from clj.models.utils import count_params

    model = common.model_from_config(config.model, scenario.num_classes)
    shapes = jax.eval_shape(lambda k: model.init(k, jnp.zeros((1, *scenario.image_shape)), train=False),
                            jax.random.PRNGKey(0))
    return count_params({k: v for k, v in shapes["params"].items() if k != "head"})


def resolve_memory_size(config, scenario, kind: str, cil, counts: dict | None = None) -> int:
    """``cil.memory_size`` or, with ``cil.budget="fair"``, the fair count of
    :func:`clj.replay.exemplars.fair_exemplars` for ``kind``."""
    if cil.budget == "fixed":
        return int(cil.memory_size)
    if counts is None:
        counts = {"total": backbone_param_count(config, scenario)}
    img = int(jnp.prod(jnp.asarray(scenario.image_shape)))
    return ex.fair_exemplars(kind, counts["total"], scenario.num_tasks, img, int(cil.base_exemplars),
                             counts.get("shallow", 0), counts.get("deep", 0))


def init(rng: jax.Array, config, scenario, objective: str = "icarl") -> State:
    """A fresh State: network from ``config.model``, empty exemplar memory of
    the ``config.cil`` budget (``"single"`` kind under ``budget="fair"``).

    Raises:
      clj.config.ConfigError: bad ``config.cil`` values or an unknown objective.
    """
    from clj.config import ConfigError

    if objective not in OBJECTIVES:
        raise ConfigError(f"objective={objective!r} is unknown; valid: {', '.join(OBJECTIVES)}.")
    cil = cc.get_cil(config)
    mem_size = resolve_memory_size(config, scenario, "single", cil)
    init_o, upd_o = cc.optim_specs(config, cil)
    kd_w = float(cil.kd_weight) if float(cil.kd_weight) >= 0 else (2.0 if objective == "wa" else 1.0)
    hp = Hparams(objective=objective, augment=common.augment_from_config(config.augment, scenario),
                 memory_size=mem_size, fixed_memory=bool(cil.fixed_memory),
                 memory_per_class=int(cil.memory_per_class), kd_T=float(cil.kd_T), kd_weight=kd_w,
                 predict=str(cil.predict), init_optim=init_o, update_optim=upd_o,
                 batch_size=int(config.train.batch_size), feature_batch_size=int(cil.feature_batch_size),
                 num_classes=scenario.num_classes, replay_batch_size=int(cil.replay_batch_size),
                 max_replay_batch=int(cil.max_replay_batch))
    model = common.model_from_config(config.model, scenario.num_classes)
    net = common.init_model_state(rng, model, init_o, scenario.image_shape)
    D = int(model.feature_dim)
    cap = ex.memory_capacity(scenario.num_classes, mem_size, hp.fixed_memory, hp.memory_per_class)
    mem = ex.init_memory(cap, scenario.image_shape, scenario.num_classes, D)
    return State(net=net, old_params=net.params, old_batch_stats=net.batch_stats, mem=mem, hp=hp)


def task_statics(hp, task: TaskInfo) -> cc.TaskStatics:
    """Static quantities of ``task`` (known/total classes, replay R, quota m)."""
    known, total = int(min(task.classes)), int(max(task.classes)) + 1
    n_mem = 0
    if known > 0:
        n_mem = ex.per_class_quota(known, hp.memory_size, hp.fixed_memory, hp.memory_per_class) * known
    rb = cc.replay_batch(hp.replay_batch_size, hp.max_replay_batch, hp.batch_size,
                         task.steps_per_epoch * hp.batch_size, n_mem)
    quota = ex.per_class_quota(total, hp.memory_size, hp.fixed_memory, hp.memory_per_class)
    return cc.TaskStatics(task=task.task_id, known=known, total=total, replay=rb, quota=quota)


def begin_task(state: State, task: TaskInfo) -> State:
    """Task boundary: phase optimizer, reset of its state, task statics."""
    hp = state.hp
    hp = dataclasses.replace(hp, st=task_statics(hp, task))
    net = state.net.replace(optim=hp.init_optim if task.task_id == 0 else hp.update_optim)
    return state.replace(net=common.begin_task_model(net, task), hp=hp)


def head_update_mask(params, total: int, feature_rows: int | None = None):
    """Update mask (same structure as params): 1 everywhere except the head
    columns of classes >= ``total`` (and, with ``feature_rows``, kernel rows
    >= it), which stay at their initial values."""
    mask = jax.tree_util.tree_map(lambda p: jnp.ones((), p.dtype), params)
    mask = dict(mask)
    k = params["head"]["kernel"]
    col = (jnp.arange(k.shape[1]) < total)
    km = col[None, :]
    if feature_rows is not None:
        km = km & (jnp.arange(k.shape[0]) < feature_rows)[:, None]
    mask["head"] = {"kernel": km.astype(k.dtype), "bias": col.astype(params["head"]["bias"].dtype)}
    return mask


def _draw(state: State, rng: jax.Array, n: int):
    k_idx, k_aug = jax.random.split(rng)
    idx, valid = ex.sample_exemplars(state.mem, k_idx, n)
    return state.hp.augment(state.mem.x[idx], k_aug, train=True), state.mem.y[idx], valid


def train_step(state: State, batch: dict, rng: jax.Array):
    """One step (module doc, item 2).

    Args:
      batch: ``x`` float32 [B, H, W, C] augmented, ``y`` int32 [B] (the loop's
        batch of the current task).

    Returns:
      (State, {"loss", "ce", "kd", "acc"} float32 scalars).
    """
    hp, st, net = state.hp, state.hp.st, state.net
    x, y = batch["x"], batch["y"]
    w = jnp.ones(y.shape, bool)
    if st.replay > 0:
        rx, ry, rv = _draw(state, rng, st.replay)
        x, y, w = jnp.concatenate([x, rx]), jnp.concatenate([y, ry]), jnp.concatenate([w, rv])
    use_kd = hp.objective in ("icarl", "wa") and st.known > 0
    old_logits = None
    if use_kd:
        old_logits, _ = common.forward(net, state.old_params, state.old_batch_stats, x, train=False)
        old_logits = jax.lax.stop_gradient(old_logits)

    def loss_fn(params):
        logits, bs = common.forward(net, params, net.batch_stats, x, train=True)
        ce = common.cross_entropy(cc.mask_logits(logits, st.total), y, w)
        kd = cc.kd_loss(logits, old_logits, st.known, hp.kd_T, w) if use_kd else jnp.zeros((), jnp.float32)
        return ce + hp.kd_weight * kd, (bs, logits, ce, kd)

    (loss, (bs, logits, ce, kd)), grads = jax.value_and_grad(loss_fn, has_aux=True)(net.params)
    new_net = common.apply_gradients(net, grads, bs, head_update_mask(net.params, st.total))
    acc = jnp.mean((jnp.argmax(cc.mask_logits(logits, st.total)[: batch["y"].shape[0]], -1)
                    == batch["y"]).astype(jnp.float32))
    return state.replace(net=new_net), {"loss": loss, "ce": ce, "kd": kd, "acc": acc}


def features(state: State, x: jax.Array) -> jax.Array:
    """Backbone features float32 [B, D] of normalised inputs (eval mode)."""
    (_, f), _ = common.forward(state.net, state.net.params, state.net.batch_stats, x, train=False,
                               return_features=True)
    return f


def end_task(state: State, task_data: dict) -> State:
    """Task end (module doc, item 3).  ``task_data``: ``x`` uint8 [n, ...],
    ``y`` int32 [n], ``info`` TaskInfo."""
    hp, st = state.hp, state.hp.st
    net = state.net
    if hp.objective == "wa" and st.known > 0:
        p = dict(net.params)
        p["head"] = {**p["head"], "kernel": cc.weight_align(p["head"]["kernel"], st.known, st.total)}
        net = net.replace(params=p)
    state = state.replace(net=net)
    classes = tuple(int(c) for c in task_data["info"].classes)
    mem = ex.update_memory(state.mem, lambda xf: features(state, xf),
                           lambda xb: hp.augment(xb, None, train=False), task_data["x"], task_data["y"],
                           classes, st.quota, hp.num_classes, hp.feature_batch_size)
    return state.replace(mem=mem, old_params=net.params, old_batch_stats=net.batch_stats)


def predict(state: State, x: jax.Array, task_id: jax.Array | None = None) -> jax.Array:
    """float32 [B, C]: head logits (``cnn``) or NME scores (``nme``)."""
    del task_id
    if state.hp.predict == "nme":
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
    hp = state.hp
    return {"exemplars": int(state.mem.count()), "memory_size": hp.memory_size,
            "exemplars_per_class": hp.st.quota, "predict": hp.predict,
            "head_bytes": common.param_bytes(state.net.params["head"])}


def make_spec(objective: str):
    """The :class:`~clj.methods.api.MethodSpec` of ``icarl``, ``wa`` or ``replay``
    (host task info: the known/total class counts are static per task)."""
    import functools

    from clj.methods.api import Capabilities, MethodSpec

    return MethodSpec(init=functools.partial(init, objective=objective), begin_task=begin_task,
                      train_step=train_step, end_task=end_task, predict=predict,
                      capabilities=Capabilities(static_task_info=True),
                      memory_bytes=memory_bytes, result_extras=result_extras)


SPEC = make_spec("icarl")
