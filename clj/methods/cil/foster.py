"""FOSTER: feature boosting with a second backbone, then compression of the
two-backbone teacher into one student backbone, as PyCIL runs it.

Source: Wang, Zhou, Ye & Zhan, "FOSTER: Feature Boosting and Compression
for Class-Incremental Learning", ECCV 2022 (Sec. 3.2 boosting as gradient
boosting with a new feature extractor, Eq. 5-9; Sec. 3.3 logit adjustment
by effective-number class weights; Sec. 3.4 compression by balanced
knowledge distillation, Eq. 12); PyCIL ``models/foster.py`` and
``utils/inc_net.py`` ``FOSTERNet`` (commit 87cc411), whose choices this
module follows (``docs/memo.md``, "FOSTER").

Static shapes: at most three networks of the ``config.model`` architecture
live at once, all allocated at ``init``: the frozen old network (``old``:
backbone + its head, PyCIL's ``convnets[0]`` and ``oldfc``), the new
network being boosted (``net.params["new"]``: backbone + its own head =
PyCIL's ``fe_fc``), the boosted classifier over the concatenated features
(``net.params["fc"]``, [2D, C]: old features first) and the student
(``student``).  Heads cover all C classes; unseen classes are masked out of
every loss and their columns are not updated.

Per task t:

* task 0: one network, CE over its head (``config.optim``,
  ``train.init_epochs``).  ``end_task``: herding memory (features padded to
  2D with zeros: the same norms and distances).
* ``begin_task`` (t >= 1): ``old`` = the network of task 0 (t = 1) or the
  student of task t-1; the new network a copy of it with a fresh head; the
  boosted classifier fresh (uniform in ``±sqrt(3 / 2D)``, zero bias) with
  the old head's old-class columns copied into the old-feature rows; the
  student a copy of the old network whose head keeps the old head's
  old-class columns and is fresh elsewhere; both optimizers reset.
* ``train_step``, boosting (the first ``train.epochs`` epochs of the task):
  ``CE(adjust(logits), y) + CE(fe_logits, y) + lambda_okd KD(logits[:known],
  old_logits, T)`` where ``logits`` is the boosted classifier on
  ``[f_old, f_new]``, ``fe_logits`` the new network's own head,
  ``old_logits`` the frozen old network; ``adjust`` (``foster.boost_loss``)
  divides the logits by the effective-number class weights ``w_c = (1 -
  beta1) / (1 - beta1^{n_c})`` normalised to mean 1, with ``n_c`` the per-class
  exemplar quota for old classes and the training images for new ones
  (PyCIL), or adds the log class prior (logit adjustment / balanced softmax),
  or nothing.  ``foster.oofc="az"`` keeps the old-feature -> new-class
  weights at zero.  Optimizer: the ``cil.update_*`` phase.
* ``train_step``, compression (the next ``foster.compression_epochs``
  epochs, same batches): the student learns the teacher's eval-mode logits
  by balanced KD, ``-sum_c q_c log softmax(s / T)_c``, ``q ∝ softmax(t / T) *
  w_c`` with the ``beta2`` class weights; SGD at ``foster.compression_lr``,
  no weight decay (PyCIL).  The phase switch is a ``lax.cond`` on the task
  step, shared by every seed (:func:`clj.methods.common.any_seed`).
* ``end_task`` (t >= 1): optional weight aligning of the teacher
  (``teacher_wa``) and the student (``student_wa``); herding memory with the
  teacher's concatenated features (PyCIL builds the memory with the teacher).
  Prediction uses the teacher (PyCIL's reported accuracy) or the student
  (``foster.predict_net``); the next task starts from the student.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import struct

from clj.data.augment import Augment  # noqa: F401 - the inherited Static fields' annotations (API reference)
from clj.methods import common, sections
from clj.methods.cil import common as cc
from clj.methods.cil import icarl
from clj.methods.cil.icarl_phases import begin_phase, phase_lr, resolve_memory_size, task_statics, task_steps
from clj.methods.cil.section import CIL, FOSTER
from clj.methods.common import ModelState, OptimSpec, TaskInfo, any_seed
from clj.replay import exemplars as ex


def class_weights(counts, beta: float) -> tuple:
    """Effective-number class weights (Cui et al., CVPR 2019; FOSTER Sec.
    3.3, PyCIL's ``per_cls_weights``).

    Args:
      counts: images per class (host ints, >= 1).
      beta: in [0, 1).

    Returns:
      tuple of floats ``w_c = (1 - beta) / (1 - beta^{n_c})`` scaled so that
      they sum to the number of classes (``beta = 0``: all 1).
    """
    w = [(1.0 - beta) / (1.0 - beta ** int(n)) for n in counts]
    s = sum(w)
    return tuple(x / s * len(w) for x in w)


def task_counts(static, known: int, total: int) -> tuple:
    """PyCIL's ``cls_num_list`` of a task: the per-class exemplar quota of
    ``known`` classes (``memory_per_class`` or ``memory_size // known``) for
    each old class, the training images of each new class."""
    old = static.memory_per_class if static.fixed_memory else static.memory_size // max(known, 1)
    return (int(old),) * known + tuple(int(static.class_sizes[c]) for c in range(known, total))


@dataclasses.dataclass(frozen=True)
class Static(icarl.Static):
    """:class:`clj.methods.cil.icarl.Static` (``epochs`` = boosting +
    compression epochs of tasks >= 1, the batch plan's count) plus the
    ``foster`` block.

    Attributes:
      boost_epochs: epochs of the boosting phase (``train.epochs``).
      compression_epochs: epochs of the compression phase.
      comp_optim: the compression phase's optimizer.
      w_boost, w_comp: the task's class weights (beta1, beta2), one per seen
        class (static per task).
      feat_dim: D, one backbone's feature width.
      dtype: the network's compute dtype (name).
    """

    beta1: float = 0.96
    beta2: float = 0.97
    oofc: str = "ft"
    teacher_wa: bool = False
    student_wa: bool = False
    lambda_okd: float = 1.0
    wa_value: float = 1.0
    boost_loss: str = "divide"
    predict_net: str = "teacher"
    boost_epochs: float = 1.0
    compression_epochs: float = 1.0
    comp_optim: OptimSpec = OptimSpec()
    w_boost: tuple = ()
    w_comp: tuple = ()
    feat_dim: int = 1
    dtype: str = "float32"

    @property
    def boost_steps(self) -> int:
        """Boosting steps of the current task (the rest are compression)."""
        return max(1, round(self.boost_epochs * self.st.steps_per_epoch))


@struct.dataclass
class State:
    """The three networks, the memory and the key.

    Attributes:
      net: ``{"new": network params (backbone + head = fe_fc; the single
        network of task 0), "fc": {"kernel": [2D, C], "bias": [C]}}``, the
        new network's BN statistics, the boosting optimizer.
      old: ``{"params", "batch_stats"}`` of the frozen old network.
      student: the student network (ModelState, compression optimizer).
      mem: exemplar memory (NME means over 2D teacher features).
      key: PRNG key (fresh heads per task; ``"pycil"`` memory permutations).
      swept: ``optim.lr``, ``cil.update_lr`` as float32 [].
      static: :class:`Static`.
    """

    net: ModelState
    old: dict
    student: ModelState
    mem: ex.ExemplarMemory
    key: jax.Array
    swept: dict
    static: Static = struct.field(pytree_node=False)


SWEEPABLE = ("optim.lr", "cil.update_lr")


def init(rng: jax.Array, config, scenario) -> State:
    """A fresh State (every network allocated; the old network and the
    student copies of the first until task 1).

    Raises:
      clj.errors.ConfigError: bad ``config.cil`` / ``config.foster`` values.
    """
    from clj.models import compute_dtype

    cil = sections.block(config, CIL)
    fo = sections.block(config, FOSTER)
    mem_size = resolve_memory_size(config, scenario, "single", cil)
    init_o, upd_o = cc.optim_specs(config, cil)
    init_ep, ep = cc.phase_epochs(config)
    comp_ep = float(fo.compression_epochs)
    comp_lr = float(fo.compression_lr) if float(fo.compression_lr) > 0 else float(cil.update_lr)
    comp_o = dataclasses.replace(upd_o, lr=comp_lr, weight_decay=float(fo.compression_weight_decay), t_max=comp_ep)
    C = scenario.num_classes
    model = common.model_from_config(config.model, C)
    D = int(model.feature_dim)
    static = Static(objective="foster", augment=common.augment_from_config(config.augment, scenario),
                    memory_size=mem_size, fixed_memory=bool(cil.fixed_memory),
                    memory_per_class=int(cil.memory_per_class), kd_T=float(cil.kd_T), kd_weight=1.0,
                    predict=str(cil.predict), init_optim=init_o, update_optim=upd_o,
                    batch_size=int(config.train.batch_size), feature_batch_size=int(cil.feature_batch_size),
                    num_classes=C, replay_batch_size=int(cil.replay_batch_size),
                    max_replay_batch=int(cil.max_replay_batch), batching=str(cil.batching),
                    class_sizes=cc.class_sizes(scenario),
                    task_classes=tuple(tuple(int(c) for c in t.classes) for t in scenario.tasks),
                    init_epochs=init_ep, epochs=ep + comp_ep, beta1=float(fo.beta1), beta2=float(fo.beta2),
                    oofc=str(fo.oofc), teacher_wa=bool(fo.teacher_wa), student_wa=bool(fo.student_wa),
                    lambda_okd=float(fo.lambda_okd), wa_value=float(fo.wa_value), boost_loss=str(fo.boost_loss),
                    predict_net=str(fo.predict_net), boost_epochs=ep, compression_epochs=comp_ep,
                    comp_optim=comp_o, feat_dim=D, dtype=jnp.dtype(compute_dtype(config.model)).name)
    k_net, k_fc, k_state = jax.random.split(rng, 3)
    shape = scenario.image_shape
    variables = model.init(k_net, jnp.zeros((1, *shape), jnp.float32), train=False)
    mp, bs = variables["params"], variables.get("batch_stats", {})
    params = {"new": mp, "fc": fresh_fc(k_fc, 2 * D, C)}
    z = jnp.zeros((), jnp.int32)
    net = ModelState(params=params, batch_stats=bs, opt_state=init_o.make().init(params), step=z, task_step=z,
                     task_steps=z, steps_per_epoch=jnp.ones((), jnp.int32), model=model, optim=init_o)
    student = ModelState(params=mp, batch_stats=bs, opt_state=comp_o.make().init(mp), step=z, task_step=z,
                         task_steps=z, steps_per_epoch=jnp.ones((), jnp.int32), model=model, optim=comp_o)
    cap = ex.memory_capacity(C, mem_size, static.fixed_memory, static.memory_per_class)
    return State(net=net, old={"params": mp, "batch_stats": bs}, student=student,
                 mem=ex.init_memory(cap, shape, C, 2 * D), key=k_state,
                 swept={"optim.lr": jnp.float32(config.optim.lr), "cil.update_lr": jnp.float32(cil.update_lr)},
                 static=static)


def fresh_fc(key: jax.Array, fan_in: int, C: int) -> dict:
    """A linear layer ``{"kernel": float32 [fan_in, C], "bias": zeros [C]}``,
    kernel uniform in ``±sqrt(3 / fan_in)`` (PyCIL's ``SimpleLinear``:
    Kaiming-uniform, linear gain)."""
    b = math.sqrt(3.0 / fan_in)
    return {"kernel": jax.random.uniform(key, (fan_in, C), jnp.float32, -b, b), "bias": jnp.zeros((C,), jnp.float32)}


def _with_head(params: dict, head: dict) -> dict:
    return {**params, "head": head}


def begin_task(state: State, task: TaskInfo) -> State:
    """Task boundary (module doc): for t >= 1 the old network, the new one,
    the boosted classifier and the student; optimizers reset."""
    static = state.static
    st = task_statics(static, task)
    t, K, N, C, D = st.task, st.known, st.total, static.num_classes, static.feat_dim
    static = dataclasses.replace(static, st=st,
                                 w_boost=class_weights(task_counts(static, K, N), static.beta1) if K else (),
                                 w_comp=class_weights(task_counts(static, K, N), static.beta2) if K else ())
    if t == 0:
        return state.replace(net=begin_phase(state.net, static, task), static=static)
    if t == 1:
        old = {"params": state.net.params["new"], "batch_stats": state.net.batch_stats}
    else:
        old = {"params": state.student.params, "batch_stats": state.student.batch_stats}
    key = jax.random.fold_in(state.key, t)
    k_fe, k_fc, k_s = jax.random.split(key, 3)
    oh = old["params"]["head"]
    fe_fc = fresh_fc(k_fe, D, C)
    fc = fresh_fc(k_fc, 2 * D, C)
    fc = {"kernel": fc["kernel"].at[:D, :K].set(oh["kernel"][:, :K]), "bias": fc["bias"].at[:K].set(oh["bias"][:K])}
    if static.oofc == "az":
        fc = {**fc, "kernel": fc["kernel"].at[:D, K:].set(0.0)}
    params = {"new": _with_head(old["params"], fe_fc), "fc": fc}
    net = begin_phase(state.net.replace(params=params, batch_stats=old["batch_stats"]), static, task)
    sh = fresh_fc(k_s, D, C)
    sh = {"kernel": sh["kernel"].at[:, :K].set(oh["kernel"][:, :K]), "bias": sh["bias"].at[:K].set(oh["bias"][:K])}
    sp = _with_head(old["params"], sh)
    comp_steps = max(1, st.steps - static.boost_steps)
    student = state.student.replace(params=sp, batch_stats=old["batch_stats"],
                                    opt_state=static.comp_optim.make().init(sp), task_step=jnp.zeros((), jnp.int32),
                                    task_steps=jnp.asarray(comp_steps, jnp.int32),
                                    steps_per_epoch=jnp.asarray(max(st.steps_per_epoch, 1), jnp.int32))
    return state.replace(net=net, old=old, student=student, static=static)


def _dense(f: jax.Array, layer: dict, dtype) -> jax.Array:
    return (f.astype(dtype) @ layer["kernel"].astype(dtype)).astype(jnp.float32) + layer["bias"]


def old_forward(state: State, x: jax.Array):
    """(logits float32 [B, C], features float32 [B, D]) of the frozen old
    network (eval mode, no gradient)."""
    (lo, fo), _ = common.forward(state.net, state.old["params"], state.old["batch_stats"], x, train=False,
                                 return_features=True)
    return jax.lax.stop_gradient(lo), jax.lax.stop_gradient(fo)


def teacher_logits(state: State, x: jax.Array, fc: dict | None = None) -> tuple:
    """Eval-mode teacher: (logits float32 [B, C] of the boosted classifier on
    ``[f_old, f_new]``, the concatenated features float32 [B, 2D])."""
    _, f_old = old_forward(state, x)
    (_, f_new), _ = common.forward(state.net, state.net.params["new"], state.net.batch_stats, x, train=False,
                                   return_features=True)
    f = jnp.concatenate([f_old, f_new], -1)
    return _dense(f, state.net.params["fc"] if fc is None else fc, jnp.dtype(state.static.dtype)), f


def adjusted_logits(static: Static, logits: jax.Array) -> jax.Array:
    """The boosting CE's logits (``foster.boost_loss``): divided by the beta1
    class weights (PyCIL), plus the log class prior, or unchanged; unseen
    classes masked."""
    N = static.st.total
    C = logits.shape[-1]
    if static.boost_loss == "divide":
        w = jnp.asarray(static.w_boost + (1.0,) * (C - N), jnp.float32)
        logits = logits / w
    elif static.boost_loss == "logit_adjust":
        n = jnp.asarray(task_counts(static, static.st.known, N) + (1,) * (C - N), jnp.float32)
        logits = logits + jnp.log(n / jnp.sum(n[:N]))
    return cc.mask_logits(logits, N)


def balanced_kd(student_logits: jax.Array, teacher: jax.Array, class_w: jax.Array, T, total: int,
                weights: jax.Array | None = None) -> jax.Array:
    """FOSTER's balanced distillation (Eq. 12; PyCIL ``BKD``): ``-sum_c q_c
    log softmax(s / T)_c``, ``q = softmax(t / T) * w / sum(...)``, over the
    first ``total`` classes; mean over the rows where ``weights`` (float32
    [])."""
    s = cc.mask_logits(student_logits.astype(jnp.float32), total) / T
    p = jax.nn.softmax(cc.mask_logits(teacher.astype(jnp.float32), total) / T, -1) * class_w
    q = p / jnp.sum(p, -1, keepdims=True)
    col = jnp.arange(s.shape[-1]) < total
    per = -jnp.sum(jnp.where(col, q * jax.nn.log_softmax(s, -1), 0.0), -1)
    if weights is None:
        return per.mean()
    w = weights.astype(jnp.float32)
    return jnp.sum(per * w) / jnp.maximum(jnp.sum(w), 1.0)


def _head_mask(params: dict, total: int) -> dict:
    """Update mask of a network: everything but the head columns >= total."""
    mask = dict(jax.tree_util.tree_map(lambda p: jnp.ones((), bool), params))
    col = jnp.arange(params["head"]["kernel"].shape[1]) < total
    mask["head"] = {"kernel": col[None, :], "bias": col}
    return mask


def boost_mask(static: Static, params: dict) -> dict:
    """Boosting's update mask: the new network (its head's seen columns),
    the boosted classifier's seen columns (minus the old-feature x new-class
    block under ``oofc="az"``); task 0: the single network, the boosted
    classifier frozen."""
    st, D = static.st, static.feat_dim
    C = params["fc"]["bias"].shape[0]
    col = jnp.arange(C) < st.total
    if st.task == 0:
        fc = {"kernel": jnp.zeros((), bool), "bias": jnp.zeros((), bool)}
    else:
        km = jnp.broadcast_to(col[None, :], (2 * D, C))
        if static.oofc == "az":
            km = km & ~((jnp.arange(2 * D) < D)[:, None] & (jnp.arange(C) >= st.known)[None, :])
        fc = {"kernel": km, "bias": col}
    return {"new": _head_mask(params["new"], st.total), "fc": fc}


def _task0_step(state: State, x, y, w, nb):
    static, st, net = state.static, state.static.st, state.net

    def loss_fn(params):
        logits, bs = common.forward(net, params["new"], net.batch_stats, x, train=True)
        ce = common.cross_entropy(cc.mask_logits(logits, st.total), y, w)
        return ce, (bs, logits, ce)

    (loss, (bs, logits, ce)), grads = jax.value_and_grad(loss_fn, has_aux=True)(net.params)
    new_net = common.apply_gradients(net, grads, bs, boost_mask(static, net.params), base_lr=phase_lr(state.swept, 0))
    z = jnp.zeros((), jnp.float32)
    acc = jnp.mean((jnp.argmax(cc.mask_logits(logits, st.total)[:nb], -1) == y[:nb]).astype(jnp.float32))
    return state.replace(net=new_net), {"loss": loss, "ce": ce, "fe": z, "kd": z, "bkd": z, "acc": acc,
                                        "compressing": z}


def boosting_step(state: State, x, y, w, nb):
    """One boosting step (module doc) on the mixed batch ``x, y, w``."""
    static, st, net = state.static, state.static.st, state.net
    K, N = st.known, st.total
    old_lo, f_old = old_forward(state, x)
    dt = jnp.dtype(static.dtype)

    def loss_fn(params):
        (fe_logits, f_new), bs = common.forward(net, params["new"], net.batch_stats, x, train=True,
                                                return_features=True)
        logits = _dense(jnp.concatenate([f_old, f_new], -1), params["fc"], dt)
        clf = common.cross_entropy(adjusted_logits(static, logits), y, w)
        fe = common.cross_entropy(cc.mask_logits(fe_logits, N), y, w)
        kd = static.lambda_okd * cc.kd_loss(logits, old_lo, K, static.kd_T, w)
        return clf + fe + kd, (bs, logits, clf, fe, kd)

    (loss, (bs, logits, clf, fe, kd)), grads = jax.value_and_grad(loss_fn, has_aux=True)(net.params)
    new_net = common.apply_gradients(net, grads, bs, boost_mask(static, net.params),
                                     base_lr=phase_lr(state.swept, st.task))
    acc = jnp.mean((jnp.argmax(cc.mask_logits(logits, N)[:nb], -1) == y[:nb]).astype(jnp.float32))
    z = jnp.zeros((), jnp.float32)
    return state.replace(net=new_net), {"loss": loss, "ce": clf, "fe": fe, "kd": kd, "bkd": z, "acc": acc,
                                        "compressing": z}


def compression_step(state: State, x, y, w, nb):
    """One compression step (module doc): the student's balanced KD to the
    eval-mode teacher; the boosting counters advance, nothing else of the
    teacher changes."""
    static, st, stu = state.static, state.static.st, state.student
    N = st.total
    t_logits = jax.lax.stop_gradient(teacher_logits(state, x, teacher_fc(state))[0])
    cw = jnp.asarray(static.w_comp + (1.0,) * (static.num_classes - N), jnp.float32)

    def loss_fn(params):
        s_logits, bs = common.forward(stu, params, stu.batch_stats, x, train=True)
        return balanced_kd(s_logits, t_logits, cw, static.kd_T, N, w), (bs, s_logits)

    (loss, (bs, s_logits)), grads = jax.value_and_grad(loss_fn, has_aux=True)(stu.params)
    new_stu = common.apply_gradients(stu, grads, bs, _head_mask(stu.params, N))
    net = state.net.replace(step=state.net.step + 1, task_step=state.net.task_step + 1)
    acc = jnp.mean((jnp.argmax(cc.mask_logits(s_logits, N)[:nb], -1) == y[:nb]).astype(jnp.float32))
    z = jnp.zeros((), jnp.float32)
    return state.replace(net=net, student=new_stu), {"loss": loss, "ce": z, "fe": z, "kd": z, "bkd": loss,
                                                     "acc": acc, "compressing": jnp.ones((), jnp.float32)}


def train_step(state: State, batch: dict, rng: jax.Array):
    """One step: task 0 CE; tasks >= 1 boosting for the first
    ``boost_steps`` steps, then compression (module doc).

    Args:
      batch: ``x`` float32 [B, H, W, C] augmented, ``y`` int32 [B].

    Returns:
      (State, {"loss", "ce", "fe", "kd", "bkd", "acc", "compressing"}
      float32 scalars).
    """
    static, st = state.static, state.static.st
    x, y, w = icarl.mixed_batch(static, state.mem, state.key, state.net.task_step, batch, rng)
    nb = st.new_per_step if static.batching == "pycil" else batch["y"].shape[0]
    if st.task <= 0:
        return _task0_step(state, x, y, w, nb)
    boosting = state.net.task_step < static.boost_steps  # the same for every seed (shared step counter)
    return jax.lax.cond(any_seed(boosting), lambda s: boosting_step(s, x, y, w, nb),
                        lambda s: compression_step(s, x, y, w, nb), state)


def align(kernel: jax.Array, known: int, total: int, value: float) -> jax.Array:
    """FOSTER's weight aligning (PyCIL ``FOSTERNet.weight_align``): the new
    classes' columns ``[known, total)`` of a kernel [in, C] times ``gamma =
    mean ||w_old|| / mean ||w_new|| * value^(known / (total - known))``."""
    g = cc.weight_align(kernel, known, total)
    factor = float(value) ** (known / max(total - known, 1))
    col = (jnp.arange(kernel.shape[1]) >= known) & (jnp.arange(kernel.shape[1]) < total)
    return jnp.where(col[None, :], g * factor, kernel)


def teacher_fc(state: State) -> dict:
    """The boosted classifier the compression distils (weight-aligned when
    ``teacher_wa``; PyCIL aligns it after boosting)."""
    fc = state.net.params["fc"]
    st = state.static.st
    if state.static.teacher_wa and st.known > 0:
        fc = {**fc, "kernel": align(fc["kernel"], st.known, st.total, state.static.wa_value)}
    return fc


def features(state: State, x: jax.Array) -> jax.Array:
    """The memory's features float32 [B, 2D] (eval mode): the teacher's
    concatenation for t >= 1, the single network's padded with zeros at
    task 0."""
    st = state.static.st
    if st.task <= 0:
        (_, f), _ = common.forward(state.net, state.net.params["new"], state.net.batch_stats, x, train=False,
                                   return_features=True)
        return jnp.concatenate([f, jnp.zeros_like(f)], -1)
    return teacher_logits(state, x)[1]


def end_task(state: State, task_data: dict) -> State:
    """Teacher / student weight aligning (t >= 1, when set), then the herding
    memory with the teacher's features (module doc)."""
    static, st = state.static, state.static.st
    if st.task >= 1:
        state = state.replace(net=state.net.replace(params={**state.net.params, "fc": teacher_fc(state)}))
        if static.student_wa:
            sp = state.student.params
            head = {**sp["head"], "kernel": align(sp["head"]["kernel"], st.known, st.total, static.wa_value)}
            state = state.replace(student=state.student.replace(params={**sp, "head": head}))
    classes = tuple(int(c) for c in task_data["info"].classes)
    mem = ex.update_memory(state.mem, lambda xf: features(state, xf),
                           lambda xb: static.augment(xb, None, train=False), task_data["x"], task_data["y"],
                           classes, st.quota, static.num_classes, static.feature_batch_size)
    return state.replace(mem=mem)


def student_logits(state: State, x: jax.Array) -> jax.Array:
    """float32 [B, C] of the student (eval mode)."""
    return common.forward(state.student, state.student.params, state.student.batch_stats, x, train=False)[0]


def distill_gap(state: State, x: jax.Array) -> jax.Array:
    """Mean ``KL(softmax(teacher) || softmax(student))`` float32 [] over the
    seen classes on x (eval mode): what compression decreases."""
    N = state.static.st.total
    t = jax.nn.log_softmax(cc.mask_logits(teacher_logits(state, x, teacher_fc(state))[0], N), -1)
    s = jax.nn.log_softmax(cc.mask_logits(student_logits(state, x), N), -1)
    col = jnp.arange(t.shape[-1]) < N
    return jnp.mean(jnp.sum(jnp.where(col, jnp.exp(t) * (t - s), 0.0), -1))


def predict(state: State, x: jax.Array, task_id: jax.Array | None = None) -> jax.Array:
    """float32 [B, C]: task 0 the single network; later the teacher's
    boosted logits or the student's (``foster.predict_net``); NME scores on
    the memory's features with ``cil.predict="nme"``."""
    del task_id
    static = state.static
    if static.predict == "nme":
        return ex.nme_scores(features(state, x), state.mem.class_means)
    if static.st.task <= 0:
        return common.forward(state.net, state.net.params["new"], state.net.batch_stats, x, train=False)[0]
    if static.predict_net == "student":
        return student_logits(state, x)
    return teacher_logits(state, x)[0]


def memory_bytes(state: State) -> dict:
    """Stored exemplars (uint8) + 4 bytes per parameter of one backbone
    (heads excluded): the compressed model FOSTER keeps between tasks."""
    from clj.models.utils import count_params

    buf = ex.exemplar_bytes(state.mem)
    model = 4 * count_params({k: v for k, v in state.student.params.items() if k != "head"})
    return {"buffer": buf, "model": model, "total": buf + model}


def result_extras(state: State) -> dict:
    static = state.static
    return {"exemplars": int(state.mem.count()), "memory_size": static.memory_size,
            "exemplars_per_class": static.st.quota, "predict": static.predict, "predict_net": static.predict_net,
            "head_bytes": common.param_bytes(state.net.params["fc"])}


def make_spec():
    """FOSTER's :class:`~clj.methods.api.MethodSpec` (host task info; a step
    holds the old, new and student networks: ``heavy_step``)."""
    from clj.methods.api import Capabilities, MethodSpec

    return MethodSpec(init=init, begin_task=begin_task, train_step=train_step, end_task=end_task, predict=predict,
                      capabilities=Capabilities(static_task_info=True, heavy_step=True), memory_bytes=memory_bytes,
                      result_extras=result_extras, task_steps=task_steps, sweepable=SWEEPABLE)


SPEC = make_spec()
