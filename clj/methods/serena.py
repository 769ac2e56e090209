"""SERENA: online data-incremental learning with self-regulated sparse
subnetworks ("concept cells").

Source: Yildirim et al., "Self-Regulated Neurogenesis for Online
Data-Incremental Learning", CoLLAs 2025 (PMLR 330:657-671, arXiv 2403.14684
v2), as its official code runs it; ``shared/specs/serena.md`` paraphrases the
code (section numbers below refer to it).

One dense weight array per layer (``bank``, the union network) carries every
cell.  Exactly one cell is open at a time: a random sparse mask with ERK
layer densities (§4.2) whose weights form the working network ``work``
(``bank`` restricted to the mask; weights of earlier cells inside the mask
are read-only, §4.3-4.4).  Each train step

1. measures the open cell's prequential accuracy on the incoming batch
   (test-then-train) and pushes a drift statistic into a window of ``W``;
2. fires a detection when the statistic drops below ``threshold`` x the window
   mean (strict ``<``, checked only once the window is full: §5);
3. on a detection (inside ``lax.cond``, all shapes static) closes the open
   cell -- merges its weights into ``bank``, ORs its mask into ``frozen``,
   stores its mask bit-packed -- and opens a new one with a fresh mask,
   fresh optimizer moments and weights taken from ``bank`` (so weights no cell
   used start at 0, §4.3);
4. takes one masked SGD step of the cross-entropy over all classes on the open
   cell (the triggering batch trains the new cell, §5 step 4).

``end_task`` (called once, at the end of the stream) closes the last cell.
``predict`` runs the live cells (``bank`` restricted to each mask) and
combines them; ``prepare_predict`` builds the union network once per
evaluation.

Two protocols (config ``serena.protocol``), recorded in results.json:

``official``  reproduces the official code, task identity included: the
              statistic is the running accuracy since the start of the true
              task (reset by ``batch["new_task"]``, so the config must set
              ``scenario.reveal_boundaries=True``); weight decay and momentum
              move frozen weights inside the open cell (coupled decay on a
              gradient zeroed only at frozen positions, §4.4) and the merge
              copies every nonzero working weight (§10.8); masks are
              Bernoulli draws; at test time data of true task ``t`` is voted
              on by cells ``0..t`` with weights ``m + 1``, ties to the
              earliest voter (§7).  The loop passes the true task id to both
              evaluation passes (:func:`task_id_at_test`).
``task_free`` (default) sees no boundary and no task id, in training or at
              test time: the statistic is an exponential moving average of
              batch accuracy reset only by its own detection; frozen weights
              are bit-identical (the update is applied only at
              ``mask & ~frozen``); masks have exact per-layer counts; the
              prediction combines all cells by ``serena.vote`` (see
              :func:`combine_cells`).

Every piece of the protocol can also be set on its own (``serena.freeze``,
``mask_draw``, ``detector``, ``vote``, ``new_cell_init``); ``official`` fixes
them to the official values.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import struct

from clj.methods import sections
from clj.methods.common import TaskInfo, any_seed, cross_entropy
from clj.models.serena_nets import get_serena_model
from clj.sparse import init_masks, layer_densities, masked_optimizer, pack_mask, trainable_mask, unpack_mask

PyTree = Any

# The valid values, defaults and checks of config.serena live in the JAX-free clj.methods.sections.
PROTOCOLS = sections.SERENA_PROTOCOLS
FREEZE_MODES = sections.SERENA_FREEZE_MODES
MASK_DRAWS = sections.SERENA_MASK_DRAWS
DETECTORS = sections.SERENA_DETECTORS
VOTES = sections.SERENA_VOTES
NEW_CELL_INITS = sections.SERENA_NEW_CELL_INITS
OPTIMS = sections.SERENA_OPTIMS


PROTOCOL_DEFAULTS = sections.SERENA_PROTOCOL_DEFAULTS  # protocol -> the value every "" knob takes


def default_config() -> ml_collections.ConfigDict:
    """The ``config.serena`` block with the official code's defaults (spec §6).

    ``""`` / negative values mean "the protocol's choice" (``PROTOCOL_DEFAULTS``).
    """
    return ml_collections.ConfigDict(sections.SERENA.defaults)


def _serena_cfg(config) -> ml_collections.ConfigDict:
    base = default_config()
    if "serena" in config:
        for k, v in config.serena.items():
            base[k] = v
    return base


def resolved(config) -> dict:
    """The effective protocol knobs of a config (protocol defaults filled in).

    Raises:
      ConfigError: an unknown protocol or knob value, or an ``official``
        protocol with a knob set to something else than the official value
        (:func:`clj.methods.sections.serena_resolved`).
    """
    return sections.serena_resolved(sections.merged(sections.SERENA, config))


def validate_config(config) -> None:
    """Checks the SERENA fields of a config (the checks live in
    :data:`clj.methods.sections.SERENA`; ``clj.config.validate`` runs them).

    Raises:
      ConfigError: naming the bad value and what is valid.
    """
    sections.get_section("serena", config)
    from clj.config import ConfigError
    from clj.methods.serena_presets import class_order_follows_seed
    if int(config.num_seeds) > 1 and class_order_follows_seed(config):
        raise ConfigError(f"num_seeds={config.num_seeds} is invalid while scenario.class_order_seed follows "
                          "seed (the official per-seed class order): one program cannot vmap seeds whose tasks "
                          "differ. Run one process per seed (--config.seed=s --config.num_seeds=1), or fix the "
                          "order for every seed (--config.scenario.class_order_seed=0).")


def task_id_at_test(config) -> tuple[bool, bool]:
    """Loop hook: (task-IL pass gets the true task id, class-IL pass gets it).

    Both are True only under ``protocol='official'``, whose evaluation picks
    the voters from the true task of the test data (spec §7)."""
    off = _serena_cfg(config).protocol == "official"
    return off, off


# ------------------------------------------------------------------ state
@dataclasses.dataclass(frozen=True)
class Hparams:
    """Static (hashable) settings; see :func:`default_config` and the module doc."""

    protocol: str
    freeze: str
    mask_draw: str
    detector: str
    vote: str
    new_cell_init: str
    density: float
    densities: tuple[tuple[str, float], ...]
    window: int
    threshold: float
    ema_decay: float
    min_window_mean: float
    max_cells: int
    optim: str
    lr: float
    momentum: float
    nesterov: bool
    weight_decay: float
    eval_cell_batch: int
    image_shape: tuple[int, ...]

    def tx(self) -> optax.GradientTransformationExtraArgs:
        """PyTorch's SGD (coupled weight decay, Nesterov momentum) or Adam, as
        an optax chain (spec §11.4), through the masked update (its masks are
        passed by :func:`masked_step`)."""
        parts = []
        if self.weight_decay > 0:
            parts.append(optax.add_decayed_weights(self.weight_decay))
        if self.optim == "sgd":
            if self.momentum > 0:
                parts.append(optax.trace(decay=self.momentum, nesterov=self.nesterov))
        else:
            parts.append(optax.scale_by_adam())
        parts.append(optax.scale(-self.lr))
        return masked_optimizer(optax.chain(*parts))


@struct.dataclass
class State:
    """Everything SERENA carries (all shapes static; ``M = hp.max_cells``).

    Attributes:
      bank: the union network (params pytree, float32).
      work: the open cell's working weights (zero outside ``mask_cur``).
      mask_cur: bool pytree, the open cell's mask.
      frozen: bool pytree, OR of the masks of all closed cells.
      cell_masks: pytree of uint8 [M, ceil(n/8)], bit-packed mask of cell m
        in row m (rows >= n_cells are zero).
      opt_state: optimizer moments of ``work`` (reset per cell).
      n_cells: int32 [], cells opened so far (the open one included).
      closed: bool [], the last cell has been closed by ``end_task``.
      win: float32 [W] ring buffer of the detection statistic (percent).
      win_count: int32 [] pushes since the last reset (saturates at W + 1).
      win_pos: int32 [] next ring-buffer slot.
      correct, seen: int32 [] counters of the running-accuracy statistics.
      ema: float32 [] the ``ema_acc`` statistic (percent).
      step: int32 [] train steps taken.
      cell_start: int32 [M] step at which cell m opened (-1: not yet).
      dropped: int32 [] detections ignored because all M cells were used.
      class_sum: float32 [C, D] sum of the (normalised, flattened) training
        inputs of each class, D = H*W*C of the images; D = 0 unless
        ``vote='nearest_class_mean'`` (the only reader).
      cell_class_count: int32 [M, C] training examples of class c seen while
        cell m was open (labels only, never a task id).
      mask_key, init_key: PRNG keys of cell masks (``fold_in(mask_key, m)``)
        and of ``reinit_random`` values.
      hp, model: static settings and the Flax module.
      prepared: static; True on the output of :func:`prepare_predict`
        (``bank`` already holds the open cell, ``cell_masks`` its mask), which
        is for prediction only.
    """

    bank: PyTree
    work: PyTree
    mask_cur: PyTree
    frozen: PyTree
    cell_masks: PyTree
    opt_state: PyTree
    n_cells: jax.Array
    closed: jax.Array
    win: jax.Array
    win_count: jax.Array
    win_pos: jax.Array
    correct: jax.Array
    seen: jax.Array
    ema: jax.Array
    step: jax.Array
    cell_start: jax.Array
    dropped: jax.Array
    class_sum: jax.Array
    cell_class_count: jax.Array
    mask_key: jax.Array
    init_key: jax.Array
    hp: Hparams = struct.field(pytree_node=False)
    model: Any = struct.field(pytree_node=False)
    prepared: bool = struct.field(pytree_node=False, default=False)


def hparams_from_config(config, scenario, params) -> Hparams:
    s = _serena_cfg(config)
    r = resolved(config)
    dens = layer_densities(params, float(s.density), "erk")
    max_cells = int(s.max_cells) or scenario.num_tasks + 8
    return Hparams(protocol=s.protocol, freeze=r["freeze"], mask_draw=r["mask_draw"], detector=r["detector"],
                   vote=r["vote"], new_cell_init=r["new_cell_init"], density=float(s.density),
                   densities=tuple(sorted((k, float(v)) for k, v in dens.items())), window=int(s.window),
                   threshold=float(s.threshold), ema_decay=float(s.ema_decay),
                   min_window_mean=float(r["min_window_mean"]), max_cells=max_cells,
                   optim=config.optim.name, lr=float(config.optim.lr),
                   momentum=float(config.optim.get("momentum", 0.0)), nesterov=bool(s.nesterov),
                   weight_decay=float(config.optim.get("weight_decay", 0.0)),
                   eval_cell_batch=int(s.eval_cell_batch), image_shape=tuple(scenario.image_shape))


def model_from_config(config, num_classes: int):
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in config.model.items() if k != "name"}
    kw["dtype"] = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[str(kw.get("dtype", "float32"))]
    return get_serena_model(config.model.name, num_classes, **kw)


def draw_mask(hp: Hparams, key: jax.Array, params: PyTree) -> PyTree:
    """The mask of the cell whose key is ``key``: ERK densities ``hp.densities``,
    exact per-layer counts or independent Bernoulli draws (``hp.mask_draw``);
    drawn over the whole tensor, so cells overlap (spec §4.5, §10.2)."""
    return init_masks(key, params, dict(hp.densities), exact=hp.mask_draw == "exact_count")


def cell_key(state: State, m) -> jax.Array:
    return jax.random.fold_in(state.mask_key, m)


def init(rng: jax.Array, config, scenario) -> State:
    """A fresh State with cell 0 open: random init (U(±1/sqrt(fan_in)))
    restricted to cell 0's mask (spec §4.3)."""
    model = model_from_config(config, scenario.num_classes)
    k_init, k_mask, k_re = jax.random.split(rng, 3)
    params = model.init(k_init, jnp.zeros((1, *scenario.image_shape), jnp.float32))["params"]
    hp = hparams_from_config(config, scenario, params)
    mask0 = draw_mask(hp, jax.random.fold_in(k_mask, 0), params)
    work = jax.tree_util.tree_map(lambda w, m: jnp.where(m, w, 0.0), params, mask0)
    M = hp.max_cells
    packed = jax.tree_util.tree_map(lambda m: jnp.zeros((M, math.ceil(m.size / 8)), jnp.uint8), mask0)
    W = hp.window
    z = jnp.zeros((), jnp.int32)
    return State(bank=work, work=work, mask_cur=mask0,
                 frozen=jax.tree_util.tree_map(jnp.zeros_like, mask0), cell_masks=packed,
                 opt_state=hp.tx().init(work), n_cells=jnp.ones((), jnp.int32), closed=jnp.zeros((), bool),
                 win=jnp.zeros((W,), jnp.float32), win_count=z, win_pos=z, correct=z, seen=z,
                 ema=jnp.zeros((), jnp.float32), step=z,
                 cell_start=jnp.full((M,), -1, jnp.int32).at[0].set(0), dropped=z,
                 class_sum=jnp.zeros((scenario.num_classes,
                                      math.prod(scenario.image_shape) if hp.vote == "nearest_class_mean" else 0),
                                     jnp.float32),
                 cell_class_count=jnp.zeros((M, scenario.num_classes), jnp.int32), mask_key=k_mask,
                 init_key=k_re, hp=hp, model=model)


def begin_task(state: State, task: TaskInfo) -> State:
    """No-op: SERENA opens cells itself (the loop calls this once, at the
    start of a data-incremental stream)."""
    del task
    return state


# ------------------------------------------------------------------ cells
def merged_bank(state: State) -> PyTree:
    """``bank`` with the open cell's weights merged in (spec §4.3 step 4):
    ``faithful``: every nonzero working weight; ``exact``: the open cell's
    trainable weights (``mask_cur & ~frozen``).  Idempotent once closed."""
    if state.hp.freeze == "faithful":
        return jax.tree_util.tree_map(lambda b, w: jnp.where(w != 0, w, b), state.bank, state.work)
    return jax.tree_util.tree_map(lambda b, w, m, f: jnp.where(m & ~f, w, b),
                                  state.bank, state.work, state.mask_cur, state.frozen)


def close_cell(state: State) -> State:
    """Merges the open cell into ``bank``, freezes its mask and stores it
    (bit-packed) in row ``n_cells - 1`` of ``cell_masks``."""
    bank = merged_bank(state)
    frozen = jax.tree_util.tree_map(jnp.logical_or, state.frozen, state.mask_cur)
    row = state.n_cells - 1
    cm = jax.tree_util.tree_map(lambda c, m: c.at[row].set(pack_mask(m)), state.cell_masks, state.mask_cur)
    return state.replace(bank=bank, frozen=frozen, cell_masks=cm)


def _reset_detector(state: State, counters: bool) -> State:
    z = jnp.zeros((), jnp.int32)
    st = state.replace(win=jnp.zeros_like(state.win), win_count=z, win_pos=z, ema=jnp.zeros((), jnp.float32))
    return st.replace(correct=z, seen=z) if counters else st


def open_cell(state: State) -> State:
    """Opens cell ``n_cells``: a new mask from ``fold_in(mask_key, n_cells)``,
    working weights ``bank * mask`` (unused positions 0, or fresh random
    values with ``new_cell_init='reinit_random'``), fresh optimizer moments,
    detector window reset (spec §4.3 steps 5-7)."""
    hp = state.hp
    m = state.n_cells
    mask = draw_mask(hp, cell_key(state, m), state.bank)
    src = state.bank
    if hp.new_cell_init == "reinit_random":
        fresh = state.model.init(jax.random.fold_in(state.init_key, m),
                                 jnp.zeros((1, *hp.image_shape), jnp.float32))["params"]
        src = jax.tree_util.tree_map(lambda b, r, f: jnp.where(f, b, r), state.bank, fresh, state.frozen)
    work = jax.tree_util.tree_map(lambda w, k: jnp.where(k, w, 0.0), src, mask)
    st = state.replace(work=work, mask_cur=mask, opt_state=hp.tx().init(work), n_cells=m + 1,
                       cell_start=state.cell_start.at[m].set(state.step))
    # The official statistic's counters live until the next true boundary.
    return _reset_detector(st, counters=hp.detector != "running_since_task_start")


# ------------------------------------------------------------------ detection
def detector_push(state: State, n_correct: jax.Array, n: int, new_task: jax.Array):
    """Updates the statistic with one batch and decides whether to fire.

    Statistic c (percent), by ``hp.detector`` (spec §5, §11.1):
    ``running_since_task_start``: 100 * correct / seen, counters reset by
    ``new_task``; ``running_since_detection``: the same, reset by detection;
    ``batch_acc``: the batch accuracy; ``ema_acc``: an exponential moving
    average of it with decay ``hp.ema_decay`` (first value after a reset =
    the batch accuracy).  c is pushed into the window; once it holds W values
    pushed after c's predecessors (``win_count > W``), fire iff
    ``c < threshold * mean(last W values, c included)`` and the mean is at
    least ``hp.min_window_mean``.

    Returns:
      (state, fire bool [], c float32 []).
    """
    hp = state.hp
    W = hp.window
    correct, seen = state.correct, state.seen
    if hp.detector == "running_since_task_start":
        correct = jnp.where(new_task, 0, correct)
        seen = jnp.where(new_task, 0, seen)
    correct = correct + n_correct.astype(jnp.int32)
    seen = seen + n
    batch_acc = 100.0 * n_correct.astype(jnp.float32) / n
    if hp.detector in ("running_since_task_start", "running_since_detection"):
        c = 100.0 * correct.astype(jnp.float32) / jnp.maximum(seen, 1).astype(jnp.float32)
    elif hp.detector == "batch_acc":
        c = batch_acc
    else:
        c = jnp.where(state.win_count == 0, batch_acc, hp.ema_decay * state.ema + (1 - hp.ema_decay) * batch_acc)
    win = state.win.at[state.win_pos].set(c)
    count = jnp.minimum(state.win_count + 1, W + 1)
    mean = jnp.sum(win) / W
    fire = (count > W) & (c < hp.threshold * mean) & (mean >= hp.min_window_mean)
    st = state.replace(win=win, win_count=count, win_pos=(state.win_pos + 1) % W, correct=correct, seen=seen,
                       ema=c)
    return st, fire, c


# ------------------------------------------------------------------ training
def _loss(state: State, work: PyTree, x, y):
    logits = state.model.apply({"params": work}, x, train=True)
    return cross_entropy(logits, y), logits


def masked_step(state: State, grads: PyTree) -> State:
    """One optimizer step of the open cell through the one masked update
    (:func:`clj.sparse.masked_optimizer`; spec §4.4, §11.4).

    ``exact``: only the open cell's trainable weights ``mask_cur & ~frozen``
    move; frozen weights keep their bits whatever the optimizer.
    ``faithful``: the gradient is zeroed at frozen positions, but the update
    mask is the whole open cell, so coupled weight decay and momentum move
    the frozen weights inside the cell (the official code's leak)."""
    trainable = trainable_mask(state.mask_cur, state.frozen)
    update_mask = trainable if state.hp.freeze == "exact" else state.mask_cur
    upd, opt = state.hp.tx().update(grads, state.opt_state, state.work, update_mask=update_mask,
                                    grad_mask=trainable)
    return state.replace(work=optax.apply_updates(state.work, upd), opt_state=opt)


def train_step(state: State, batch: dict, rng: jax.Array):
    """One online step (module doc, spec §11.5).

    Args:
      state: the State.
      batch: ``x`` float32 [B, H, W, C] augmented images, ``y`` int32 [B],
        ``new_task`` bool [] (read only by the official statistic).
      rng: unused (masks come from ``mask_key``; kept for the protocol).

    Returns:
      (State, metrics: ``loss``, ``acc`` (prequential, before the step),
      ``stat`` (the statistic, percent), ``fire`` (0/1), ``n_cells``).
    """
    del rng
    x, y = batch["x"], batch["y"]
    B = y.shape[0]
    new_task = batch.get("new_task", jnp.zeros((), bool))
    (loss, logits), grads = jax.value_and_grad(lambda w: _loss(state, w, x, y), has_aux=True)(state.work)
    n_correct = jnp.sum(jnp.argmax(logits, -1) == y)
    st, det, c = detector_push(state, n_correct, B, new_task)
    can = st.n_cells < st.hp.max_cells
    fire = det & can

    def switch(s):
        s = open_cell(close_cell(s))
        (l2, _), g2 = jax.value_and_grad(lambda w: _loss(s, w, x, y), has_aux=True)(s.work)
        return s, l2, g2

    def maybe_switch(s):
        # Per-seed choice inside a branch taken when any seed fires (common.any_seed):
        # the costly switch (ERK draw, second gradient) runs only on firing steps.
        switched = switch(s)
        return jax.tree_util.tree_map(lambda a, b: jnp.where(fire, a, b), switched, (s, loss, grads))

    st, loss, grads = jax.lax.cond(any_seed(fire), maybe_switch, lambda s: (s, loss, grads), st)
    st = masked_step(st, grads).replace(step=st.step + 1, dropped=st.dropped + (det & ~can).astype(jnp.int32))
    onehot = jax.nn.one_hot(y, st.cell_class_count.shape[1], dtype=jnp.float32)          # [B, C]
    st = st.replace(cell_class_count=st.cell_class_count.at[st.n_cells - 1].add(
        jnp.sum(onehot, 0).astype(jnp.int32)))
    if st.class_sum.shape[1]:
        st = st.replace(class_sum=st.class_sum + onehot.T @ x.reshape(B, -1).astype(jnp.float32))
    metrics = {"loss": loss, "acc": n_correct.astype(jnp.float32) / B, "stat": c,
               "fire": fire.astype(jnp.float32), "n_cells": st.n_cells.astype(jnp.float32)}
    return st, metrics


def end_task(state: State, task_data) -> State:
    """Closes the open cell (the official code's explicit end-of-stream close,
    spec §10.14).  Called once, at the end of a data-incremental stream."""
    del task_data
    return close_cell(state).replace(closed=jnp.ones((), bool))


# ------------------------------------------------------------------ inference
def prepare_predict(state: State) -> State:
    """Loop hook, called once per evaluation before the batches: the union
    network with the open cell merged (:func:`merged_bank`) in ``bank`` and
    the open cell's packed mask in its ``cell_masks`` row, so that
    :func:`predict` does not rebuild them per batch.

    The result (``prepared=True``) is for :func:`predict` only; training goes
    on from the unprepared state.  Idempotent; :func:`predict` on an
    unprepared state calls it itself, with identical results."""
    if state.prepared:
        return state
    row = state.n_cells - 1
    cms = jax.tree_util.tree_map(lambda c, m: c.at[row].set(pack_mask(m)), state.cell_masks, state.mask_cur)
    return state.replace(bank=merged_bank(state), cell_masks=cms, prepared=True)


def cell_outputs(state: State, x: jax.Array, valid: jax.Array | None = None,
                 n_live: jax.Array | None = None) -> jax.Array:
    """Logits of the live cells, float32 [M, B, C]: cell m runs the union
    network (open cell merged) restricted to its mask.

    Args:
      state: the State (prepared or not, :func:`prepare_predict`).
      x: float32 [B, H, W, C] normalised inputs.
      valid: bool [B] rows that enter the BatchNorm statistics (all if None);
        padding rows get outputs too, but do not change the others'.
      n_live: int32 [], cells to compute (default ``n_cells``).
    Returns:
      float32 [M, B, C]; rows ``m >= n_live`` are zeros: they are not
      computed.  Cells run ``hp.eval_cell_batch`` at a time (vmapped), for
      ``ceil(n_live / eval_cell_batch)`` iterations of a loop whose trip
      count is data-dependent (under a vmap over seeds it runs the largest
      seed's count).
    """
    hp = state.hp
    st = prepare_predict(state)
    bank, cms = st.bank, st.cell_masks
    M = hp.max_cells
    G = min(hp.eval_cell_batch or M, M)
    n_groups = -(-M // G)
    n_live = st.n_cells if n_live is None else n_live
    shapes = jax.tree_util.tree_map(lambda b: b.shape, bank)
    # Pad the cell axis to whole groups (padding rows are never computed).
    cms = jax.tree_util.tree_map(lambda c: jnp.pad(c, ((0, n_groups * G - M), (0, 0))), cms)
    kw = {} if valid is None else {"valid": valid}

    def one(packed):
        masks = jax.tree_util.tree_map(lambda p, sh: unpack_mask(p, sh), packed, shapes,
                                       is_leaf=lambda a: isinstance(a, jax.Array))
        params = jax.tree_util.tree_map(lambda w, m: jnp.where(m, w, 0.0), bank, masks)
        return state.model.apply({"params": params}, x, train=False, **kw).astype(jnp.float32)

    C = jax.eval_shape(one, jax.tree_util.tree_map(lambda c: c[0], cms)).shape[-1]
    out = jnp.zeros((n_groups, G, x.shape[0], C), jnp.float32)

    def group(g, acc):
        rows = jax.tree_util.tree_map(lambda c: jax.lax.dynamic_slice_in_dim(c, g * G, G), cms)
        return acc.at[g].set(jax.vmap(one)(rows))

    out = jax.lax.fori_loop(0, (n_live + G - 1) // G, group, out)
    live = (jnp.arange(n_groups * G) < n_live)[:, None, None]
    return jnp.where(live, out.reshape(n_groups * G, x.shape[0], C), 0.0)[:M]


def combine_cells(logits: jax.Array, n_cells: jax.Array, rule: str, task_id: jax.Array | None = None,
                  route: jax.Array | None = None) -> jax.Array:
    """Combines per-cell logits [M, B, C] into one score [B, C] (argmax = prediction).

    Rules:
      ``official_task_indexed`` (spec §7): cells ``m <= task_id[b]`` vote for
        their argmax class with weight ``m + 1``; the most-voted class wins,
        ties go to the class whose earliest voter is earliest.  Needs the
        true task id.
      ``recency_vote``: the same vote over all cells (no task id): the newest
        cell weighs most, so old tasks' data is mostly judged by cells that
        never saw them.
      ``max_confidence``: the prediction of the single
        cell with the highest max-softmax probability.  The idea: a cell
        trained only on its own concept should be most confident there.
        Measured, it routes poorly (a single-head cell is confidently wrong
        off its concept; docs/serena.md).
      ``max_logit``: the same routing by the largest raw logit (an
        energy-style score, less saturated than the softmax).
      ``mean_prob``: the average of the cells' softmax probabilities.
      ``nearest_class_mean`` (task-free default): the prediction of cell ``route[b]``, chosen by
        :func:`route_by_class_mean` (the nearest class mean in input space,
        then the cell that trained most on that class).  Why: the cells'
        own confidences cannot route (each single-head cell is confidently
        wrong off its concept), while the classes' input means are
        statistics of the labelled training stream that need no task id.

    The vote rules return ``key + 0.5 * mean_prob``: ``key = score * (M + 2)
    + (M + 1 - first_voter)`` is integer and unique among voted classes, so
    argmax is exactly the vote; the half-unit ``mean_prob`` term orders only
    classes without votes (it matters when the loop masks classes, e.g. in
    the task-IL pass).

    Raises:
      ValueError: an unknown rule, ``official_task_indexed`` without
        ``task_id`` or ``nearest_class_mean`` without ``route``.
    """
    M, B, C = logits.shape
    m = jnp.arange(M)
    active = jnp.broadcast_to((m < n_cells)[:, None], (M, B))
    probs = jax.nn.softmax(logits, -1)
    act_f = active[..., None].astype(jnp.float32)
    mean_p = jnp.sum(probs * act_f, 0) / jnp.maximum(jnp.sum(act_f, 0), 1.0)
    if rule == "mean_prob":
        return jnp.log(mean_p + 1e-12)
    if rule in ("max_confidence", "max_logit", "nearest_class_mean"):
        if rule == "nearest_class_mean":
            if route is None:
                raise ValueError("vote='nearest_class_mean' needs route (the cell per example).")
            best = jnp.asarray(route, jnp.int32)
        else:
            score = jnp.max(probs, -1) if rule == "max_confidence" else jnp.max(logits, -1)
            conf = jnp.where(active, score, -jnp.inf)                    # [M, B]
            best = jnp.argmax(conf, 0)                                   # [B] (first on ties)
        return jnp.log(jnp.take_along_axis(probs, best[None, :, None], 0)[0] + 1e-12)
    if rule == "official_task_indexed":
        if task_id is None:
            raise ValueError("vote='official_task_indexed' needs task_id.")
        active = active & (m[:, None] <= jnp.asarray(task_id)[None, :])
    elif rule != "recency_vote":
        raise ValueError(f"vote={rule!r} is unknown; valid: {', '.join(VOTES)}.")
    onehot = jax.nn.one_hot(jnp.argmax(logits, -1), C, dtype=jnp.float32) * active[..., None]
    score = jnp.sum(onehot * (m + 1.0)[:, None, None], 0)                        # [B, C]
    first = jnp.min(jnp.where(onehot > 0, m[:, None, None], M + 1), 0).astype(jnp.float32)
    key = score * (M + 2) + (M + 1 - first)
    return key + 0.5 * mean_p


def predict(state: State, x: jax.Array, task_id: jax.Array | None = None,
            valid: jax.Array | None = None) -> jax.Array:
    """Scores float32 [B, C] (argmax = SERENA's prediction) of normalised
    inputs x float32 [B, H, W, C]: the live cells' forward passes combined by
    ``hp.vote`` (:func:`combine_cells`).

    Args:
      task_id: int32 [B], used only by the official rule; in ``official``
        protocol the loop passes it to both evaluation passes
        (:func:`task_id_at_test`).
      valid: bool [B], the rows that are real examples (padding False).  The
        stateless BatchNorm of the ResNet normalises with the statistics of
        the valid rows only, so a padded batch predicts its valid rows as the
        unpadded batch does (spec §10.6).  None: every row is real.

    For speed, call :func:`prepare_predict` once per evaluation and pass its
    result here; the scores are the same either way.
    """
    rule = state.hp.vote
    if rule == "official_task_indexed" and task_id is None:
        rule = "recency_vote"  # no task id given: every cell votes
    route = route_by_class_mean(state, x) if rule == "nearest_class_mean" else None
    return combine_cells(cell_outputs(state, x, valid), state.n_cells, rule, task_id, route)


def route_by_class_mean(state: State, x: jax.Array) -> jax.Array:
    """The cell that judges each input under ``vote='nearest_class_mean'``.

    The class c* whose mean training input (``class_sum / count``, classes
    seen so far only) is nearest to x in squared Euclidean distance, then the
    cell m that saw most training examples of c* (``cell_class_count``; the
    earliest on ties).  Uses labels of the training stream, never a task id.

    Args:
      state: the State (built with ``vote='nearest_class_mean'``).
      x: float32 [B, H, W, C] normalised inputs.
    Returns:
      int32 [B] cell indices.
    Raises:
      ValueError: the State keeps no class sums (another vote rule).
    """
    if state.class_sum.shape[1] == 0:
        raise ValueError("route_by_class_mean needs a State built with serena.vote='nearest_class_mean'.")
    count = jnp.sum(state.cell_class_count, 0)                                  # [C]
    means = state.class_sum / jnp.maximum(count, 1)[:, None].astype(jnp.float32)
    xf = x.reshape(x.shape[0], -1).astype(jnp.float32)
    d = jnp.sum(xf * xf, 1)[:, None] - 2.0 * xf @ means.T + jnp.sum(means * means, 1)[None, :]
    cls = jnp.argmin(jnp.where(count[None, :] > 0, d, jnp.inf), 1)             # [B]
    return jnp.argmax(state.cell_class_count[:, cls], 0).astype(jnp.int32)


# ------------------------------------------------------------------ reporting
def official_stream_accuracies(final_row, test_counts) -> dict:
    """The official code's end-of-stream figures (spec §8) from the final
    model's per-task accuracies.

    "Stream t" is the accuracy pooled over the test examples of tasks 0..t
    (the official counters are not reset between tasks); the last one is the
    official final accuracy.  "Incremental Accuracy" is the mean of the
    Stream t values (the official code rounds them to 2 decimals first; this
    does not).

    Args:
      final_row: float [T], the last accuracy-matrix row (fractions).
      test_counts: int [T], test examples per task.
    Returns:
      {"stream": float [T] list, "final_pooled": float,
       "incremental_accuracy": float} (fractions).
    Raises:
      ValueError: lengths differ, or a count is negative or all are 0.
    """
    a = np.asarray(final_row, np.float64)
    n = np.asarray(test_counts, np.float64)
    if a.shape != n.shape or a.ndim != 1:
        raise ValueError(f"final_row {a.shape} and test_counts {n.shape} must be 1-D of equal length.")
    if np.any(n < 0) or n.sum() <= 0:
        raise ValueError(f"test_counts={n.astype(int).tolist()} must be >= 0 with a positive sum.")
    cum_n = np.cumsum(n)
    stream = np.cumsum(a * n) / np.maximum(cum_n, 1)
    return {"stream": stream.tolist(), "final_pooled": float(stream[-1]),
            "incremental_accuracy": float(np.mean(stream))}


def memory_bytes(state: State) -> dict:
    """Bytes: the union network (float32) and the bit-packed masks of the
    cells used (spec §11.2 (b))."""
    n = int(state.n_cells)
    per_cell = sum(int(c.shape[-1]) for c in jax.tree_util.tree_leaves(state.cell_masks))
    model = sum(int(np.prod(b.shape)) * 4 for b in jax.tree_util.tree_leaves(state.bank))
    stats = int(state.class_sum.size) * 4 + int(state.cell_class_count.size) * 4
    return {"masks": n * per_cell, "model": model, "buffer": 0, "class_statistics": stats}


def result_extras(state: State) -> dict:
    """The protocol, its effective knobs, the cells opened and when, and the
    union density (results.json ``extra.serena``)."""
    hp = state.hp
    n = int(state.n_cells)
    frozen = jax.tree_util.tree_leaves(state.frozen)
    union = float(sum(int(jnp.sum(f)) for f in frozen) / max(sum(f.size for f in frozen), 1))
    return {"serena": {
        "protocol": hp.protocol, "freeze": hp.freeze, "mask_draw": hp.mask_draw, "detector": hp.detector,
        "vote": hp.vote, "new_cell_init": hp.new_cell_init, "density": hp.density, "window": hp.window,
        "threshold": hp.threshold, "ema_decay": hp.ema_decay, "min_window_mean": hp.min_window_mean,
        "max_cells": hp.max_cells, "n_cells": n,
        "cell_start_steps": [int(s) for s in np.asarray(state.cell_start)[:n]],
        "detections_dropped_at_capacity": int(state.dropped), "union_density": union,
        "layer_densities": dict(hp.densities),
        "optim": {"name": hp.optim, "lr": hp.lr, "momentum": hp.momentum, "nesterov": hp.nesterov,
                  "weight_decay": hp.weight_decay}}}


def capabilities(config):
    """SERENA's capabilities for ``config``: the official protocol sees task
    boundaries (its statistic resets per task, spec §7) and evaluates with the
    true task id; the task-free protocol sees neither."""
    from clj.methods.api import Capabilities

    off = _serena_cfg(config).protocol == "official"
    # predict(valid=) keeps padding rows out of the stateless BN statistics.
    return Capabilities(task_id_at_test=off, task_id_class_il=off, sees_boundaries=off, predict_uses_valid=True)


def _spec():
    from clj.methods.api import MethodSpec

    import dataclasses as dc

    # prepare_predict: once per evaluation, where the spec has that optional hook.
    extra = ({"prepare_predict": prepare_predict}
             if "prepare_predict" in {f.name for f in dc.fields(MethodSpec)} else {})
    return MethodSpec(init=init, begin_task=begin_task, train_step=train_step, end_task=end_task,
                      predict=predict, capabilities=capabilities, memory_bytes=memory_bytes,
                      result_extras=result_extras, validate_config=validate_config, **extra)


SPEC = _spec()
