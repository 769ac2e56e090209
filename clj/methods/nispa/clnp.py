"""CLNP: Continual Learning via Neural Pruning (Golkar, Kagan & Cho, 2019,
arXiv 1903.04476), task-incremental, as the NISPA authors run it in their
``Baselines/CLNP`` scripts (``docs/nispa.md``, "CLNP").

One dense network (NISPA's MLP or ConvNet) learns every task.  Each task:

1. **L1 training of the free units.**  Adam (re-created per task, no weight
   decay) on the cross-entropy of the logits multiplied by the task's 0/1
   class mask plus ``l1_alpha`` times the sum of |parameter| over the whole
   network.  Weights and biases of earlier tasks' kept units are frozen (the
   one masked update, :func:`clj.sparse.masked_optimizer`).  The epoch with
   the best hold-out accuracy (strictly better) is kept.
2. **Pruning with graceful forgetting.**  Every hidden unit's average
   activation on the task's training data (summed over spatial positions for
   conv channels, after the pool for pooled layers) is computed once.  The
   threshold theta runs over ``0, step, 2 step, ...`` below ``upper``, the
   largest average activation of any layer the authors' network reports (the
   input pixels of the MLP, every hidden layer, the masked logits).  At each
   theta the kept units are those of earlier tasks plus those whose average
   activation is > theta; every connection from a unit that is not kept into
   a kept unit is cut (the outputs of the classes seen so far count as
   kept), and the pruned network is scored on the hold-out.  The search stops
   at the first theta whose pruned accuracy falls below the best epoch's
   minus ``m_perc`` points and takes the previous theta's selection; it also
   stops, taking this theta's selection, when a later task would keep no
   new unit.
3. **Freeze and re-initialise.**  The chosen connections are cut for good,
   every connection between kept units and every kept unit's bias is frozen,
   and every other weight is drawn afresh (Kaiming normal, fan_out, ReLU
   gain; biases 0).  Kept units then receive input only from kept units
   through frozen weights: later tasks cannot change earlier tasks' logits.

Unit sets are fixed-shape bool vectors per unit layer (hidden layers, then
the outputs), connections the unit-level matrices of
:mod:`clj.methods.nispa.units`; the threshold search is a ``lax.while_loop``
inside the jitted ``end_task``, so nothing recompiles per task except for the
task's data shape.

Deviations from the authors' code: the hold-out is chosen by a content hash
(as for NISPA); when every tried theta is acceptable (the authors' loop then
falls through without pruning and keeps its last-epoch network) or the first
one already fails (the authors' code crashes), the last acceptable selection,
or else theta = 0's, is used.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from clj.data.augment import Augment
from clj.data.holdout import is_val
from clj.methods import common, sections
from clj.methods.common import TaskInfo
from clj.methods.nispa import holdout_epochs as he
from clj.methods.nispa import section as nispa_section
from clj.methods.nispa import units as nu
from clj.models.nispa_nets import LayerSpec, reinit_kernel
from clj.models.registry import get_family_model
from clj.sparse import apply_masks, masked_optimizer, masks_nbytes

PyTree = Any


@dataclasses.dataclass(frozen=True)
class Static:
    """Static hyperparameters (hashable).

    Attributes:
      model: the Flax backbone (:mod:`clj.models.nispa_nets`), dense.
      specs: unit-level description of every weight layer.
      num_classes, num_tasks: of the scenario.
      lr: Adam's learning rate.
      l1_alpha: weight of the L1 penalty.
      m_perc: accuracy (points) pruning may cost (graceful forgetting).
      theta_step, max_thetas: the threshold grid and its static bound.
      val_permille, val_cap, chunk: hold-out share (1/1000), capacity,
        evaluation chunk.
      augment: the evaluation transform (uint8 -> float32).
      task_il_rule: 'multiply' (the authors' code) or 'restrict'.
    """

    model: nn.Module
    specs: tuple[LayerSpec, ...]
    num_classes: int
    num_tasks: int
    lr: float = 0.01
    l1_alpha: float = 1e-5
    m_perc: float = 0.5
    theta_step: float = 0.02
    max_thetas: int = 4096
    val_permille: int = 100
    val_cap: int = 1
    chunk: int = 1
    augment: Augment = Augment()
    task_il_rule: str = "multiply"

    @property
    def tx(self) -> optax.GradientTransformationExtraArgs:
        """Adam (no weight decay) through the one masked update."""
        return masked_optimizer(optax.adam(self.lr))

    @property
    def mlp(self) -> bool:
        """The network is the MLP (its reported activations include the input)."""
        return self.specs[0].kind == "dense"


@struct.dataclass
class State:
    """CLNP's State (arrays but ``static``).

    Attributes:
      params: the network (cut connections exactly 0).
      conn: layer -> bool [rows, cols] unit-level connection matrix (all True
        at the start; cuts only accumulate).
      kept: bool vectors of unit layers 1..L (hidden layers, then outputs):
        the units kept (frozen) by earlier tasks.
      opt_state: Adam's state (re-created per task).
      best_params, best_acc, have_best: the best-epoch snapshot.
      task_id: int32 []; class_mask: float32 [C]; seen: bool [C].
      val_x, val_y, val_n: the hold-out buffer.
      theta, val_acc_best, val_acc_pruned: float32 [T] per task: the chosen
        threshold, the best epoch's and the pruned network's hold-out
        accuracy (percent).
      new_units: int32 [T, hidden layers]: units kept by each task.
      key: PRNG key of the re-initialisations.
    """

    params: PyTree
    conn: dict
    kept: tuple
    opt_state: PyTree
    best_params: PyTree
    best_acc: jax.Array
    have_best: jax.Array
    task_id: jax.Array
    class_mask: jax.Array
    seen: jax.Array
    val_x: jax.Array
    val_y: jax.Array
    val_n: jax.Array
    theta: jax.Array
    val_acc_best: jax.Array
    val_acc_pruned: jax.Array
    new_units: jax.Array
    key: jax.Array
    static: Static = struct.field(pytree_node=False)


def _where(pred, a, b):
    return jax.tree_util.tree_map(lambda x, y: jnp.where(pred, x, y), a, b)


# ---------------------------------------------------------------- masks / forward
def full_masks(static: Static, params: PyTree, conn: dict) -> PyTree:
    """Params-shaped bool masks (kernels: expanded ``conn``; biases True)."""
    return {s.name: {"kernel": nu.expand(s, conn[s.name], params[s.name]["kernel"].shape),
                     "bias": jnp.ones(params[s.name]["bias"].shape, bool)} for s in static.specs}


def forward(static: Static, params: PyTree, conn: dict, x: jax.Array):
    """(logits float32 [B, C], hidden activations) of the network."""
    return static.model.apply({"params": apply_masks(params, full_masks(static, params, conn))}, x)


def with_input(static: Static, units: tuple) -> list:
    """Unit vectors of every unit layer, the input layer (always kept) first."""
    return [jnp.ones((static.specs[0].n_src,), bool)] + list(units)


def update_mask(static: Static, params: PyTree, conn: dict, kept: tuple) -> PyTree:
    """What may move: existing connections that are not between two kept
    units, and the biases of units that are not kept."""
    kf = with_input(static, kept)
    out = {}
    for l, s in enumerate(static.specs):
        fr = nu.frozen_matrix(s, kf[l], kf[l + 1])
        out[s.name] = {"kernel": nu.expand(s, conn[s.name] & ~fr, params[s.name]["kernel"].shape),
                       "bias": ~kf[l + 1]}
    return out


def cut(static: Static, conn: dict, kept: tuple) -> dict:
    """``conn`` without every connection from a unit that is not kept into a
    kept unit (``kept``: hidden layers then outputs)."""
    kf = with_input(static, kept)
    return {s.name: nu.drop(s, conn[s.name], kf[l], kf[l + 1])[0] for l, s in enumerate(static.specs)}


# ---------------------------------------------------------------- pruning
def kept_units(acts: tuple, theta: jax.Array, old: tuple) -> tuple:
    """The units kept at threshold ``theta``: those of earlier tasks
    (``old``) and those whose average activation (``acts``, float32 [n] per
    hidden layer) is strictly above ``theta``; units at or below it are
    pruned (freed for later tasks)."""
    return tuple(o | (a > theta) for a, o in zip(acts, old))


def num_thetas(upper: jax.Array, step: float, max_thetas: int) -> jax.Array:
    """int32 []: the length of ``numpy.arange(0, upper, step)`` (0 when
    upper <= 0), capped at ``max_thetas``."""
    n = jnp.ceil(jnp.maximum(upper, 0.0) / step).astype(jnp.int32)
    return jnp.minimum(n, max_thetas)


def threshold_search(acts: tuple, old: tuple, later_task: jax.Array, upper: jax.Array, worst: jax.Array,
                     pruned_accuracy: Callable, step: float, max_thetas: int):
    """The graceful-forgetting threshold search (module doc, step 2).

    Args:
      acts: float32 [n] per hidden layer, average activations.
      old: bool [n] per hidden layer, units kept by earlier tasks.
      later_task: bool []: not the first task (enables the "no new unit"
        stop).
      upper: float32 []: the thresholds are ``i * step`` for ``i < ceil(upper
        / step)`` (at most ``max_thetas``).
      worst: float32 []: the least acceptable pruned accuracy (best - m_perc).
      pruned_accuracy: ``kept hidden units (tuple of bool [n]) -> float32 []``
        hold-out accuracy of the network pruned to them.
      step, max_thetas: static grid step and bound.

    Returns:
      ``(kept tuple of bool [n], index int32 [] of the chosen threshold,
      pruned accuracy float32 [] of the chosen selection)``.  The chosen
      selection is: the first threshold's whose selection adds no unit to
      ``old`` (later tasks only); else the last threshold's whose pruned
      accuracy is >= ``worst`` before the first that is not; if every tried
      threshold is acceptable, the last one's; if the first already fails,
      threshold 0's.
    """
    n = num_thetas(upper, step, max_thetas)
    cand0 = kept_units(acts, jnp.float32(0.0), old)
    acc0 = pruned_accuracy(cand0)
    i0, b0 = jnp.zeros((), jnp.int32), jnp.zeros((), bool)

    def cond(c):
        i, done = c[0], c[1]
        return (i < n) & ~done

    def body(c):
        i, done, chosen, ci, cacc, prev, pi, pacc, have_prev = c
        theta = i.astype(jnp.float32) * jnp.float32(step)
        cand = kept_units(acts, theta, old)
        nonew = later_task & jnp.all(jnp.stack([jnp.all(a == b) for a, b in zip(cand, old)]))
        acc = pruned_accuracy(cand)
        ok = acc >= worst
        # no new unit: take this one; acceptable: remember it; else take the previous one
        take_this = nonew
        take_prev = ~nonew & ~ok
        chosen = _where(take_this, cand, _where(take_prev, _where(have_prev, prev, cand0), chosen))
        ci = jnp.where(take_this, i, jnp.where(take_prev, jnp.where(have_prev, pi, 0), ci))
        cacc = jnp.where(take_this, acc, jnp.where(take_prev, jnp.where(have_prev, pacc, acc0), cacc))
        keep = ~nonew & ok
        prev = _where(keep, cand, prev)
        pi = jnp.where(keep, i, pi)
        pacc = jnp.where(keep, acc, pacc)
        return (i + 1, take_this | take_prev, chosen, ci, cacc, prev, pi, pacc, have_prev | keep)

    init = (i0, b0, cand0, i0, acc0, cand0, i0, acc0, b0)
    _, done, chosen, ci, cacc, prev, pi, pacc, have_prev = jax.lax.while_loop(cond, body, init)
    fall = ~done & have_prev
    return _where(fall, prev, chosen), jnp.where(fall, pi, ci), jnp.where(fall, pacc, cacc)


def average_activations(static: Static, params: PyTree, conn: dict, x_raw: jax.Array, weight: jax.Array,
                        class_mask: jax.Array):
    """Average activations on the examples of ``x_raw`` (uint8 [N, ...])
    with ``weight`` (float32 [N], 0/1).

    Returns:
      ``(hidden, upper)``: a tuple of float32 [n] per hidden layer (summed
      over spatial positions, averaged over the weighted examples), and the
      largest average over every layer the authors' network reports (the
      input pixels for the MLP, the hidden layers and the masked logits).
    """
    N = x_raw.shape[0]
    E = max(1, min(static.chunk, N))
    pad = (-N) % E
    xs = jnp.concatenate([x_raw, jnp.zeros((pad, *x_raw.shape[1:]), x_raw.dtype)]) if pad else x_raw
    ws = jnp.concatenate([weight, jnp.zeros((pad,), weight.dtype)]) if pad else weight
    xs = xs.reshape(-1, E, *x_raw.shape[1:])
    ws = ws.reshape(-1, E)

    def body(carry, inp):
        xb, wb = inp
        x = static.augment(xb, None, train=False)
        logits, acts = forward(static, params, conn, x)
        sums = [jnp.einsum("b...c,b->c", a, wb) for a in acts]
        sx = jnp.einsum("bf,b->f", x.reshape(x.shape[0], -1).astype(jnp.float32), wb)
        so = jnp.einsum("bc,b->c", logits * class_mask, wb)
        return ([c + s for c, s in zip(carry[0], sums)], carry[1] + sx, carry[2] + so), None

    n_in = int(np.prod(x_raw.shape[1:]))
    init = ([jnp.zeros((s.cols,), jnp.float32) for s in static.specs[:-1]], jnp.zeros((n_in,), jnp.float32),
            jnp.zeros((static.num_classes,), jnp.float32))
    (sums, sx, so), _ = jax.lax.scan(body, init, (xs, ws))
    cnt = jnp.maximum(jnp.sum(weight), 1.0)
    hidden = tuple(s / cnt for s in sums)
    tops = [jnp.max(h) for h in hidden] + [jnp.max(so / cnt)]
    if static.mlp:
        tops.append(jnp.max(sx / cnt))
    return hidden, jnp.max(jnp.stack(tops))


# ---------------------------------------------------------------- protocol
def init(rng: jax.Array, config, scenario) -> State:
    """A fresh dense network of ``config.model`` (``nispa_mlp`` or
    ``nispa_conv``), no kept unit, an empty hold-out buffer.

    Raises:
      ConfigError: a bad ``config.clnp`` value (named with what is valid).
    """
    v = sections.block(config, nispa_section.CLNP)
    name = config.model.name
    kw = {k: (tuple(x) if isinstance(x, (list, tuple)) else x) for k, x in config.model.items() if k != "name"}
    model = get_family_model(name, scenario.num_classes, "nispa", **kw)
    shape = scenario.image_shape
    specs = model.layer_specs(shape, 1.0) if name == "nispa_mlp" else model.layer_specs(shape, 1.0, dense_first=True)
    permille = int(round(1000 * float(v["val_fraction"])))
    val_cap, chunk = he.val_capacity(scenario, permille, int(v["eval_chunk"]))
    T, C = scenario.num_tasks, scenario.num_classes
    static = Static(model=model, specs=specs, num_classes=C, num_tasks=T, lr=float(config.optim.lr),
                    l1_alpha=float(v["l1_alpha"]), m_perc=float(v["m_perc"]), theta_step=float(v["theta_step"]),
                    max_thetas=int(v["max_thetas"]), val_permille=permille, val_cap=val_cap, chunk=chunk,
                    augment=common.augment_from_config(config.augment, scenario),
                    task_il_rule=str(v["task_il_rule"]))
    k_init, k_state = jax.random.split(rng)
    params = model.init(k_init, jnp.zeros((1, *shape), jnp.float32))["params"]
    params = {k: dict(p) for k, p in params.items()}
    conn = {s.name: jnp.ones((s.rows, s.cols), bool) for s in specs}
    kept = tuple(jnp.zeros((s.cols,), bool) for s in specs)
    f0, i0, b0 = jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32), jnp.zeros((), bool)
    return State(params=params, conn=conn, kept=kept, opt_state=static.tx.init(params), best_params=params,
                 best_acc=f0, have_best=b0, task_id=i0, class_mask=jnp.zeros((C,), jnp.float32),
                 seen=jnp.zeros((C,), bool), val_x=jnp.zeros((val_cap, *shape), jnp.uint8),
                 val_y=jnp.zeros((val_cap,), jnp.int32), val_n=i0, theta=jnp.zeros((T,), jnp.float32),
                 val_acc_best=jnp.zeros((T,), jnp.float32), val_acc_pruned=jnp.zeros((T,), jnp.float32),
                 new_units=jnp.zeros((T, len(specs) - 1), jnp.int32), key=k_state, static=static)


def begin_task(state: State, task: TaskInfo) -> State:
    """Sets the class mask, re-creates Adam, empties the hold-out buffer and
    the best-epoch record."""
    cm = jnp.asarray(task.class_mask).astype(bool)
    f0, i0, b0 = jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32), jnp.zeros((), bool)
    return state.replace(task_id=jnp.asarray(task.task_id, jnp.int32), class_mask=cm.astype(jnp.float32),
                         seen=state.seen | cm, opt_state=state.static.tx.init(state.params),
                         best_params=state.params, best_acc=f0, have_best=b0, val_n=i0)


def val_accuracy(state: State, params: PyTree, conn: dict) -> jax.Array:
    """Hold-out accuracy (percent, float32 []) with the official output
    masking."""
    static = state.static
    return he.masked_accuracy(lambda xb: forward(static, params, conn, static.augment(xb, None, train=False))[0],
                              state.val_x, state.val_y, state.val_n, state.class_mask, static.chunk)


def l1_norm(params: PyTree) -> jax.Array:
    """Sum of |parameter| over every leaf (float32 [])."""
    return sum(jnp.sum(jnp.abs(p)) for p in jax.tree_util.tree_leaves(params))


def train_step(state: State, batch: dict, rng: jax.Array):
    """One Adam step on CE(masked logits) + ``l1_alpha`` * L1 with kept units
    frozen; hold-out examples buffered in the first epoch and masked out of
    the loss; at an epoch end, the best-epoch snapshot.

    Args:
      batch: ``x`` float32 [B, ...], ``x_raw`` uint8 [B, ...], ``y`` int32
        [B]; ``step``, ``steps_per_epoch``, ``task_size`` int32 [].
      rng: unused.

    Returns:
      (State, metrics ``loss`` (CE + L1), ``l1``, ``acc``).
    """
    del rng
    static = state.static
    x, y = batch["x"], batch["y"]
    step, spe = batch["step"], batch["steps_per_epoch"]
    state, val = he.collect(state, batch, static.val_permille)
    tw = ~val

    def loss_fn(p):
        logits = forward(static, p, state.conn, x)[0] * state.class_mask
        ce = common.cross_entropy(logits, y, tw)
        l1 = l1_norm(p)
        return ce + static.l1_alpha * l1, (logits, l1)

    (loss, (logits, l1)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    um = update_mask(static, state.params, state.conn, state.kept)
    updates, opt_state = static.tx.update(grads, state.opt_state, state.params, update_mask=um)
    params = optax.apply_updates(state.params, updates)
    state = state.replace(params=params, opt_state=opt_state)

    def epoch_end(s):
        acc = val_accuracy(s, s.params, s.conn)
        better = acc > s.best_acc
        return s.replace(best_params=_where(better, s.params, s.best_params),
                         best_acc=jnp.maximum(acc, s.best_acc), have_best=s.have_best | better)

    state = jax.lax.cond((step + 1) % spe == 0, epoch_end, lambda s: s, state)
    twf = tw.astype(jnp.float32)
    acc = jnp.sum((jnp.argmax(logits, -1) == y) * twf) / jnp.maximum(jnp.sum(twf), 1.0)
    return state, {"loss": loss, "l1": l1, "acc": acc}


def end_task(state: State, task_data) -> State:
    """The task end (module doc, steps 2-3): activation statistics of the
    best epoch's network on the task's training examples (``task_data["x"]``
    uint8 [N, ...], hold-out excluded), the threshold search, the cuts, the
    freeze and the re-initialisation of everything not frozen."""
    static = state.static
    trained = _where(state.have_best, state.best_params, state.params)
    best = val_accuracy(state, trained, state.conn)
    xr = task_data["x"]
    w = (~is_val(xr, static.val_permille)).astype(jnp.float32)
    acts, upper = average_activations(static, trained, state.conn, xr, w, state.class_mask)
    old = tuple(state.kept[:-1])

    def pruned_accuracy(hidden):
        return val_accuracy(state, trained, cut(static, state.conn, tuple(hidden) + (state.seen,)))

    hidden, idx, acc = threshold_search(acts, old, state.task_id > 0, upper, best - static.m_perc,
                                        pruned_accuracy, static.theta_step, static.max_thetas)
    kept = tuple(hidden) + (state.seen,)
    conn = cut(static, state.conn, kept)
    kf = with_input(static, kept)
    key = jax.random.fold_in(state.key, state.task_id)
    params = {}
    for l, s in enumerate(static.specs):
        wk, b = trained[s.name]["kernel"], trained[s.name]["bias"]
        fr = nu.expand(s, nu.frozen_matrix(s, kf[l], kf[l + 1]), wk.shape)
        fresh = reinit_kernel(jax.random.fold_in(key, l), wk.shape)
        wk = jnp.where(fr, wk, fresh) * nu.expand(s, conn[s.name], wk.shape).astype(wk.dtype)
        params[s.name] = {"kernel": wk, "bias": jnp.where(kf[l + 1], b, 0.0)}
    t = state.task_id
    new = jnp.stack([jnp.sum(h & ~o, dtype=jnp.int32) for h, o in zip(hidden, old)])
    return state.replace(params=params, conn=conn, kept=kept, best_params=params,
                         theta=state.theta.at[t].set(idx.astype(jnp.float32) * static.theta_step),
                         val_acc_best=state.val_acc_best.at[t].set(best),
                         val_acc_pruned=state.val_acc_pruned.at[t].set(acc),
                         new_units=state.new_units.at[t].set(new))


def predict(state: State, x: jax.Array, task_id: jax.Array | None = None) -> jax.Array:
    """Logits float32 [B, C] (the loop's task-IL evaluation masks them to the
    task's classes, the task-IL heads)."""
    del task_id
    return forward(state.static, state.params, state.conn, x)[0]


# ---------------------------------------------------------------- reporting
def memory_bytes(state: State) -> dict:
    """Bytes of the bit-packed connection matrices, the kept-unit vectors,
    the hold-out buffer and the dense float32 parameters."""
    units = sum(math.ceil(int(a.shape[0]) / 8) for a in state.kept)
    buf = sum(int(a.size * a.dtype.itemsize) for a in (state.val_x, state.val_y))
    return {"masks": masks_nbytes(state.conn), "unit_states": units, "buffer": buf,
            "model": common.param_bytes(state.params)}


def result_extras(state: State) -> dict:
    """Per task: chosen threshold, hold-out accuracies before and after
    pruning, new kept units per layer; kept units and connections per layer
    (results.json "extra")."""
    static = state.static
    return {"clnp": {
        "theta_per_task": [float(v) for v in np.asarray(state.theta)],
        "val_acc_best_per_task": [float(v) for v in np.asarray(state.val_acc_best)],
        "val_acc_pruned_per_task": [float(v) for v in np.asarray(state.val_acc_pruned)],
        "new_units_per_task": np.asarray(state.new_units).tolist(),
        "kept_units_per_layer": {s.name: int(jnp.sum(k)) for s, k in zip(static.specs, state.kept)},
        "units_per_layer": {s.name: int(s.cols) for s in static.specs},
        "connections_per_layer": {s.name: int(nu.count(s, state.conn[s.name])) for s in static.specs},
        "task_il_rule": static.task_il_rule}}


def _spec():
    from clj.methods.api import Capabilities, MethodSpec

    def capabilities(config):
        return Capabilities(step_info=True, task_il_rule=str(sections.block(config, nispa_section.CLNP)
                                                               ["task_il_rule"]))

    return MethodSpec(init=init, begin_task=begin_task, train_step=train_step, end_task=end_task,
                      predict=predict, capabilities=capabilities, memory_bytes=memory_bytes,
                      result_extras=result_extras, task_steps=he.task_steps)


SPEC = _spec()
