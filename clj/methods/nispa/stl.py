"""STL: single-task learning, one sparse network per task (the baseline of
NISPA, Gurbuz & Dovrolis, ICML 2022, as the authors' ``Baselines/STL``
scripts run it; ``docs/nispa.md``, "STL").

Every task gets its own network of NISPA's architecture with a fixed random
connection mask; tasks share no weight, so nothing is forgotten and nothing is
transferred.  Two variants (registry names):

* ``stl``: each task's network has NISPA's density in every sparse layer;
* ``stl_iso``: NISPA's connection budget split evenly over the tasks: each
  sparse layer of NISPA's network has ``K = count(density, n)`` connections,
  and task t gets ``K // T`` of them, plus one for the first ``K % T`` tasks,
  so the counts over all tasks add up to exactly ``K`` (the authors' scripts
  use prune 96 / 98 / 99.5 % = 1 - density / T on EF-MNIST, CIFAR-10,
  CIFAR-100).

As in the authors' code the first conv layer stays dense in both variants,
biases are never masked, each task's network starts from its own fresh
initialisation, Adam is re-created for each task, the logits are multiplied by
the task's 0/1 class mask in the loss, and the network of the epoch with the
best hold-out accuracy (strictly better than every earlier epoch) is the one
kept.

State layout: every parameter and mask has a leading task axis [T, ...] of
fixed size; a step updates row ``task_id`` only (through the masked update of
:func:`clj.sparse.masked_optimizer`, with a one-network Adam state), so every
other task's parameters stay bit-identical.  ``predict`` runs the T networks
and gives class c the logit of the network of c's task; the task-IL
evaluation, which reads only the task's classes, therefore scores each task
with its own network.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from clj.data.augment import Augment
from clj.errors import ConfigError
from clj.methods import common, sections
from clj.methods.common import TaskInfo
from clj.methods.nispa import holdout_epochs as he
from clj.methods.nispa import section as nispa_section
from clj.methods.nispa import units as nu
from clj.models.nispa_nets import LayerSpec
from clj.models.registry import get_family_model
from clj.sparse import apply_masks, count_for, masked_optimizer, masks_nbytes, random_regrow_count

PyTree = Any
VARIANTS = ("stl", "stl_iso")


@dataclasses.dataclass(frozen=True)
class Static:
    """Static hyperparameters (hashable).

    Attributes:
      model: the Flax backbone (:mod:`clj.models.nispa_nets`).
      specs: unit-level description of every weight layer (``density`` =
        NISPA's density of the layer).
      counts: per layer, the connection count (unit-matrix entries) of each
        task's mask, a tuple of T ints (``None`` for a dense layer).
      class_task: the task of every class (tuple of C ints).
      num_classes, num_tasks: of the scenario.
      iso: the iso-parameter variant.
      lr: Adam's learning rate.
      val_permille, val_cap, chunk: hold-out share (1/1000), buffer capacity,
        evaluation chunk.
      augment: the evaluation transform (uint8 -> float32).
      task_il_rule: 'multiply' (the authors' code) or 'restrict'.
    """

    model: nn.Module
    specs: tuple[LayerSpec, ...]
    counts: tuple
    class_task: tuple
    num_classes: int
    num_tasks: int
    iso: bool = False
    lr: float = 0.01
    val_permille: int = 100
    val_cap: int = 1
    chunk: int = 1
    augment: Augment = Augment()
    task_il_rule: str = "multiply"

    @property
    def tx(self) -> optax.GradientTransformationExtraArgs:
        """Adam (no weight decay) through the one masked update."""
        return masked_optimizer(optax.adam(self.lr))


@struct.dataclass
class State:
    """STL's State (arrays but ``static``).

    Attributes:
      params: layer -> {"kernel": float32 [T, ...], "bias": float32 [T, ...]}:
        every task's network (absent connections exactly 0).
      conn: layer -> bool [T, rows, cols]: every task's unit-level connection
        matrix (:mod:`clj.methods.nispa.units`; fixed for the run).
      opt_state: Adam's state for one network (the current task's).
      best_params, best_acc, have_best: the best-epoch snapshot of the current
        task's network (one network) and its hold-out accuracy (percent).
      task_id: int32 []; class_mask: float32 [C], 1 at the task's classes.
      val_x, val_y, val_n: the hold-out buffer.
    """

    params: PyTree
    conn: dict
    opt_state: PyTree
    best_params: PyTree
    best_acc: jax.Array
    have_best: jax.Array
    task_id: jax.Array
    class_mask: jax.Array
    val_x: jax.Array
    val_y: jax.Array
    val_n: jax.Array
    static: Static = struct.field(pytree_node=False)


# ---------------------------------------------------------------- helpers
def row(tree: PyTree, t: jax.Array) -> PyTree:
    """Row ``t`` (int32 []) of every leaf of a task-stacked pytree."""
    return jax.tree_util.tree_map(lambda a: a[t], tree)


def set_row(tree: PyTree, t: jax.Array, new: PyTree) -> PyTree:
    """``tree`` with row ``t`` of every leaf replaced by ``new``'s leaf; every
    other row is the same array data."""
    return jax.tree_util.tree_map(lambda a, n: a.at[t].set(n), tree, new)


def full_masks(static: Static, params: PyTree, conn: dict) -> PyTree:
    """One network's params-shaped bool masks (kernels: expanded ``conn``,
    biases all True)."""
    return {s.name: {"kernel": nu.expand(s, conn[s.name], params[s.name]["kernel"].shape),
                     "bias": jnp.ones(params[s.name]["bias"].shape, bool)} for s in static.specs}


def forward(static: Static, params: PyTree, conn: dict, x: jax.Array) -> jax.Array:
    """Logits float32 [B, C] of one task's network (``params``/``conn`` of
    one row) on float32 x [B, ...]."""
    return static.model.apply({"params": apply_masks(params, full_masks(static, params, conn))}, x)[0]


def task_counts(n: int, density: float, num_tasks: int, iso: bool) -> tuple:
    """Connections of one layer in each task's network (tuple of T ints).

    ``iso=False``: ``count_for(density, n)`` for every task.  ``iso=True``:
    NISPA's count ``K = count_for(density, n)`` split over the tasks, ``K //
    T`` each plus one for the first ``K % T`` tasks (sum exactly K); a task
    gets at least one connection.
    """
    k = count_for(density, n)
    if not iso:
        return (k,) * num_tasks
    q, r = divmod(k, num_tasks)
    return tuple(max(1, q + (1 if t < r else 0)) for t in range(num_tasks))


def initial_connections(static: Static, key: jax.Array, mask_init: str) -> dict:
    """Every task's random unit-level connection matrices (bool [T, rows,
    cols] per layer): exact counts (:func:`task_counts`) or Bernoulli draws
    at ``count / (rows * cols)`` (the authors' ``random_prune``); dense
    layers all True."""
    conn = {}
    T = static.num_tasks
    for s, cnt, mk in zip(static.specs, static.counts, jax.random.split(key, len(static.specs))):
        shp = (s.rows, s.cols)
        keys = jax.random.split(mk, T)
        if cnt is None:
            conn[s.name] = jnp.ones((T, *shp), bool)
        elif mask_init == "bernoulli":
            d = jnp.asarray([c / (s.rows * s.cols) for c in cnt], jnp.float32)
            conn[s.name] = jax.vmap(lambda k, p: jax.random.bernoulli(k, p, shp))(keys, d)
        else:
            ks = jnp.asarray(cnt, jnp.int32)
            conn[s.name] = jax.vmap(lambda k, c: random_regrow_count(k, jnp.zeros(shp, bool), c))(keys, ks)
    return conn


# ---------------------------------------------------------------- protocol
def init(rng: jax.Array, config, scenario, variant: str | None = None) -> State:
    """T fresh sparse networks of ``config.model`` (``nispa_mlp`` or
    ``nispa_conv``), each with its own initialisation and random mask
    (module doc), an empty hold-out buffer.  ``variant``: ``'stl'`` or
    ``'stl_iso'`` (None: ``config.method`` when it is one of them, else
    ``'stl'``).

    Raises:
      ConfigError: an unknown variant or a bad ``config.stl`` value.
    """
    if variant is None:
        variant = config.method if config.get("method") in VARIANTS else "stl"
    if variant not in VARIANTS:
        raise ConfigError(f"stl variant={variant!r} is unknown; valid: {', '.join(VARIANTS)}.")
    v = sections.block(config, nispa_section.STL)
    density = float(v["density"])
    name = config.model.name
    kw = {k: (tuple(x) if isinstance(x, (list, tuple)) else x) for k, x in config.model.items() if k != "name"}
    model = get_family_model(name, scenario.num_classes, "nispa", **kw)
    shape = scenario.image_shape
    specs = model.layer_specs(shape, density) if name == "nispa_mlp" else \
        model.layer_specs(shape, density, dense_first=bool(v["dense_first_conv"]))
    T, C = scenario.num_tasks, scenario.num_classes
    iso = variant == "stl_iso"
    counts = tuple(None if s.density >= 1.0 else task_counts(s.rows * s.cols, s.density, T, iso) for s in specs)
    class_task = [0] * C
    for t, task in enumerate(scenario.tasks):
        for c in task.classes:
            class_task[int(c)] = t
    permille = int(round(1000 * float(v["val_fraction"])))
    val_cap, chunk = he.val_capacity(scenario, permille, int(v["eval_chunk"]))
    static = Static(model=model, specs=specs, counts=counts, class_task=tuple(class_task), num_classes=C,
                    num_tasks=T, iso=iso, lr=float(config.optim.lr), val_permille=permille, val_cap=val_cap,
                    chunk=chunk, augment=common.augment_from_config(config.augment, scenario),
                    task_il_rule=str(v["task_il_rule"]))
    k_init, k_mask = jax.random.split(rng)
    x0 = jnp.zeros((1, *shape), jnp.float32)
    params = jax.vmap(lambda k: model.init(k, x0)["params"])(jax.random.split(k_init, T))
    params = {k: dict(p) for k, p in params.items()}
    conn = initial_connections(static, k_mask, str(v["mask_init"]))
    params = jax.vmap(lambda p, c: apply_masks(p, full_masks(static, p, c)))(params, conn)
    one = row(params, 0)
    f0, i0, b0 = jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32), jnp.zeros((), bool)
    return State(params=params, conn=conn, opt_state=static.tx.init(one), best_params=one, best_acc=f0,
                 have_best=b0, task_id=i0, class_mask=jnp.zeros((C,), jnp.float32),
                 val_x=jnp.zeros((val_cap, *shape), jnp.uint8), val_y=jnp.zeros((val_cap,), jnp.int32),
                 val_n=i0, static=static)


def begin_task(state: State, task: TaskInfo) -> State:
    """Selects task ``task.task_id``'s network, re-creates Adam for it, sets
    the class mask, empties the hold-out buffer and the best-epoch record."""
    t = jnp.asarray(task.task_id, jnp.int32)
    cur = row(state.params, t)
    f0, i0, b0 = jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32), jnp.zeros((), bool)
    return state.replace(task_id=t, class_mask=jnp.asarray(task.class_mask).astype(jnp.float32),
                         opt_state=state.static.tx.init(cur), best_params=cur, best_acc=f0, have_best=b0,
                         val_n=i0)


def val_accuracy(state: State, params: PyTree) -> jax.Array:
    """Hold-out accuracy (percent) of one network ``params`` of the current
    task (its mask), official output masking."""
    static = state.static
    c = row(state.conn, state.task_id)
    return he.masked_accuracy(lambda xb: forward(static, params, c, static.augment(xb, None, train=False)),
                              state.val_x, state.val_y, state.val_n, state.class_mask, static.chunk)


def train_step(state: State, batch: dict, rng: jax.Array):
    """One Adam step of the current task's network on the batch's training
    examples (hold-out examples buffered in the first epoch and masked out of
    the loss); at an epoch end, the best-epoch snapshot.

    Args:
      batch: ``x`` float32 [B, ...], ``x_raw`` uint8 [B, ...], ``y`` int32
        [B]; ``step``, ``steps_per_epoch``, ``task_size`` int32 [] (the loop's
        ``step_info``).
      rng: unused.

    Returns:
      (State, metrics ``loss``, ``acc`` (training examples)).
    """
    del rng
    static = state.static
    x, y = batch["x"], batch["y"]
    step, spe = batch["step"], batch["steps_per_epoch"]
    state, val = he.collect(state, batch, static.val_permille)
    t = state.task_id
    p, c = row(state.params, t), row(state.conn, t)
    tw = ~val

    def loss_fn(q):
        logits = forward(static, q, c, x) * state.class_mask
        return common.cross_entropy(logits, y, tw), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(p)
    updates, opt_state = static.tx.update(grads, state.opt_state, p, update_mask=full_masks(static, p, c))
    p = optax.apply_updates(p, updates)
    state = state.replace(params=set_row(state.params, t, p), opt_state=opt_state)

    def epoch_end(s):
        acc = val_accuracy(s, p)
        better = acc > s.best_acc
        return s.replace(best_params=jax.tree_util.tree_map(lambda a, b: jnp.where(better, a, b), p,
                                                            s.best_params),
                         best_acc=jnp.maximum(acc, s.best_acc), have_best=s.have_best | better)

    state = jax.lax.cond((step + 1) % spe == 0, epoch_end, lambda s: s, state)
    twf = tw.astype(jnp.float32)
    acc = jnp.sum((jnp.argmax(logits, -1) == y) * twf) / jnp.maximum(jnp.sum(twf), 1.0)
    return state, {"loss": loss, "acc": acc}


def end_task(state: State, task_data) -> State:
    """Keeps the best epoch's network as task ``task_id``'s (the last one if
    no epoch was scored).  ``task_data`` is unused."""
    del task_data
    t = state.task_id
    cur = row(state.params, t)
    keep = jax.tree_util.tree_map(lambda a, b: jnp.where(state.have_best, a, b), state.best_params, cur)
    return state.replace(params=set_row(state.params, t, keep))


def all_logits(state: State, x: jax.Array) -> jax.Array:
    """float32 [T, B, C]: every task's network on x [B, ...]."""
    static = state.static
    return jax.vmap(lambda p, c: forward(static, p, c, x))(state.params, state.conn)


def predict(state: State, x: jax.Array, task_id: jax.Array | None = None) -> jax.Array:
    """Logits float32 [B, C]: class c's logit from the network of c's task
    (module doc), so a task-IL prediction uses the task's network."""
    del task_id
    static = state.static
    own = jnp.arange(static.num_tasks)[:, None] == jnp.asarray(static.class_task)[None, :]   # [T, C]
    return jnp.sum(jnp.where(own[:, None, :], all_logits(state, x), 0.0), axis=0)


# ---------------------------------------------------------------- reporting
def connection_counts(state: State) -> dict:
    """layer -> list of T host ints: each task's connections in kernel
    elements."""
    return {s.name: [int(v) * s.ksize for v in np.asarray(jnp.sum(state.conn[s.name], axis=(1, 2)))]
            for s in state.static.specs}


def memory_bytes(state: State) -> dict:
    """Bytes of the T bit-packed masks, the hold-out buffer and the T dense
    float32 networks."""
    buf = sum(int(a.size * a.dtype.itemsize) for a in (state.val_x, state.val_y))
    return {"masks": masks_nbytes(state.conn), "buffer": buf, "model": common.param_bytes(state.params)}


def result_extras(state: State) -> dict:
    """Per task and layer connection counts, totals and the variant
    (results.json "extra")."""
    cc = connection_counts(state)
    return {"stl": {"iso": state.static.iso, "connections_per_task": cc,
                    "connections_total": {k: int(sum(v)) for k, v in cc.items()},
                    "nispa_density": {s.name: s.density for s in state.static.specs},
                    "task_il_rule": state.static.task_il_rule}}


def make_spec(variant: str = "stl"):
    """The MethodSpec of ``stl`` or ``stl_iso``.

    Raises:
      ConfigError: an unknown variant.
    """
    if variant not in VARIANTS:
        raise ConfigError(f"stl variant={variant!r} is unknown; valid: {', '.join(VARIANTS)}.")
    from clj.methods.api import Capabilities, MethodSpec

    def capabilities(config):
        return Capabilities(step_info=True, task_il_rule=str(sections.block(config, nispa_section.STL)
                                                               ["task_il_rule"]))

    return MethodSpec(init=functools.partial(init, variant=variant),
                      begin_task=begin_task, train_step=train_step, end_task=end_task, predict=predict,
                      capabilities=capabilities, memory_bytes=memory_bytes, result_extras=result_extras,
                      task_steps=he.task_steps)
