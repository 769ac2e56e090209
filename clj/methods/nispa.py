"""NISPA: Neuro-Inspired Stability-Plasticity Adaptation (Gurbuz & Dovrolis,
ICML 2022, arXiv 2206.09117), task-incremental, as its official code runs it
(``specs/nispa.md``).

One sparse network of fixed density learns every task.  Each hidden unit is
*stable* (promoted at an earlier task boundary), *candidate* (selected in the
current phase) or *plastic*; inputs are always stable and the output units of
the classes seen so far count as stable.  A task trains in **phases** of
``phase_epochs`` epochs (Adam re-created every phase).  After phase t:

1. the phase's accuracy is its best epoch's validation accuracy; stop when it
   falls more than ``a_f`` points below the best of the earlier phases
   (t >= 3) or when p_t <= 5 % (§3.8), rolling back to the previous phase's
   snapshot and the unit selection that produced its connectivity;
2. otherwise the units that together give p_t % of each hidden layer's total
   average activation on the task's training data become candidates, with
   p_t = 100 (1 + cos(pi t / k)) / 2 (Eq. 3, §3.3);
3. every connection from a plastic unit into a stable/candidate unit is
   dropped; plastic units left without outgoing connections get one
   zero-valued connection; the rest of the dropped budget is regrown at random
   into plastic targets with N(mean, std) of the layer's weights, so each
   layer keeps its number of connections (§3.5-3.6);
4. the next phase starts from the rewired best-epoch snapshot.

At the task end the final selection is promoted to stable, every connection
between stable units and every stable unit's bias are frozen for good, and
every other weight is re-initialised (Kaiming normal, fan_out; biases 0).
Stable units then see only frozen stable paths, so old tasks' logits never
change (zero forgetting).

How the phases run inside the core loop (a fixed number of steps per task):
:func:`task_steps` sizes each task in whole phases, ``max_phases *
phase_epochs * ceil(n / B)`` steps, so the last phase the stopping rule can
reach always completes (the loop calls it through the method spec; before
that, ``train.epochs = max_phases * phase_epochs``); phase boundaries fall every ``phase_epochs *
steps_per_epoch`` steps and epoch ends every ``steps_per_epoch`` steps, both
taken inside the jitted step under ``lax.cond``.  The loop passes the in-task
step index, steps per epoch and task size as ``batch["step"]``,
``batch["steps_per_epoch"]``, ``batch["task_size"]``, values shared by all
vmapped seeds, so the
conds stay real branches under ``vmap``; the per-seed decisions (stop or go
on, the best epoch) are ``jnp.where`` selections.  Once a seed stops, its
remaining steps leave the State bit-identical (a ``stopped`` flag), so a loop
that notices ``metrics["task_done"]`` a chunk late changes nothing.

Task-IL test metric: the official code multiplies the logits by the task's
0/1 class mask and takes the argmax over all classes, so a test example whose
task logits are all negative counts as wrong (a masked class, at 0, wins);
:func:`task_il_correct` is that rule (``nispa.task_il_rule = 'multiply'``);
the loop's rule (argmax over the task's classes) is ``'restrict'``.

Validation data: 10 % of each task's training examples, chosen by a fixed
hash of the image bytes (:func:`is_val`), never enter the loss.  During the
first epoch of a task (each example exactly once) the validation examples are
copied into a buffer in the State, and the training examples into a second
buffer (the data the activation statistics of step 2 are computed on; capped
at ``select_samples`` when > 0).  Both have static capacities computed from
the scenario at ``init``.

Static shapes: the step compiles once per run (per chunk length of the
loop); task sizes, steps per epoch and phase boundaries are traced values,
so nothing recompiles at a phase or task boundary.

Deviations from the official code (documented in ``docs/nispa.md``):
validation split by content hash (not a random 90/10 split), the loop's
completed last batch instead of a partial one, exact-count initial masks by
default (``mask_init='bernoulli'`` is the official draw), the corrected
flatten-layer fix-up check, and a final drop at the task end (a no-op except
when a task ends before its second phase).
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from clj.errors import ConfigError
from clj.methods import sections
from clj.data.augment import Augment
from clj.methods import common
from clj.methods import nispa_units as nu
from clj.methods.common import TaskInfo
from clj.models.nispa_nets import LayerSpec, get_nispa_model, reinit_kernel
from clj.sparse import apply_masks, masked_optimizer, masks_nbytes

PyTree = Any
TASK_IL_RULES = ("multiply", "restrict")

_HASH_SEED = 20220623


# ---------------------------------------------------------------- validation split
def _hash_coefs(d: int) -> np.ndarray:
    rs = np.random.default_rng(_HASH_SEED)
    return (rs.integers(1, 2 ** 32 - 1, size=d, dtype=np.uint64).astype(np.uint32) | np.uint32(1))


def _mix(h, mul):
    h = h ^ (h >> 16)
    h = h * mul(0x7FEB352D)
    h = h ^ (h >> 15)
    h = h * mul(0x846CA68B)
    return h ^ (h >> 16)


def is_val(x_raw: jax.Array, permille: int) -> jax.Array:
    """bool [B]: whether each uint8 image [B, ...] belongs to the validation
    split: a fixed 32-bit hash of its bytes, modulo 1000, below ``permille``.
    Deterministic across epochs and seeds; :func:`is_val_np` is its twin."""
    x = x_raw.reshape(x_raw.shape[0], -1).astype(jnp.uint32)
    c = jnp.asarray(_hash_coefs(x.shape[1]))
    h = jnp.sum((x + jnp.uint32(1)) * c[None, :], axis=1, dtype=jnp.uint32)
    h = _mix(h, jnp.uint32)
    return (h % jnp.uint32(1000)) < jnp.uint32(permille)


def is_val_np(x_raw: np.ndarray, permille: int) -> np.ndarray:
    """Numpy twin of :func:`is_val` (bit-identical)."""
    x = x_raw.reshape(x_raw.shape[0], -1).astype(np.uint32)
    c = _hash_coefs(x.shape[1])
    with np.errstate(over="ignore"):
        h = np.sum((x + np.uint32(1)) * c[None, :], axis=1, dtype=np.uint32)
        h = _mix(h, np.uint32)
    return (h % np.uint32(1000)) < np.uint32(permille)


# ---------------------------------------------------------------- hyperparameters
@dataclasses.dataclass(frozen=True)
class Hparams:
    """Static hyperparameters (hashable).

    Attributes:
      model: the Flax backbone (:mod:`clj.models.nispa_nets`).
      specs: unit-level description of every weight layer.
      num_classes, num_tasks: of the scenario.
      lr: Adam's learning rate (re-created every phase, no weight decay).
      a_f: the accuracy drop (percentage points) that stops a task.
      k: the cosine schedule's k (Eq. 3).
      phase_epochs: e, epochs per phase.
      min_phases: the accuracy stop needs t >= this (3 in the official code).
      tau_stop: stop once p_t <= this (percent).
      val_permille: validation share of each task's data, in 1/1000.
      val_cap, sel_cap: buffer capacities (multiples of ``chunk``).
      chunk: evaluation batch for the buffers.
      task_sizes: training examples of every task.
      augment: the evaluation transform (uint8 -> float32).
      task_il_rule: the task-IL test rule of NISPA's comparisons
        (:func:`task_il_correct`; the official code's is 'multiply').
    """

    model: nn.Module
    specs: tuple[LayerSpec, ...]
    num_classes: int
    num_tasks: int
    lr: float = 0.01
    a_f: float = 0.75
    k: float = 30.0
    phase_epochs: int = 5
    min_phases: int = 3
    tau_stop: float = 5.0
    val_permille: int = 100
    val_cap: int = 0
    sel_cap: int = 0
    chunk: int = 512
    task_sizes: tuple[int, ...] = ()
    augment: Augment = Augment()
    task_il_rule: str = "multiply"

    @property
    def tx(self) -> optax.GradientTransformationExtraArgs:
        """Adam through the masked update (frozen and absent connections get
        exactly zero gradient, moments and update; spec §4.3, §9.3)."""
        return masked_optimizer(optax.adam(self.lr))

    @property
    def n_layers(self) -> int:
        return len(self.specs)


@struct.dataclass
class State:
    """Everything NISPA carries (all arrays; ``hp`` is static).

    Attributes:
      params: the network's weights (absent connections exactly 0).
      conn: layer name -> bool unit-level connection matrix (see
        :mod:`clj.methods.nispa_units`).
      stable: bool vectors of unit layers 1..L (hidden layers, then outputs).
      cur_S: the stable+candidate sets that produced the current connectivity.
      opt_state: Adam's state (reset every phase).
      best_params, best_acc, have_best: this phase's best-epoch snapshot.
      prev_params, prev_conn, prev_S, prev_p, prev_valid: the rollback point
        (the previous phase's snapshot before its rewiring).
      acc_prev: best phase accuracy of the task so far (percent).
      phase: phases completed in this task; stopped: the task has stopped.
      cur_p: p of the selection behind ``cur_S``.
      task_step: steps taken in this task; task_id: the current task.
      spe, task_n: steps per epoch and training examples of this task
        (used when the batch does not carry ``steps_per_epoch`` /
        ``task_size``).
      class_mask: float32 [C] 1 at the current task's classes; seen: bool [C].
      val_x/val_y/val_n, sel_x/sel_y/sel_n: validation and selection buffers.
      phases_per_task, final_p: int32/float32 [T] bookkeeping per task.
      leftover: int32 [n_layers] growth budget lost so far (density deficit).
      key: PRNG key of the task-end re-initialisation.
    """

    params: PyTree
    conn: dict
    stable: tuple
    cur_S: tuple
    opt_state: PyTree
    best_params: PyTree
    best_acc: jax.Array
    have_best: jax.Array
    prev_params: PyTree
    prev_conn: dict
    prev_S: tuple
    prev_p: jax.Array
    prev_valid: jax.Array
    acc_prev: jax.Array
    phase: jax.Array
    stopped: jax.Array
    cur_p: jax.Array
    task_step: jax.Array
    task_id: jax.Array
    spe: jax.Array
    task_n: jax.Array
    class_mask: jax.Array
    seen: jax.Array
    val_x: jax.Array
    val_y: jax.Array
    val_n: jax.Array
    sel_x: jax.Array
    sel_n: jax.Array
    phases_per_task: jax.Array
    final_p: jax.Array
    leftover: jax.Array
    key: jax.Array
    hp: Hparams = struct.field(pytree_node=False)


def _tree_where(pred, a, b):
    return jax.tree_util.tree_map(lambda x, y: jnp.where(pred, x, y), a, b)


# ---------------------------------------------------------------- masks / forward
def full_masks(hp: Hparams, params: PyTree, conn: dict) -> PyTree:
    """The params-shaped bool masks (kernels: expanded ``conn``; biases: all
    True) for :func:`clj.sparse.apply_masks`."""
    out = {}
    for s in hp.specs:
        k = params[s.name]["kernel"]
        out[s.name] = {"kernel": nu.expand(s, conn[s.name], k.shape),
                       "bias": jnp.ones(params[s.name]["bias"].shape, bool)}
    return out


def _stable_full(hp: Hparams, stable: tuple) -> list:
    return [jnp.ones((hp.specs[0].n_src,), bool)] + list(stable)


def trainable(hp: Hparams, params: PyTree, conn: dict, stable: tuple) -> PyTree:
    """The update mask: existing, non-frozen connections and the biases of
    non-stable units (spec §4.3, §9.3)."""
    sf = _stable_full(hp, stable)
    out = {}
    for l, s in enumerate(hp.specs):
        fr = nu.frozen_matrix(s, sf[l], sf[l + 1])
        k = params[s.name]["kernel"]
        out[s.name] = {"kernel": nu.expand(s, conn[s.name] & ~fr, k.shape), "bias": ~sf[l + 1]}
    return out


def forward(hp: Hparams, params: PyTree, conn: dict, x: jax.Array):
    """(logits float32 [B, C], hidden activations) of the sparse network."""
    return hp.model.apply({"params": apply_masks(params, full_masks(hp, params, conn))}, x)


# ---------------------------------------------------------------- init
def _cfg(config):
    n = config.get("nispa", None)
    get = (lambda k, d: n.get(k, d)) if n is not None else (lambda k, d: d)
    return get


def init(rng: jax.Array, config, scenario) -> State:
    """A fresh State: the sparse net of ``config.model`` (``nispa_mlp`` or
    ``nispa_conv``) with random connection masks at ``config.nispa.density``
    (first conv dense), empty unit sets, empty buffers.

    Raises:
      ConfigError: a bad ``config.nispa`` value or optimizer (names it and
        what is valid).
    """
    sections.get_section("nispa", config)  # every check of config.nispa (JAX-free, run by clj.config too)
    get = _cfg(config)
    density = float(get("density", 0.2))
    e = int(get("phase_epochs", 5))
    vf = float(get("val_fraction", 0.1))
    mask_init = str(get("mask_init", "exact"))
    rule = task_il_rule(config)
    name = config.model.name
    kw = {k: (tuple(v) if isinstance(v, (list, tuple)) else v) for k, v in config.model.items() if k != "name"}
    model = get_nispa_model(name, scenario.num_classes, **kw)
    shape = scenario.image_shape
    if name == "nispa_mlp":
        specs = model.layer_specs(shape, density)
    else:
        specs = model.layer_specs(shape, density, dense_first=bool(get("dense_first_conv", True)))

    # Buffer capacities from the scenario (the hash split is deterministic).
    permille = int(round(1000 * vf))
    chunk = int(get("eval_chunk", 512))
    nv, nt = [], []
    for t in scenario.tasks:
        v = is_val_np(scenario.x_train[t.train_idx], permille)
        nv.append(int(v.sum()))
        nt.append(int((~v).sum()))
    sel = int(get("select_samples", 0))
    sel_cap = max(nt) if sel <= 0 else min(sel, max(nt))
    chunk = max(1, min(chunk, max(nv), sel_cap))
    val_cap = math.ceil(max(max(nv), 1) / chunk) * chunk
    sel_cap = math.ceil(max(sel_cap, 1) / chunk) * chunk
    hp = Hparams(model=model, specs=specs, num_classes=scenario.num_classes, num_tasks=scenario.num_tasks,
                 lr=float(config.optim.lr), a_f=float(get("a_f", 0.75)), k=float(get("k", 30.0)),
                 phase_epochs=e, min_phases=int(get("min_phases", 3)), tau_stop=float(get("tau_stop", 5.0)),
                 val_permille=permille, val_cap=val_cap, sel_cap=sel_cap,
                 chunk=chunk, task_sizes=tuple(t.num_train for t in scenario.tasks),
                 augment=common.augment_from_config(config.augment, scenario), task_il_rule=rule)

    k_init, k_mask, k_state = jax.random.split(rng, 3)
    params = model.init(k_init, jnp.zeros((1, *shape), jnp.float32))["params"]
    params = {k: dict(v) for k, v in params.items()}
    conn = {}
    mkeys = jax.random.split(k_mask, len(specs))
    for s, mk in zip(specs, mkeys):
        shp = (s.rows, s.cols)
        if s.density >= 1.0:
            u = jnp.ones(shp, bool)
        elif mask_init == "bernoulli":
            u = jax.random.bernoulli(mk, s.density, shp)
        else:
            from clj.sparse import count_for, random_mask
            u = random_mask(mk, shp, count_for(s.density, s.rows * s.cols))
        conn[s.name] = u
    params = apply_masks(params, full_masks(hp, params, conn))
    C, T = scenario.num_classes, scenario.num_tasks
    unit_sizes = [s.cols for s in specs]
    stable = tuple(jnp.zeros((n,), bool) for n in unit_sizes)
    f0, i0, b0 = jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32), jnp.zeros((), bool)
    return State(
        params=params, conn=conn, stable=stable, cur_S=stable, opt_state=hp.tx.init(params),
        best_params=params, best_acc=f0, have_best=b0, prev_params=params, prev_conn=conn, prev_S=stable,
        prev_p=jnp.full((), 100.0), prev_valid=b0, acc_prev=f0, phase=i0, stopped=b0,
        cur_p=jnp.full((), 100.0), task_step=i0, task_id=i0, spe=jnp.ones((), jnp.int32), task_n=i0, class_mask=jnp.zeros((C,), jnp.float32),
        seen=jnp.zeros((C,), bool), val_x=jnp.zeros((val_cap, *shape), jnp.uint8),
        val_y=jnp.zeros((val_cap,), jnp.int32), val_n=i0, sel_x=jnp.zeros((sel_cap, *shape), jnp.uint8),
        sel_n=i0, phases_per_task=jnp.zeros((T,), jnp.int32), final_p=jnp.zeros((T,), jnp.float32),
        leftover=jnp.zeros((len(specs),), jnp.int32), key=k_state, hp=hp)


# ---------------------------------------------------------------- step budget
def phase_limit(k: float, tau_stop: float, max_phases: int | None = None) -> int:
    """The most phases a task can train under the official stopping rule
    (spec §4.6): the first t >= 1 with p_t = 100 (1 + cos(pi t / k)) / 2 <=
    ``tau_stop`` (26 for k = 30, tau_stop = 5), capped by ``max_phases`` when
    given.  Computed in float32 as :func:`nispa_units.tau` does.

    Raises:
      ConfigError: k <= 0, max_phases < 1, or p_t never reaches tau_stop and
        no ``max_phases`` bounds the task.
    """
    if not k > 0:
        raise ConfigError(f"nispa.k={k} is invalid: it must be > 0.")
    if max_phases is not None and int(max_phases) < 1:
        raise ConfigError(f"nispa.max_phases={max_phases} is invalid: it must be >= 1.")
    t = np.arange(1, int(math.ceil(2 * k)) + 2, dtype=np.float32)
    p = np.float32(50.0) * (np.float32(1.0) + np.cos(np.float32(np.pi) * t / np.float32(k)))
    hit = np.flatnonzero(p <= np.float32(tau_stop))
    if hit.size == 0 and max_phases is None:
        raise ConfigError(f"nispa.tau_stop={tau_stop} is never reached by the cosine schedule (k={k}); "
                          "set nispa.max_phases to bound a task.")
    limit = int(t[hit[0]]) if hit.size else int(max_phases)
    return min(limit, int(max_phases)) if max_phases is not None else limit


def task_steps(config, n_examples: int, batch_size: int, task_index: int, state_info=None) -> int:
    """Training steps of one task, in whole phases: ``phases * phase_epochs *
    ceil(n_examples / batch_size)`` with ``phases`` = :func:`phase_limit`
    (``config.nispa.k``, ``tau_stop``, ``max_phases``).  An epoch is
    ``ceil(n / B)`` steps as in the official loader (no ``drop_last``), so
    the last phase the official stopping rule can reach always completes;
    ``ceil(phases * epochs * n / B)`` would cut it short.  Host ints; the
    loop calls this through the method spec; ``task_index`` is unused (every
    task gets the same rule).

    Raises:
      ConfigError: n_examples < 1, batch_size < 1, phase_epochs < 1, or a bad
        schedule (see :func:`phase_limit`).
    """
    del task_index
    if int(n_examples) < 1:
        raise ConfigError(f"n_examples={n_examples} is invalid: a task needs >= 1 training example.")
    if int(batch_size) < 1:
        raise ConfigError(f"train.batch_size={batch_size} is invalid: it must be >= 1.")
    get = _cfg(config)
    e = int(get("phase_epochs", 5))
    if e < 1:
        raise ConfigError(f"nispa.phase_epochs={e} is invalid: it must be >= 1.")
    mp = get("max_phases", None)
    phases = phase_limit(float(get("k", 30.0)), float(get("tau_stop", 5.0)), None if mp is None else int(mp))
    return phases * e * (-(-int(n_examples) // int(batch_size)))


# ---------------------------------------------------------------- task boundaries
def begin_task(state: State, task: TaskInfo) -> State:
    """Sets the task's class mask, resets the phase bookkeeping, the buffers'
    fill counts and Adam."""
    hp = state.hp
    cm = jnp.zeros((hp.num_classes,), jnp.float32).at[jnp.asarray(task.classes)].set(1.0)
    seen = state.seen | (cm > 0)
    S = state.stable
    f0, i0, b0 = jnp.zeros((), jnp.float32), jnp.zeros((), jnp.int32), jnp.zeros((), bool)
    return state.replace(
        spe=jnp.asarray(max(int(task.steps_per_epoch), 1), jnp.int32),
        task_n=jnp.asarray(hp.task_sizes[task.task_id], jnp.int32), class_mask=cm, seen=seen, cur_S=S, prev_S=S, cur_p=jnp.full((), 100.0),
        prev_p=jnp.full((), 100.0), prev_valid=b0, prev_params=state.params, prev_conn=state.conn,
        best_params=state.params, best_acc=f0, have_best=b0, acc_prev=f0, phase=i0, stopped=b0,
        task_step=i0, task_id=jnp.asarray(task.task_id, jnp.int32), val_n=i0, sel_n=i0,
        opt_state=hp.tx.init(state.params))


def end_task(state: State, task_data) -> State:
    """Rolls back to the last kept phase, promotes its selection to stable,
    freezes stable->stable connections and stable biases, re-initialises
    every other weight (spec §4.7).  ``task_data`` is unused."""
    del task_data
    hp = state.hp
    ok = state.prev_valid
    params = _tree_where(ok, state.prev_params, state.params)
    conn = _tree_where(ok, state.prev_conn, state.conn)
    S = _tree_where(ok, state.prev_S, state.cur_S)
    p = jnp.where(ok, state.prev_p, state.cur_p)
    S = tuple(S[:-1]) + (state.seen,)
    stable = tuple(a | b for a, b in zip(state.stable, S))
    stable = tuple(stable[:-1]) + (state.seen,)
    sf = _stable_full(hp, stable)
    sfS = _stable_full(hp, S)
    key = jax.random.fold_in(state.key, state.task_id)
    new_params, new_conn = {}, {}
    for l, s in enumerate(hp.specs):
        u, _ = nu.drop(s, conn[s.name], sfS[l], sfS[l + 1])   # a no-op unless the task had one phase
        fr = nu.frozen_matrix(s, sf[l], sf[l + 1])
        w, b = params[s.name]["kernel"], params[s.name]["bias"]
        fresh = reinit_kernel(jax.random.fold_in(key, l), w.shape)
        w = jnp.where(nu.expand(s, fr, w.shape), w, fresh) * nu.expand(s, u, w.shape).astype(w.dtype)
        b = jnp.where(sf[l + 1], b, 0.0)
        new_params[s.name] = {"kernel": w, "bias": b}
        new_conn[s.name] = u
    tid = state.task_id
    return state.replace(params=new_params, conn=new_conn, stable=stable, cur_S=stable,
                         phases_per_task=state.phases_per_task.at[tid].set(state.phase),
                         final_p=state.final_p.at[tid].set(p), stopped=jnp.ones((), bool))


# ---------------------------------------------------------------- buffers / statistics
def _fill(state: State, x_raw, y, to_val, to_sel) -> State:
    def put(buf, n, sel, vals):
        cap = buf.shape[0]
        pos = n + jnp.cumsum(sel.astype(jnp.int32)) - 1
        pos = jnp.where(sel & (pos < cap), pos, cap)
        return buf.at[pos].set(vals, mode="drop"), jnp.minimum(n + jnp.sum(sel, dtype=jnp.int32), cap)

    val_x, _ = put(state.val_x, state.val_n, to_val, x_raw)
    val_y, val_n = put(state.val_y, state.val_n, to_val, y)
    sel_x, sel_n = put(state.sel_x, state.sel_n, to_sel, x_raw)
    return state.replace(val_x=val_x, val_y=val_y, val_n=val_n, sel_x=sel_x, sel_n=sel_n)


def val_accuracy(state: State, params: PyTree) -> jax.Array:
    """Top-1 accuracy (percent, float32 []) on the validation buffer, logits
    multiplied by the task's class mask and argmax over all classes (§4.9)."""
    hp = state.hp
    E = hp.chunk
    xs = state.val_x.reshape(-1, E, *state.val_x.shape[1:])
    ys = state.val_y.reshape(-1, E)
    idx = jnp.arange(xs.shape[0] * E, dtype=jnp.int32).reshape(-1, E)

    def body(inp):
        xb, yb, ib = inp
        logits, _ = forward(hp, params, state.conn, hp.augment(xb, None, train=False))
        ok = jnp.argmax(logits * state.class_mask, -1) == yb
        return jnp.sum(ok & (ib < state.val_n), dtype=jnp.int32)

    correct = jnp.sum(jax.lax.map(body, (xs, ys, idx)))
    return 100.0 * correct.astype(jnp.float32) / jnp.maximum(state.val_n, 1).astype(jnp.float32)


def average_activations(state: State, params: PyTree, conn: dict) -> list:
    """Per hidden unit layer, float32 [n_units]: post-ReLU activation summed
    over spatial positions, averaged over the selection buffer (§4.4)."""
    hp = state.hp
    E = hp.chunk
    xs = state.sel_x.reshape(-1, E, *state.sel_x.shape[1:])
    idx = jnp.arange(xs.shape[0] * E, dtype=jnp.int32).reshape(-1, E)

    def body(carry, inp):
        xb, ib = inp
        _, acts = forward(hp, params, conn, hp.augment(xb, None, train=False))
        w = (ib < state.sel_n).astype(jnp.float32)
        sums = [jnp.einsum("b...c,b->c", a, w) for a in acts]
        return [c + s for c, s in zip(carry, sums)], None

    init = [jnp.zeros((s.cols,), jnp.float32) for s in hp.specs[:-1]]
    sums, _ = jax.lax.scan(body, init, (xs, idx))
    n = jnp.maximum(state.sel_n, 1).astype(jnp.float32)
    return [s / n for s in sums]


# ---------------------------------------------------------------- rewiring
def rewire(hp: Hparams, rng: jax.Array, params: PyTree, conn: dict, S: tuple):
    """Drop, fix-up and grow in every layer for the unit sets ``S`` (hidden
    layers then outputs; spec §4.5).  Returns ``(params, conn, leftover
    int32 [n_layers])``; a layer's connection count is unchanged unless
    ``leftover > 0`` (too few free positions into plastic targets)."""
    Sf = _stable_full(hp, S)
    new_p, new_c, left = {}, {}, []
    keys = jax.random.split(rng, 3 * hp.n_layers).reshape(hp.n_layers, 3, -1)
    for l, s in enumerate(hp.specs):
        w, b = params[s.name]["kernel"], params[s.name]["bias"]
        u, budget = nu.drop(s, conn[s.name], Sf[l], Sf[l + 1])
        w = w * nu.expand(s, u, w.shape).astype(w.dtype)
        if l >= 1:
            u, _, budget = nu.fix_no_outgoing(s, keys[l, 0], u, ~Sf[l], ~Sf[l + 1], budget)
        nz = (w != 0).astype(jnp.float32)
        cnt = jnp.maximum(jnp.sum(nz), 1.0)
        mean = jnp.sum(w * nz) / cnt
        std = jnp.sqrt(jnp.sum(((w - mean) * nz) ** 2) / cnt)
        u2, grown, lo = nu.grow(s, keys[l, 1], u, ~Sf[l + 1], budget)
        gm = nu.expand(s, grown, w.shape)
        w = jnp.where(gm, mean + std * jax.random.normal(keys[l, 2], w.shape), w)
        w = w * nu.expand(s, u2, w.shape).astype(w.dtype)
        new_p[s.name] = {"kernel": w, "bias": b}
        new_c[s.name] = u2
        left.append(lo)
    return new_p, new_c, jnp.stack(left).astype(jnp.int32)


# ---------------------------------------------------------------- the step
def _epoch_end(state: State) -> State:
    acc = val_accuracy(state, state.params)
    better = acc > state.best_acc
    return state.replace(best_params=_tree_where(better, state.params, state.best_params),
                         best_acc=jnp.maximum(acc, state.best_acc), have_best=state.have_best | better)


def phase_end(state: State, rng: jax.Array) -> State:
    """The end of a phase (spec §4.2 steps 1-8): stop test and rollback, or
    selection + rewiring of the best-epoch snapshot; Adam is re-created.
    A stopped state is returned unchanged."""
    hp = state.hp
    t = state.phase + 1
    p = nu.tau(t, hp.k)
    snap = _tree_where(state.have_best, state.best_params, state.params)
    acc_new = jnp.where(state.have_best, state.best_acc, 0.0)
    stop = ((acc_new < state.acc_prev - hp.a_f) & (t >= hp.min_phases)) | (p <= hp.tau_stop)

    # Go on: select on the snapshot, rewire a copy of it.
    acts = average_activations(state, snap, state.conn)
    hidden = tuple(st | nu.select_units(a, p) for st, a in zip(state.stable[:-1], acts))
    S_new = hidden + (state.seen,)
    p2, c2, lo = rewire(hp, rng, snap, state.conn, S_new)
    go = state.replace(params=p2, conn=c2, prev_params=snap, prev_conn=state.conn, prev_S=state.cur_S,
                       prev_p=state.cur_p, prev_valid=jnp.ones((), bool), cur_S=S_new, cur_p=p,
                       acc_prev=jnp.maximum(state.acc_prev, acc_new), leftover=state.leftover + lo)
    # Stop: keep the previous phase's snapshot (end_task applies it).
    pv = state.prev_valid
    halt = state.replace(stopped=jnp.ones((), bool), params=snap,
                         prev_params=_tree_where(pv, state.prev_params, snap),
                         prev_conn=_tree_where(pv, state.prev_conn, state.conn),
                         prev_S=_tree_where(pv, state.prev_S, state.cur_S),
                         prev_p=jnp.where(pv, state.prev_p, state.cur_p), prev_valid=jnp.ones((), bool))
    new = _tree_where(stop, halt, go)
    new = new.replace(phase=t, best_acc=jnp.zeros((), jnp.float32), have_best=jnp.zeros((), bool),
                      best_params=new.params, opt_state=hp.tx.init(new.params))
    return _tree_where(state.stopped, state, new)


def train_step(state: State, batch: dict, rng: jax.Array):
    """One Adam step on the current task's training examples (validation
    examples masked out of the loss), then the epoch-end and phase-end work
    when the step closes an epoch or a phase (module doc).

    Args:
      state: the State.
      batch: ``x`` float32 [B, H, W, C], ``x_raw`` uint8 [B, H, W, C], ``y``
        int32 [B]; optional ``step``, ``steps_per_epoch``, ``task_size``
        int32 [] (the in-task step index, steps per epoch and task size
        given by the loop, the same for all seeds; defaults: the State's).
      rng: PRNG key (rewiring draws).

    Returns:
      (new State, metrics: ``loss``, ``acc`` (training examples), ``phase``,
      ``task_done`` (1 once the stopping rule fired: the loop may end the
      task early)).
    """
    hp = state.hp
    x, xr, y = batch["x"], batch["x_raw"], batch["y"]
    B = y.shape[0]
    step = batch.get("step", state.task_step)
    spe = batch.get("steps_per_epoch", state.spe)
    n_task = batch.get("task_size", state.task_n)
    val = is_val(xr, hp.val_permille)
    first = (step * B + jnp.arange(B, dtype=jnp.int32)) < n_task
    state = jax.lax.cond(step < spe, lambda s: _fill(s, xr, y, val & first & ~s.stopped, ~val & first & ~s.stopped),
                         lambda s: s, state)

    tw = ~val
    masks = full_masks(hp, state.params, state.conn)
    upd_mask = trainable(hp, state.params, state.conn, state.stable)

    def loss_fn(p):
        logits, _ = hp.model.apply({"params": apply_masks(p, masks)}, x)
        logits = logits * state.class_mask
        return common.cross_entropy(logits, y, tw), logits

    (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = hp.tx.update(grads, state.opt_state, state.params, update_mask=upd_mask)
    params = optax.apply_updates(state.params, updates)
    live = ~state.stopped
    state = state.replace(params=_tree_where(live, params, state.params),
                          opt_state=_tree_where(live, opt_state, state.opt_state),
                          task_step=state.task_step + live.astype(jnp.int32))
    state = jax.lax.cond((step + 1) % spe == 0,
                         lambda s: _tree_where(s.stopped, s, _epoch_end(s)), lambda s: s, state)
    state = jax.lax.cond((step + 1) % (spe * hp.phase_epochs) == 0,
                         lambda s: phase_end(s, rng), lambda s: s, state)
    twf = tw.astype(jnp.float32)
    acc = jnp.sum((jnp.argmax(logits, -1) == y) * twf) / jnp.maximum(jnp.sum(twf), 1.0)
    return state, {"loss": loss, "acc": acc, "phase": state.phase.astype(jnp.float32),
                   "task_done": state.stopped.astype(jnp.float32)}


def task_il_rule(config) -> str:
    """The task-IL test rule of NISPA's comparisons, ``config.nispa.task_il_rule``
    (default ``'multiply'``, the official code's; see :func:`task_il_correct`).

    Raises:
      ConfigError: an unknown rule.
    """
    rule = str(_cfg(config)("task_il_rule", "multiply"))
    if rule not in TASK_IL_RULES:
        raise ConfigError(f"nispa.task_il_rule={rule!r} is unknown; valid: {', '.join(TASK_IL_RULES)}.")
    return rule


def task_il_correct(logits: jax.Array, y: jax.Array, task_mask: jax.Array, rule: str = "multiply") -> jax.Array:
    """bool [B]: whether each task-IL prediction is right.

    Args:
      logits: float [B, C]; y: int [B] labels; task_mask: bool or 0/1 [C]
        (or [B, C]) marking the test example's task classes.
      rule: ``'multiply'``: the official code's rule (spec §4.9): the logits
        times the 0/1 mask, argmax over all C classes, so when every task
        logit is negative a masked class (at 0) wins and the example counts
        as wrong; ``'restrict'``: argmax over the task's classes only (the
        core loop's rule; it differs from 'multiply' exactly on the examples
        whose task logits are all <= 0).

    Raises:
      ValueError: unknown ``rule``.
    """
    if rule not in TASK_IL_RULES:
        raise ValueError(f"task_il_rule={rule!r} is unknown; valid: {', '.join(TASK_IL_RULES)}.")
    m = jnp.broadcast_to(jnp.asarray(task_mask), logits.shape)
    if rule == "multiply":
        pred = jnp.argmax(logits * m.astype(logits.dtype), -1)
    else:
        pred = jnp.argmax(jnp.where(m.astype(bool), logits, -jnp.inf), -1)
    return pred == y


def predict(state: State, x: jax.Array, task_id: jax.Array | None = None) -> jax.Array:
    """Logits float32 [B, C] of the sparse network on normalised x [B, H, W, C]
    (the loop's task-IL evaluation masks them to the task's classes)."""
    del task_id
    return forward(state.hp, state.params, state.conn, x)[0]


# ---------------------------------------------------------------- reporting
def layer_counts(state: State) -> dict:
    """Connections (kernel elements) per layer, host ints."""
    return {s.name: int(nu.count(s, state.conn[s.name])) for s in state.hp.specs}


def memory_bytes(state: State) -> dict:
    """Bytes of the connection masks (bit-packed unit matrices), the unit
    states (stable sets, 1 bit per unit; frozen masks are derived from them),
    the validation/selection buffers and the dense float32 parameters."""
    unit_bits = sum(math.ceil(int(a.shape[0]) / 8) for a in state.stable)
    buf = sum(int(a.size * a.dtype.itemsize) for a in (state.val_x, state.val_y, state.sel_x))
    return {"masks": masks_nbytes(state.conn), "unit_states": unit_bits, "buffer": buf,
            "model": common.param_bytes(state.params)}


def result_extras(state: State) -> dict:
    """Phases per task, final p per task, stable units per layer, density per
    layer and lost growth budget (results.json "extra")."""
    hp = state.hp
    dens = {s.name: float(int(jnp.sum(state.conn[s.name])) / (s.rows * s.cols)) for s in hp.specs}
    return {"nispa": {
        "phases_per_task": [int(v) for v in np.asarray(state.phases_per_task)],
        "final_p_per_task": [float(v) for v in np.asarray(state.final_p)],
        "stable_units_per_layer": {s.name: int(jnp.sum(st)) for s, st in zip(hp.specs, state.stable)},
        "units_per_layer": {s.name: int(s.cols) for s in hp.specs},
        "density_per_layer": dens,
        "target_density_per_layer": {s.name: s.density for s in hp.specs},
        "connections_per_layer": layer_counts(state),
        "leftover_growth_budget": [int(v) for v in np.asarray(state.leftover)],
        "validation_split": "hash of image bytes, %d/1000 of each task" % hp.val_permille,
        "task_il_rule": hp.task_il_rule,
    }}


def _spec():
    from clj.methods.api import Capabilities, MethodSpec

    # step_info: the phase clock needs the in-task step, epoch length and task size;
    # early_stop: the stopping rule ends a task (metrics["task_done"]).
    def capabilities(config):
        return Capabilities(step_info=True, early_stop=True, static_task_info=True,
                            task_il_rule=task_il_rule(config))

    return MethodSpec(init=init, begin_task=begin_task, train_step=train_step, end_task=end_task,
                      predict=predict, capabilities=capabilities,
                      memory_bytes=memory_bytes, result_extras=result_extras, task_steps=task_steps)


SPEC = _spec()
