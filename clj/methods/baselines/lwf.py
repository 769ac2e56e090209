"""LwF: Learning without Forgetting.

Source: Li and Hoiem, "Learning without Forgetting", ECCV 2016 / TPAMI 2017,
Sec. 3 (Eq. 2-4): before a new task the old network's responses are
recorded; the new task is learned with its cross-entropy plus ``lambda_o``
times a distillation loss that keeps the outputs of the old classes close to
the recorded ones, both passed through a softmax at temperature ``T``
(the paper's ``lambda_o = 1``, ``T = 2``); a warm-up first trains only the
new outputs with the rest frozen.

The protocol is Mammoth's ``lwf`` model (the DER paper's LwF rows; class-IL
and task-IL with one shared head):

* at each task end a **frozen copy** of the network is kept (parameters and
  BatchNorm statistics); it is evaluated in inference mode on the
  **non-augmented** stream images;
* **warm-up** (``lwf.warmup``, from the second task on): before the task's
  training, ``train.epochs`` epochs of plain SGD at ``optim.lr`` update the
  head only, on the cross-entropy over the new task's classes, features in
  inference mode (Mammoth's ``begin_task``).  It changes no old-class output,
  so the copy's old-class logits are those Mammoth records after its warm-up.
  Here it runs as the task's first steps (:func:`task_steps` doubles the
  task's steps), the model's optimizer and step counters untouched;
* each training step: cross-entropy over the classes seen so far (later
  classes' logits masked) plus ``lwf.alpha`` times

      KD = -mean_i sum_{c old} q_old[i, c] log q_new[i, c],
      q = softmax(logits[:, old] / T)

  (Mammoth's ``modified_kl_div`` of the temperature-smoothed softmaxes; no
  ``T^2`` factor); zero in the first task.

Mammoth's Seq-MNIST run also adds ``wd_reg * sum(theta^2)`` (0.0005) to the
loss, which is plain SGD weight decay ``2 * wd_reg``: ``optim.weight_decay``
in ``configs/lwf_mnist.py``.

Config block ``config.lwf`` (:data:`DEFAULTS`, :data:`DOCS`): ``alpha``,
``softmax_temp``, ``warmup``.
"""
from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import optax
from flax import struct

from clj.data.augment import Augment
from clj.methods import common, sections
from clj.methods.baselines.section import LWF, LWF_KINDS
from clj.methods.common import ModelState, TaskInfo

DEFAULTS, DOCS = LWF.defaults, LWF.docs
KINDS = LWF_KINDS
_NEG = -1e9


@dataclasses.dataclass(frozen=True)
class Static:
    """Static hyperparameters (hashable).

    Attributes:
      alpha: weight of the distillation term.
      temp: distillation temperature T.
      warmup: run the head warm-up before each task >= 1.
      augment: the transform (the copy sees its evaluation form).
    """

    alpha: float = 1.0
    temp: float = 2.0
    warmup: bool = True
    augment: Augment = Augment()


@struct.dataclass
class State:
    """LwF state.

    Attributes:
      net: the network being trained.
      old_params, old_batch_stats: the frozen copy taken at the last task end.
      seen: bool [C], classes of the tasks up to the current one.
      old: bool [C], classes of the tasks before the current one (the
        distillation's classes).
      task_mask: bool [C], the current task's classes (the warm-up's).
      warm_steps: int32 [], warm-up steps of the current task (0 in the first).
      phase_step: int32 [], steps taken in the current task (warm-up included).
      swept: the sweepable hyperparameters (:data:`SWEEPABLE`) as float32 []
        arrays, so a grid of them is a vmapped axis (``optim.lr`` is also the
        warm-up's rate).
      static: the static (hashable) hyperparameters of the run (``alpha`` and ``temp`` there
        are the config's values, kept for the record; the step reads
        ``swept``).
    """

    net: ModelState
    old_params: object
    old_batch_stats: object
    seen: jax.Array
    old: jax.Array
    task_mask: jax.Array
    warm_steps: jax.Array
    phase_step: jax.Array
    swept: dict
    static: Static = struct.field(pytree_node=False)


SWEEPABLE = ("optim.lr", "lwf.alpha", "lwf.softmax_temp")
"""Config fields carried as arrays in ``State.swept`` (no shape depends on them)."""


def init(rng: jax.Array, config, scenario) -> State:
    """A fresh State: network from ``config.model``, optimizer from
    ``config.optim``, options from ``config.lwf`` (module doc).

    Raises:
      ConfigError: a bad ``config.lwf`` block or scenario kind.
    """
    v = sections.block(config, LWF)
    static = Static(alpha=float(v["alpha"]), temp=float(v["softmax_temp"]), warmup=bool(v["warmup"]),
                    augment=common.augment_from_config(config.augment, scenario))
    model = common.model_from_config(config.model, scenario.num_classes)
    net = common.init_model_state(rng, model, common.optim_spec_from_config(config.optim), scenario.image_shape)
    none = jnp.zeros((scenario.num_classes,), bool)
    z = jnp.zeros((), jnp.int32)
    swept = {"optim.lr": jnp.float32(config.optim.lr), "lwf.alpha": jnp.float32(static.alpha),
             "lwf.softmax_temp": jnp.float32(static.temp)}
    return State(net=net, old_params=net.params, old_batch_stats=net.batch_stats, seen=none, old=none,
                 task_mask=none, warm_steps=z, phase_step=z, swept=swept, static=static)


def task_steps(config, n_examples: int, batch_size: int, task_index: int, state_info=None) -> int:
    """Steps of task ``task_index``: ``ceil(epochs * n / B)`` (``train.init_epochs``
    for the first task when set), twice that from the second task on with the
    warm-up (its ``train.epochs`` epochs come first)."""
    epochs = float(config.train.epochs)
    init_epochs = float(config.train.get("init_epochs", 0) or 0)
    if task_index == 0 and init_epochs > 0:
        epochs = init_epochs
    steps = max(1, math.ceil(epochs * int(n_examples) / int(batch_size)))
    warm = bool(sections.block(config, LWF)["warmup"]) and task_index > 0
    return 2 * steps if warm else steps


def begin_task(state: State, task: TaskInfo) -> State:
    """Resets the optimizer, adds the task's classes to ``seen`` and sets the
    warm-up length (half the task's steps from the second task on)."""
    tid = jnp.asarray(task.task_id, jnp.int32)
    warm = jnp.where((tid > 0) & state.static.warmup, jnp.asarray(task.num_steps, jnp.int32) // 2, 0)
    return state.replace(net=common.begin_task_model(state.net, task), seen=state.seen | task.class_mask,
                         task_mask=jnp.asarray(task.class_mask, bool), warm_steps=warm,
                         phase_step=jnp.zeros((), jnp.int32))


def end_task(state: State, task_data) -> State:
    """Keeps a frozen copy of the network; the classes seen so far become the
    old classes of the next task."""
    del task_data
    return state.replace(old_params=state.net.params, old_batch_stats=state.net.batch_stats, old=state.seen)


def distillation(new_logits: jax.Array, old_logits: jax.Array, old: jax.Array, temp) -> jax.Array:
    """LwF's distillation loss on the old classes (module doc; Li & Hoiem Eq. 2).

    Args:
      new_logits: float [B, C], the network being trained.
      old_logits: float [B, C], the frozen copy on the same images.
      old: bool [C], the old classes (the columns distilled).
      temp: T > 0 (a float or float32 []).

    Returns:
      float32 []: ``-mean_i sum_{c old} q_old log q_new`` with ``q =
      softmax(logits[:, old] / T)``; 0 when ``old`` is empty.
    """
    t = jnp.float32(temp)
    z_new = jnp.where(old[None, :], new_logits.astype(jnp.float32) / t, _NEG)
    z_old = jnp.where(old[None, :], jax.lax.stop_gradient(old_logits).astype(jnp.float32) / t, _NEG)
    q_old = jax.nn.softmax(z_old, axis=-1)
    kd = -jnp.mean(jnp.sum(jnp.where(old[None, :], q_old * jax.nn.log_softmax(z_new, axis=-1), 0.0), axis=-1))
    return jnp.where(jnp.any(old), kd, 0.0)


def _warmup_update(state: State, batch: dict):
    """One warm-up step: plain SGD on the head, cross-entropy over the
    current task's classes, features in inference mode, at the State's
    ``optim.lr``."""
    net = state.net

    def loss_fn(head):
        params = {**net.params, "head": head}
        logits, _ = common.forward(net, params, net.batch_stats, batch["x"], train=False)
        return common.cross_entropy(jnp.where(state.task_mask[None, :], logits, _NEG), batch["y"])

    loss, g = jax.value_and_grad(loss_fn)(net.params["head"])
    sgd = optax.sgd(state.swept["optim.lr"])  # stateless: no momentum
    upd, _ = sgd.update(g, sgd.init(g))
    return {**net.params, "head": optax.apply_updates(net.params["head"], upd)}, loss


def train_step(state: State, batch: dict, rng: jax.Array):
    """One LwF step: a head warm-up step while ``phase_step < warm_steps``,
    else CE over the seen classes + ``alpha`` KD against the frozen copy
    (module doc).

    Args:
      state: the State.
      batch: ``x`` float32 [B, H, W, C] augmented images, ``x_raw`` uint8
        [B, H, W, C] the same before augmentation, ``y`` int32 [B].
      rng: unused (the step is deterministic).

    Returns:
      (new State, metrics: ``loss``, ``loss_ce``, ``loss_kd``, ``warmup``
      (1 on a warm-up step), ``acc``).
    """
    del rng
    static, net = state.static, state.net
    x_old = static.augment(batch["x_raw"], None, train=False)
    old_logits, _ = common.forward(net, state.old_params, state.old_batch_stats, x_old, train=False)

    def loss_fn(params):
        logits, bs = common.forward(net, params, net.batch_stats, batch["x"], train=True)
        ce = common.cross_entropy(jnp.where(state.seen[None, :], logits, _NEG), batch["y"])
        kd = distillation(logits, old_logits, state.old, state.swept["lwf.softmax_temp"])
        return ce + state.swept["lwf.alpha"] * kd, (bs, logits, ce, kd)

    (loss, (bs, logits, ce, kd)), grads = jax.value_and_grad(loss_fn, has_aux=True)(net.params)
    trained = common.apply_gradients(net, grads, bs, base_lr=state.swept["optim.lr"])
    warming = state.phase_step < state.warm_steps
    if static.warmup:
        warm_params, warm_loss = _warmup_update(state, batch)
        warmed = net.replace(params=warm_params)
        new_net = jax.tree_util.tree_map(lambda a, b: jnp.where(warming, a, b), warmed, trained)
        loss = jnp.where(warming, warm_loss, loss)
    else:
        new_net = trained
    metrics = {"loss": loss, "loss_ce": ce, "loss_kd": kd, "warmup": warming.astype(jnp.float32),
               "acc": common.accuracy(logits, batch["y"])}
    return state.replace(net=new_net, phase_step=state.phase_step + 1), metrics


def predict(state: State, x: jax.Array, task_id: jax.Array | None = None) -> jax.Array:
    """Logits float32 [B, C] of normalised x float32 [B, H, W, C] (BN in eval
    mode); the loop masks them for class-IL / task-IL scoring."""
    del task_id
    logits, _ = common.forward(state.net, state.net.params, state.net.batch_stats, x, train=False)
    return logits


def memory_bytes(state: State) -> dict:
    """Bytes of the model and of its frozen copy (float32 parameters)."""
    pb = common.param_bytes(state.net.params)
    return {"model": pb, "teacher": common.param_bytes(state.old_params)}


def _spec():
    from clj.methods.api import MethodSpec

    return MethodSpec(init=init, begin_task=begin_task, train_step=train_step, end_task=end_task,
                      predict=predict, memory_bytes=memory_bytes, task_steps=task_steps,
                      sweepable=SWEEPABLE)


SPEC = _spec()
