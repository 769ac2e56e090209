"""Pieces every method shares: the model/optimizer state, forward pass with
BatchNorm statistics, losses, the learning-rate schedule inside a task.

A method's State is a ``flax.struct.dataclass``.  Its array fields are the
whole run (a checkpoint of them resumes it); its static fields (the Flax
module, the optax transformation, the hyperparameters) are hashable
descriptions of *how* to compute, fixed for the run, in the manner of
``flax.training.train_state.TrainState``.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from clj.data.augment import Augment

PyTree = Any


@struct.dataclass
class TaskInfo:
    """What the loop tells a method at a task boundary.

    For a method whose spec declares ``static_task_info`` every field is a host
    value (Python ints, a tuple of labels, a numpy mask) and the boundary
    functions are compiled per task.  Otherwise ``task_id``, ``num_steps``,
    ``steps_per_epoch`` are traced int32 [] and ``class_mask`` a traced
    bool [C], ``classes`` is ``()``, and the boundary functions compile once
    for the run.

    Attributes:
      task_id: index of the task starting (or ending).
      classes: labels of the task's classes (host tuple; ``()`` when traced).
      num_steps: train steps the loop will run in this task.
      steps_per_epoch: steps of one pass over the task's training data.
      num_classes: classes in the whole scenario (host int).
      class_mask: bool [C], True for the task's classes (None if not given).
    """

    task_id: Any
    classes: tuple = struct.field(pytree_node=False)
    num_steps: Any
    steps_per_epoch: Any
    num_classes: int = struct.field(pytree_node=False)
    class_mask: Any = None


@dataclasses.dataclass(frozen=True)
class OptimSpec:
    """Optimizer and in-task learning-rate schedule (hashable).

    ``schedule``: ``constant``; ``cosine`` (from ``lr`` to 0 over the task's
    steps); ``multistep`` (multiply by ``gamma`` at each epoch in
    ``milestones``, PyCIL's MultiStepLR).  The optimizer state is reset at
    every task start (Mammoth and PyCIL build a new optimizer per task).
    """

    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    schedule: str = "constant"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1

    def make(self) -> optax.GradientTransformation:
        """An optax transformation with an injectable ``learning_rate``."""
        def factory(learning_rate):
            parts = []
            if self.weight_decay > 0 and self.name != "adamw":
                parts.append(optax.add_decayed_weights(self.weight_decay))
            if self.name == "sgd":
                parts.append(optax.sgd(learning_rate, momentum=self.momentum or None))
            elif self.name == "adam":
                parts.append(optax.adam(learning_rate))
            elif self.name == "adamw":
                parts.append(optax.adamw(learning_rate, weight_decay=self.weight_decay))
            else:
                raise ValueError(f"optim.name={self.name!r} is unknown; valid: sgd, adam, adamw.")
            return optax.chain(*parts)

        return optax.inject_hyperparams(factory)(learning_rate=self.lr)

    def lr_at(self, task_step: jax.Array, task_steps: jax.Array, steps_per_epoch: jax.Array,
              base_lr: jax.Array | None = None) -> jax.Array:
        """Learning rate (float32 []) at step ``task_step`` of a task.

        ``base_lr`` (float32 [], e.g. a swept value carried in the State)
        replaces ``self.lr`` as the schedule's starting rate."""
        t = task_step.astype(jnp.float32)
        lr0 = jnp.asarray(self.lr if base_lr is None else base_lr, jnp.float32)
        if self.schedule == "constant":
            return lr0
        if self.schedule == "cosine":
            frac = t / jnp.maximum(task_steps.astype(jnp.float32), 1.0)
            return lr0 * 0.5 * (1.0 + jnp.cos(math.pi * frac))
        if self.schedule == "multistep":
            epoch = jnp.floor(t / jnp.maximum(steps_per_epoch.astype(jnp.float32), 1.0))
            n = sum((epoch >= m).astype(jnp.float32) for m in self.milestones) if self.milestones else 0.0
            return lr0 * jnp.power(self.gamma, n)
        raise ValueError(f"optim.schedule={self.schedule!r} is unknown; valid: constant, cosine, multistep.")


def optim_spec_from_config(cfg) -> OptimSpec:
    return OptimSpec(name=cfg.name, lr=float(cfg.lr), momentum=float(cfg.get("momentum", 0.0)),
                     weight_decay=float(cfg.get("weight_decay", 0.0)),
                     schedule=cfg.get("schedule", "constant"),
                     milestones=tuple(int(m) for m in cfg.get("milestones", ())),
                     gamma=float(cfg.get("gamma", 0.1)))


def augment_from_config(cfg, scenario) -> Augment:
    """The scenario's transform from ``config.augment`` (its ``preset``
    applied: :func:`clj.data.augment_presets.resolve_augment`).

    ``augment.normalization="dataset"`` normalises with the scenario's own
    ``mean`` / ``std``; ``"cifar100"`` / ``"imagenet"`` with the references'
    constants (:data:`clj.data.augment.NORMALIZATION_STATS`).

    Raises:
      clj.errors.ConfigError: an unknown preset or normalisation, a preset
        with a field it sets changed, or reference constants for images
        that do not have three channels.
    """
    from clj.data.augment_presets import resolve_augment
    from clj.data.augment import NORMALIZATION_STATS
    from clj.errors import ConfigError

    r = resolve_augment(cfg)
    mean, std = tuple(float(m) for m in scenario.mean), tuple(float(s) for s in scenario.std)
    norm = r["normalization"]
    if norm != "dataset":
        if norm not in NORMALIZATION_STATS:
            raise ConfigError(f"augment.normalization={norm!r} is unknown; valid: dataset, "
                              f"{', '.join(NORMALIZATION_STATS)}.")
        mean, std = NORMALIZATION_STATS[norm]
        if len(scenario.mean) != len(mean):
            raise ConfigError(f"augment.normalization={norm!r} has {len(mean)} channels, the images of "
                              f"{scenario.dataset_name} {len(scenario.mean)}; use normalization='dataset'.")
    return Augment(mean=mean, std=std, crop_pad=int(r["crop_pad"]), flip=bool(r["flip"]),
                   normalize=bool(r["normalize"]), resized_crop=int(r["resized_crop"]),
                   crop_scale=r["crop_scale"], crop_ratio=r["crop_ratio"], brightness=float(r["brightness"]),
                   eval_resize=int(r["eval_resize"]), eval_crop=int(r["eval_crop"]))


@struct.dataclass
class ModelState:
    """Params, BatchNorm statistics and optimizer state of one network.

    Attributes:
      params: the network's parameters.
      batch_stats: BatchNorm running statistics ({} when the model has none).
      opt_state: optax state (reset at each task start).
      step: int32 [] steps taken in the whole run.
      task_step: int32 [] steps taken in the current task.
      task_steps: int32 [] steps the current task will take.
      steps_per_epoch: int32 [] steps of one epoch of the current task.
    """

    params: PyTree
    batch_stats: PyTree
    opt_state: PyTree
    step: jax.Array
    task_step: jax.Array
    task_steps: jax.Array
    steps_per_epoch: jax.Array
    model: nn.Module = struct.field(pytree_node=False)
    optim: OptimSpec = struct.field(pytree_node=False)

    @property
    def tx(self) -> optax.GradientTransformation:
        return self.optim.make()


def init_model_state(rng: jax.Array, model: nn.Module, optim: OptimSpec,
                     image_shape: tuple[int, ...]) -> ModelState:
    """Initialises a network on a dummy float32 [1, H, W, C] input."""
    variables = model.init(rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
    params = variables["params"]
    batch_stats = variables.get("batch_stats", {})
    tx = optim.make()
    z = jnp.zeros((), jnp.int32)
    return ModelState(params=params, batch_stats=batch_stats, opt_state=tx.init(params), step=z,
                      task_step=z, task_steps=z, steps_per_epoch=jnp.ones((), jnp.int32),
                      model=model, optim=optim)


def begin_task_model(ms: ModelState, task: TaskInfo) -> ModelState:
    """Resets the optimizer state and the in-task step counters."""
    return ms.replace(opt_state=ms.tx.init(ms.params), task_step=jnp.zeros((), jnp.int32),
                      task_steps=jnp.asarray(task.num_steps, jnp.int32),
                      steps_per_epoch=jnp.maximum(jnp.asarray(task.steps_per_epoch, jnp.int32), 1))


def forward(ms: ModelState, params: PyTree, batch_stats: PyTree, x: jax.Array, train: bool,
            return_features: bool = False):
    """Runs the model; returns ``(out, new_batch_stats)``.

    In training mode the BatchNorm statistics of this call's batch update the
    running averages (each call is its own BatchNorm batch, as in PyTorch).
    ``out`` is the logits, or ``(logits, features)`` with ``return_features``.
    """
    variables = {"params": params}
    has_bn = bool(jax.tree_util.tree_leaves(batch_stats))
    if has_bn:
        variables["batch_stats"] = batch_stats
    kw = {"return_features": True} if return_features else {}
    if train and has_bn:
        out, upd = ms.model.apply(variables, x, train=True, mutable=["batch_stats"], **kw)
        return out, upd["batch_stats"]
    return ms.model.apply(variables, x, train=train, **kw), batch_stats


def apply_gradients(ms: ModelState, grads: PyTree, batch_stats: PyTree,
                    update_mask: PyTree | None = None, base_lr: jax.Array | None = None) -> ModelState:
    """One optimizer step at the scheduled learning rate, through the one
    masked update (:func:`clj.sparse.masked_optimizer`).

    ``update_mask`` (bool pytree with the structure of params, leaves
    broadcastable to theirs; None = every weight trains) freezes the weights
    where it is False: their gradient, moments, decay and update are exactly
    zero, so they stay bit-identical (head and branch freezing of iCaRL, WA,
    AKR, MEMO, DER).  ``base_lr`` (float32 []) replaces ``optim.lr`` (a swept
    learning rate)."""
    from clj.sparse import masked_optimizer

    lr = ms.optim.lr_at(ms.task_step, ms.task_steps, ms.steps_per_epoch, base_lr)
    opt_state = ms.opt_state
    opt_state = opt_state._replace(hyperparams={**opt_state.hyperparams, "learning_rate": lr})
    updates, opt_state = masked_optimizer(ms.tx).update(grads, opt_state, ms.params, update_mask=update_mask)
    params = optax.apply_updates(ms.params, updates)
    return ms.replace(params=params, batch_stats=batch_stats, opt_state=opt_state,
                      step=ms.step + 1, task_step=ms.task_step + 1)


def cross_entropy(logits: jax.Array, labels: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Mean softmax cross-entropy, float32 []; ``weights`` [B] (0/1) select
    the rows that count (mean over the selected rows)."""
    ce = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), labels)
    if weights is None:
        return ce.mean()
    w = weights.astype(jnp.float32)
    return jnp.sum(ce * w) / jnp.maximum(jnp.sum(w), 1.0)


def masked_mse(pred: jax.Array, target: jax.Array, weights: jax.Array | None = None) -> jax.Array:
    """Mean squared error averaged over all entries of the selected rows."""
    se = jnp.mean((pred.astype(jnp.float32) - target.astype(jnp.float32)) ** 2, axis=-1)
    if weights is None:
        return se.mean()
    w = weights.astype(jnp.float32)
    return jnp.sum(se * w) / jnp.maximum(jnp.sum(w), 1.0)


def safe_norm(v: jax.Array, axis: int = -1) -> jax.Array:
    """Euclidean norm of ``v`` along ``axis`` (float32) whose gradient at a
    zero vector is 0, as PyTorch's ``torch.norm`` backward gives, instead of
    the NaN of ``d sqrt(x) / dx`` at 0 (``jnp.linalg.norm``).

    A distance between two equal vectors (a new network's features and its
    old copy's at the first step of a task) is exactly 0 whenever both are
    computed by the same ops in the same order; its gradient must not poison
    the step.

    Args:
      v: float [..., D, ...].
      axis: the axis summed over.

    Returns:
      float32 ``v.shape`` without ``axis``, >= 0.
    """
    v = v.astype(jnp.float32)
    sq = jnp.sum(v * v, axis=axis)
    pos = sq > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def l2_normalize(v: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
    """``v / max(||v||, eps)`` along ``axis`` (PyTorch's ``F.normalize``),
    float32, with a finite gradient (0) at a zero vector.

    Args:
      v: float [..., D, ...].
      axis: the normalised axis.
      eps: the smallest divisor.

    Returns:
      float32 of ``v.shape``; zero vectors stay 0.
    """
    v = v.astype(jnp.float32)
    return v / jnp.sqrt(jnp.maximum(jnp.sum(v * v, axis=axis, keepdims=True), eps * eps))


def accuracy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return jnp.mean((jnp.argmax(logits, -1) == labels).astype(jnp.float32))


def model_from_config(cfg, num_classes: int) -> nn.Module:
    """The backbone + head named by ``config.model`` (``cfg``), computing in
    ``cfg.dtype`` (:func:`clj.models.compute_dtype`).

    Raises:
      ValueError: an unknown ``cfg.name``; clj.errors.ConfigError (a
        ValueError): a bad ``cfg.dtype``.
    """
    from clj.models import compute_dtype, get_model

    kwargs = {k: (tuple(v) if isinstance(v, list) else v) for k, v in cfg.items() if k != "name"}
    if "dtype" in kwargs:
        kwargs["dtype"] = compute_dtype(cfg)
    return get_model(cfg.name, num_classes, **kwargs)


def param_bytes(tree: PyTree) -> int:
    return int(sum(x.size * x.dtype.itemsize for x in jax.tree_util.tree_leaves(tree)))


Loss = Callable[..., tuple[jax.Array, Any]]


SEED_AXIS = "seeds"
"""Name of the loop's seed ``vmap`` axis, as seen inside ``train_step``."""


def any_seed(flag: jax.Array) -> jax.Array:
    """True where ``flag`` holds for at least one seed of the loop's seed ``vmap``.

    A ``lax.cond`` whose predicate differs per seed becomes a select under
    ``vmap`` and runs both branches every step.  A method whose rare branch is
    costly (SERENA's cell switch) conditions on ``any_seed(flag)``, an
    unbatched bool, and selects per seed inside the branch, so the branch runs
    only on steps where some seed needs it and every seed's result is the same
    as in a run of its own.

    Args:
      flag: bool [] (per seed).
    Returns:
      bool []: ``flag`` OR-ed over the seed axis
      (:data:`SEED_AXIS`); ``flag`` itself when called outside
      the loop's vmap (e.g. a direct ``jit`` of ``train_step``).
    """
    try:
        return jax.lax.psum(flag.astype(jnp.int32), SEED_AXIS) > 0
    except NameError:  # not under the loop's seed vmap
        return flag
