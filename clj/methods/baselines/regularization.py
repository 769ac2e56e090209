"""Quadratic-penalty baselines: EWC, SI and MAS, usable with any scenario.

All three add ``lambda * sum_r sum_i Omega_r,i (theta_i - theta*_r,i)^2`` to
the task loss and differ in the importance Omega computed at each task end.
The defaults follow GT-RIPL's Continual-Learning-Benchmark
(``agents/regularization.py``), the code the NISPA authors ran for their
baselines (``Baselines/EWC_SI_MAS`` of the official NISPA repository):

* **EWC** (Kirkpatrick et al., PNAS 2017, Eq. 3): the diagonal Fisher
  information, the mean over ``n_fisher`` training examples (drawn without
  replacement; all of them when fewer) of the squared per-example gradient
  of log p(y_hat | x), y_hat the model's prediction.  ``reg.ewc_mode =
  'per_task'`` (GT-RIPL's ``EWC``): every task keeps its own Fisher and
  anchor, the penalty sums over tasks; ``'online'`` (GT-RIPL's
  ``EWC_online``): one anchor (the last task's parameters) and the summed
  Fisher.
* **SI** (Zenke et al., ICML 2017, Eq. 5): the path integral
  ``w += -g * delta_theta`` of the unregularised loss gradient along the
  trajectory, divided by ``(theta_end - theta_start)^2 + xi`` at the task end,
  summed over tasks around one anchor.  GT-RIPL keeps negative values
  (``reg.si_clip = False``); ``True`` clips them to 0.
* **MAS** (Aljundi et al., ECCV 2018, Eq. 4): per training batch, the
  absolute gradient of the mean over the batch's examples and the head's
  outputs of the squared logits, averaged over the batches of the task's
  training split (``reg.mas_scale = 'mean'``, GT-RIPL); ``'sum'`` sums the
  squared logits over the outputs instead (larger by the head width), summed
  over tasks around one anchor.

With ``reg.multi_head`` (default for task-IL scenarios) the losses only see
the current task's logits (multi-head training, as in the NISPA paper's
baselines).

Hold-out and early stopping (GT-RIPL as modified by the NISPA authors,
``--e_stopping_wait``): with ``reg.val_fraction > 0`` that share of each
task's training examples (a fixed hash of the image bytes,
:func:`clj.data.holdout.is_val`) never enters the loss nor the importance;
they are copied into a buffer during the task's first epoch.  After every
epoch the (task-masked) validation accuracy is measured; once the last
``reg.patience`` epochs are all below the task's best and more than
``patience + 2`` epochs have run, the task stops (the live model is kept, as
in the original; later steps leave the State unchanged and
``metrics["task_done"]`` reports it).  Epoch ends come from the loop's
``batch["step"]`` / ``batch["steps_per_epoch"]``; :func:`task_steps` sizes a
task in whole epochs.

Config block ``config.reg``: its fields, defaults, meanings and checks are
:data:`clj.methods.baselines.section.REG` (``--describe`` prints them).
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from clj.errors import ConfigError
from clj.data.augment import Augment
from clj.methods import common, sections
from clj.methods.baselines import section as baselines_section
from clj.methods.common import ModelState, TaskInfo
from clj.methods.baselines.reg_importance import _order, absorb, importance  # noqa: F401 (tests and callers use these names here)
from clj.methods.baselines.reg_importance import task_head as _head, zeros as _zeros

KINDS = ("ewc", "si", "mas")


@dataclasses.dataclass(frozen=True)
class Static:
    """Static hyperparameters.

    Attributes:
      kind: one of KINDS.
      lam: the penalty's lambda.
      n_fisher: EWC's example count.
      xi: SI's damping.
      multi_head: losses on the current task's logits only.
      ewc_mode, mas_scale: as ``config.reg`` (:data:`clj.methods.baselines.section.REG`);
        si_clip: clip negative SI importances to 0.
      slots: anchors kept (tasks for per-task EWC, else 1).
      imp_samples: MAS examples (0 = all); imp_batch: MAS batch size.
      val_permille: hold-out share in 1/1000 (0 = none); val_cap: its
        buffer's capacity; patience: early-stopping wait (0 = none).
      augment: the evaluation transform; chunk: EWC's chunk size.
    """

    kind: str
    lam: float
    n_fisher: int = 1000
    xi: float = 0.1
    multi_head: bool = True
    ewc_mode: str = "per_task"
    mas_scale: str = "mean"
    si_clip: bool = False
    slots: int = 1
    imp_samples: int = 0
    imp_batch: int = 256
    val_permille: int = 0
    val_cap: int = 0
    patience: int = 0
    augment: Augment = Augment()
    chunk: int = 64


@struct.dataclass
class State:
    """The network plus the penalty's arrays.

    Attributes:
      net: params, optimizer state, counters.
      anchor: theta*, params-shaped with a leading [slots] axis.
      omega: importance, params-shaped with a leading [slots] axis.
      filled: int32 [] anchors written so far (per-task EWC's next slot).
      w: SI's running path integral of this task (zeros for EWC/MAS).
      start: SI's params at the start of this task.
      class_mask: bool [C], the current task's classes.
      val_x, val_y, val_n: the hold-out buffer (uint8 images, labels, fill).
      best_acc, since_best, epochs, stopped: early stopping (best validation
        accuracy of the task, epochs since it, epochs run, stop flag).
      key: PRNG key for the importance draws.
      swept: the sweepable hyperparameters (:data:`SWEEPABLE`) as float32 []
        arrays, so a grid of them is a vmapped axis like the seeds.
    """

    net: ModelState
    anchor: object
    omega: object
    filled: jax.Array
    w: object
    start: object
    class_mask: jax.Array
    val_x: jax.Array
    val_y: jax.Array
    val_n: jax.Array
    best_acc: jax.Array
    since_best: jax.Array
    epochs: jax.Array
    stopped: jax.Array
    key: jax.Array
    swept: dict
    static: Static = struct.field(pytree_node=False)


SWEEPABLE = ("optim.lr", "reg.lam")
"""Config fields carried as arrays in ``State.swept`` (no shape depends on them)."""


def _stack(t, n: int):
    return jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, (n, *a.shape)), t)


def task_steps(config, n_examples: int, batch_size: int, task_index: int, state_info=None) -> int:
    """Training steps of one task in whole epochs, ``train.epochs *
    ceil(n / B)`` (host ints), so the early-stopping check falls at every
    epoch end as in GT-RIPL's loader (no ``drop_last``).

    Raises:
      ConfigError: n_examples < 1, batch_size < 1 or train.epochs < 1.
    """
    del task_index
    if int(n_examples) < 1:
        raise ConfigError(f"n_examples={n_examples} is invalid: a task needs >= 1 training example.")
    if int(batch_size) < 1:
        raise ConfigError(f"train.batch_size={batch_size} is invalid: it must be >= 1.")
    e = float(config.train.epochs)
    if e < 1 or e != int(e):
        raise ConfigError(f"train.epochs={config.train.epochs} is invalid: it must be a whole number >= 1.")
    return int(e) * (-(-int(n_examples) // int(batch_size)))


def init(rng: jax.Array, config, scenario, kind: str) -> State:
    """A fresh State for ``kind`` (network from ``config.model``, optimizer
    from ``config.optim``, options from ``config.reg``; module doc).

    Raises:
      ConfigError: an unknown kind or a bad ``config.reg`` value (the checks
        of :data:`clj.methods.baselines.section.REG`).
    """
    if kind not in KINDS:
        raise ConfigError(f"regularization kind={kind!r} is unknown; valid: {', '.join(KINDS)}.")
    r = sections.block(config, baselines_section.REG)  # every check of config.reg (JAX-free, run by clj.config too)
    lam, mode, vf, pat = float(r["lam"]), str(r["ewc_mode"]), float(r["val_fraction"]), int(r["patience"])
    multi_head = scenario.kind == "task_il" if r["multi_head"] is None else bool(r["multi_head"])
    permille = int(round(1000 * vf))
    val_cap = 0
    if permille > 0:
        from clj.data.holdout import is_val_np
        val_cap = max(int(is_val_np(scenario.x_train[t.train_idx], permille).sum()) for t in scenario.tasks)
        val_cap = max(val_cap, 1)
    slots = scenario.num_tasks if (kind == "ewc" and mode == "per_task") else 1
    static = Static(kind=kind, lam=lam, n_fisher=int(r["n_fisher"]), xi=float(r["xi"]), multi_head=multi_head,
                    ewc_mode=mode, mas_scale=str(r["mas_scale"]), si_clip=bool(r["si_clip"]), slots=slots,
                    imp_samples=int(r["importance_samples"]),
                    imp_batch=int(r["importance_batch"]) or int(config.train.batch_size), val_permille=permille,
                    val_cap=val_cap, patience=pat, augment=common.augment_from_config(config.augment, scenario),
                    chunk=int(r["chunk"]))
    k_net, k_state = jax.random.split(rng)
    model = common.model_from_config(config.model, scenario.num_classes)
    net = common.init_model_state(k_net, model, common.optim_spec_from_config(config.optim),
                                  scenario.image_shape)
    z = _zeros(net.params)
    shape = scenario.image_shape
    i0, f0, b0 = jnp.zeros((), jnp.int32), jnp.zeros((), jnp.float32), jnp.zeros((), bool)
    return State(net=net, anchor=_stack(net.params, slots), omega=_stack(z, slots), filled=i0, w=z,
                 start=net.params, class_mask=jnp.ones((scenario.num_classes,), bool),
                 val_x=jnp.zeros((val_cap, *shape), jnp.uint8), val_y=jnp.zeros((val_cap,), jnp.int32),
                 val_n=i0, best_acc=f0, since_best=i0, epochs=i0, stopped=b0, key=k_state,
                 swept={"optim.lr": jnp.float32(config.optim.lr), "reg.lam": jnp.float32(lam)}, static=static)


def begin_task(state: State, task: TaskInfo) -> State:
    """Resets the optimizer, sets the task's class mask, starts SI's path,
    empties the hold-out buffer and the early-stopping record."""
    cm = jnp.zeros((task.num_classes,), bool).at[jnp.asarray(task.classes)].set(True)
    i0, f0, b0 = jnp.zeros((), jnp.int32), jnp.zeros((), jnp.float32), jnp.zeros((), bool)
    return state.replace(net=common.begin_task_model(state.net, task), class_mask=cm,
                         w=_zeros(state.net.params), start=state.net.params, val_n=i0, best_acc=f0,
                         since_best=i0, epochs=i0, stopped=b0)


def penalty(state: State, params) -> jax.Array:
    """``lam * sum_r sum_i Omega_r,i (theta_i - theta*_r,i)^2`` (float32 [])."""
    terms = jax.tree_util.tree_map(lambda o, p, a: jnp.sum(o * (p[None] - a) ** 2), state.omega, params,
                                   state.anchor)
    return state.swept["reg.lam"] * sum(jax.tree_util.tree_leaves(terms))


def early_stop_update(best: jax.Array, since_best: jax.Array, epochs: jax.Array, acc: jax.Array,
                      patience: int):
    """One epoch of GT-RIPL's early stopping as the NISPA authors modified it
    (``agents/default.py`` ``learn_batch``): a new accuracy >= the best resets
    the count; the task stops when the last ``patience`` epochs are all
    below the best and more than ``patience + 2`` epochs have run.

    Args: best float32 [], since_best / epochs int32 [] (before this epoch),
      acc float32 [] (this epoch), patience static int >= 1.
    Returns: (best, since_best, epochs, stop bool []).
    """
    better = acc >= best
    best = jnp.maximum(best, acc)
    since_best = jnp.where(better, 0, since_best + 1)
    epochs = epochs + 1
    stop = (since_best >= patience) & (epochs > patience + 2)
    return best, since_best, epochs, stop


def val_accuracy(state: State, params) -> jax.Array:
    """Accuracy (fraction, float32 []) on the hold-out buffer with the head's
    logits (multi-head: the task's classes)."""
    net = state.net
    x = state.static.augment(state.val_x, None, train=False)
    out, _ = common.forward(net, params, net.batch_stats, x, train=False)
    ok = (jnp.argmax(_head(state, out), -1) == state.val_y) & (jnp.arange(state.val_y.shape[0]) < state.val_n)
    return jnp.sum(ok, dtype=jnp.float32) / jnp.maximum(state.val_n, 1).astype(jnp.float32)


def _fill(state: State, x_raw, y, sel) -> State:
    cap = state.val_x.shape[0]
    pos = state.val_n + jnp.cumsum(sel.astype(jnp.int32)) - 1
    pos = jnp.where(sel & (pos < cap), pos, cap)
    return state.replace(val_x=state.val_x.at[pos].set(x_raw, mode="drop"),
                         val_y=state.val_y.at[pos].set(y, mode="drop"),
                         val_n=jnp.minimum(state.val_n + jnp.sum(sel, dtype=jnp.int32), cap))


def train_step(state: State, batch: dict, rng: jax.Array):
    """CE on the (task-masked) logits of the training examples + the
    penalty; SI accumulates its path integral with the unregularised
    gradient; with a hold-out, its examples are masked out of the loss,
    buffered in the first epoch and scored at every epoch end (module doc).

    Args: ``batch`` has ``x`` float32 [B, ...], ``y`` int32 [B]; with a
      hold-out also ``x_raw`` uint8 [B, ...], ``step``, ``steps_per_epoch``
      and ``task_size`` int32 [] (given by the loop).
    Returns: (State, {loss, acc, task_done}).
    """
    del rng
    static, net = state.static, state.net
    y = batch["y"]
    live = ~state.stopped
    if static.val_permille > 0:
        from clj.data.holdout import is_val
        xr = batch["x_raw"]
        val = is_val(xr, static.val_permille)
        B = y.shape[0]
        step, spe = batch["step"], batch["steps_per_epoch"]
        first = (step * B + jnp.arange(B, dtype=jnp.int32)) < batch["task_size"]
        state = jax.lax.cond(step < spe, lambda s: _fill(s, xr, y, val & first & live), lambda s: s, state)
        tw = ~val
    else:
        tw = jnp.ones(y.shape, bool)

    def task_loss(params):
        logits, bs = common.forward(net, params, net.batch_stats, batch["x"], train=True)
        return common.cross_entropy(_head(state, logits), y, tw), (bs, logits)

    (loss, (bs, logits)), g_task = jax.value_and_grad(task_loss, has_aux=True)(net.params)
    g_pen = jax.grad(lambda p: penalty(state, p))(net.params)
    grads = jax.tree_util.tree_map(jnp.add, g_task, g_pen)
    new_net = common.apply_gradients(net, grads, bs, base_lr=state.swept["optim.lr"])
    w = state.w
    if static.kind == "si":
        w = jax.tree_util.tree_map(lambda wi, g, a, b: wi - g * (a - b), w, g_task, new_net.params, net.params)
    twf = tw.astype(jnp.float32)
    metrics = {"loss": loss + penalty(state, net.params),
               "acc": jnp.sum((jnp.argmax(_head(state, logits), -1) == y) * twf) / jnp.maximum(jnp.sum(twf), 1.0)}
    state = state.replace(net=jax.tree_util.tree_map(lambda a, b: jnp.where(live, a, b), new_net, net),
                          w=jax.tree_util.tree_map(lambda a, b: jnp.where(live, a, b), w, state.w))
    if static.patience > 0:
        def epoch_end(s):
            best, since, ep, stop = early_stop_update(s.best_acc, s.since_best, s.epochs,
                                                      val_accuracy(s, s.net.params), static.patience)
            new = s.replace(best_acc=best, since_best=since, epochs=ep, stopped=stop)
            return jax.tree_util.tree_map(lambda a, b: jnp.where(s.stopped, a, b), s, new)

        state = jax.lax.cond((batch["step"] + 1) % batch["steps_per_epoch"] == 0, epoch_end, lambda s: s, state)
    metrics["task_done"] = state.stopped.astype(jnp.float32)
    return state, metrics


def end_task(state: State, task_data) -> State:
    """Computes this task's importance on ``task_data["x"]`` (uint8 [n, ...],
    the task's training examples) and stores it with the anchor
    (:func:`absorb`)."""
    params = state.net.params
    key, k_imp = jax.random.split(state.key)
    omega_t = importance(state, params, task_data["x"], k_imp) if state.static.kind != "si" else \
        importance(state, params, None, k_imp)
    state = absorb(state, omega_t, params)
    return state.replace(w=_zeros(params), start=params, key=key)


def predict(state: State, x: jax.Array, task_id=None) -> jax.Array:
    """Logits float32 [B, C] (all classes; the loop masks for task-IL)."""
    del task_id
    out, _ = common.forward(state.net, state.net.params, state.net.batch_stats, x, train=False)
    return out


def memory_bytes(state: State) -> dict:
    """Bytes of the model, of the penalty's stored arrays (anchors and Omegas
    per slot, and SI's path integral and start point) and of the hold-out
    buffer."""
    pb = common.param_bytes(state.net.params)
    extra = 2 * state.static.slots + (2 if state.static.kind == "si" else 0)
    buf = int(state.val_x.size * state.val_x.dtype.itemsize + state.val_y.size * 4)
    return {"model": pb, "regularizer": extra * pb, "buffer": buf}


def result_extras(state: State) -> dict:
    """The importance options in effect and the epochs trained in the last
    task (results.json "extra")."""
    static = state.static
    return {"reg": {"kind": static.kind, "ewc_mode": static.ewc_mode if static.kind == "ewc" else None,
                    "mas_scale": static.mas_scale if static.kind == "mas" else None,
                    "si_clip": static.si_clip if static.kind == "si" else None,
                    "val_permille": static.val_permille, "patience": static.patience,
                    "last_task_epochs": int(np.asarray(state.epochs))}}


def _capabilities(config):
    from clj.methods.api import Capabilities

    r = sections.merged(baselines_section.REG, config)
    holdout = float(r["val_fraction"]) > 0
    # step_info: the hold-out buffer and the epoch ends need the in-task step, epoch length and
    # task size; early_stop: with patience the task ends early (metrics["task_done"]).
    return Capabilities(static_task_info=True, step_info=holdout, early_stop=holdout and int(r["patience"]) > 0)


def make_spec(kind: str):
    """The :class:`~clj.methods.api.MethodSpec` of ``ewc``, ``si`` or ``mas``."""
    import functools

    from clj.methods.api import MethodSpec

    return MethodSpec(init=functools.partial(init, kind=kind), begin_task=begin_task,
                      train_step=train_step, end_task=end_task, predict=predict,
                      capabilities=_capabilities, memory_bytes=memory_bytes, result_extras=result_extras,
                      task_steps=task_steps, sweepable=SWEEPABLE)
