"""SERENA's concept cells (``docs/serena.md``, "Concept cells and their masks",
"Opening and closing a cell"): the State,
the random sparse mask of a cell, closing a cell (merge into the union
network, freeze, store its mask bit-packed), opening the next one, and the
open cell's optimizer step through the one masked update.
"""
from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import struct

from clj.methods.serena.settings import Static
from clj.methods.serena.detector import reset_detector
from clj.sparse import init_masks, pack_mask, trainable_mask

PyTree = Any


@struct.dataclass
class State:
    """Everything SERENA carries (all shapes static; ``M = static.max_cells``).

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
        ``vote='nearest_class_mean'`` (the only reader) or ``route_stats='all'``.
      union_feat_sum, cell0_feat_sum: float32 [C, F] sums of the
        L2-normalised penultimate features of the training inputs of each
        class under the union network / cell 0 at the step they were seen,
        F = ``model.feature_dim``; F = 0 unless the vote is
        ``nearest_class_mean_union`` / ``nearest_class_mean_cell0`` or
        ``route_stats='all'`` (:mod:`clj.methods.serena.route`).
      cell_class_count: int32 [M, C] training examples of class c seen while
        cell m was open (labels only, never a task id).
      mask_key, init_key: PRNG keys of cell masks (``fold_in(mask_key, m)``)
        and of ``reinit_random`` values.
      static, model: static settings and the Flax module.
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
    union_feat_sum: jax.Array
    cell0_feat_sum: jax.Array
    cell_class_count: jax.Array
    mask_key: jax.Array
    init_key: jax.Array
    static: Static = struct.field(pytree_node=False)
    model: Any = struct.field(pytree_node=False)
    prepared: bool = struct.field(pytree_node=False, default=False)


def draw_mask(static: Static, key: jax.Array, params: PyTree) -> PyTree:
    """The mask of the cell whose key is ``key``: ERK densities ``static.densities``,
    exact per-layer counts or independent Bernoulli draws (``static.mask_draw``);
    drawn over the whole tensor, so cells overlap (``docs/serena.md``, "Concept cells
    and their masks")."""
    return init_masks(key, params, dict(static.densities), exact=static.mask_draw == "exact_count")


def cell_key(state: State, m) -> jax.Array:
    return jax.random.fold_in(state.mask_key, m)


def restrict(params: PyTree, mask: PyTree) -> PyTree:
    """``where(mask, w, 0)`` for every leaf: a cell's weights (+0.0 outside it)."""
    return jax.tree_util.tree_map(lambda w, m: jnp.where(m, w, 0.0), params, mask)


def store_mask(cell_masks: PyTree, row, mask: PyTree) -> PyTree:
    """``cell_masks`` with ``mask`` bit-packed into row ``row``."""
    return jax.tree_util.tree_map(lambda c, m: c.at[row].set(pack_mask(m)), cell_masks, mask)


def merged_bank(state: State) -> PyTree:
    """``bank`` with the open cell's weights merged in (``docs/serena.md``, "Opening and
    closing a cell", step 1):
    ``faithful``: every nonzero working weight; ``exact``: the open cell's
    trainable weights (``mask_cur & ~frozen``).  Idempotent once closed."""
    if state.static.freeze == "faithful":
        return jax.tree_util.tree_map(lambda b, w: jnp.where(w != 0, w, b), state.bank, state.work)
    return jax.tree_util.tree_map(lambda b, w, m, f: jnp.where(m & ~f, w, b),
                                  state.bank, state.work, state.mask_cur, state.frozen)


def close_cell(state: State) -> State:
    """Merges the open cell into ``bank``, freezes its mask and stores it
    (bit-packed) in row ``n_cells - 1`` of ``cell_masks``."""
    bank = merged_bank(state)
    frozen = jax.tree_util.tree_map(jnp.logical_or, state.frozen, state.mask_cur)
    row = state.n_cells - 1
    return state.replace(bank=bank, frozen=frozen, cell_masks=store_mask(state.cell_masks, row, state.mask_cur))


def open_cell(state: State) -> State:
    """Opens cell ``n_cells``: a new mask from ``fold_in(mask_key, n_cells)``,
    working weights ``bank * mask`` (unused positions 0, or fresh random
    values with ``new_cell_init='reinit_random'``), fresh optimizer moments,
    detector window reset (``docs/serena.md``, "Opening and closing a
    cell", steps 3-4)."""
    static = state.static
    m = state.n_cells
    mask = draw_mask(static, cell_key(state, m), state.bank)
    src = state.bank
    if static.new_cell_init == "reinit_random":
        fresh = state.model.init(jax.random.fold_in(state.init_key, m),
                                 jnp.zeros((1, *static.image_shape), jnp.float32))["params"]
        src = jax.tree_util.tree_map(lambda b, r, f: jnp.where(f, b, r), state.bank, fresh, state.frozen)
    work = restrict(src, mask)
    st = state.replace(work=work, mask_cur=mask, opt_state=static.tx().init(work), n_cells=m + 1,
                       cell_start=state.cell_start.at[m].set(state.step))
    # The official statistic's counters live until the next true boundary.
    return reset_detector(st, counters=static.detector != "running_since_task_start")


def masked_step(state: State, grads: PyTree) -> State:
    """One optimizer step of the open cell through the one masked update
    (:func:`clj.sparse.masked_optimizer`; ``docs/serena.md``, "Freezing and the
    optimizer").

    ``exact``: only the open cell's trainable weights ``mask_cur & ~frozen``
    move; frozen weights keep their bits whatever the optimizer.
    ``faithful``: the gradient is zeroed at frozen positions, but the update
    mask is the whole open cell, so coupled weight decay and momentum move
    the frozen weights inside the cell (the official code's leak)."""
    trainable = trainable_mask(state.mask_cur, state.frozen)
    update_mask = trainable if state.static.freeze == "exact" else state.mask_cur
    upd, opt = state.static.tx().update(grads, state.opt_state, state.work, update_mask=update_mask,
                                        grad_mask=trainable)
    return state.replace(work=optax.apply_updates(state.work, upd), opt_state=opt)
