"""Test-time routing of task-free SERENA by nearest class mean.

**This is clj's rule, not SERENA's.**  SERENA's official code chooses the
voting cells with the true task id of the test data (cells ``0..t`` vote on
task ``t``, ``docs/serena.md``, "Prediction: the official vote"); a task-free learner has no
such id.  clj therefore routes each test input to one cell: the class whose
mean training representation is nearest to the input's (squared Euclidean
distance, classes seen in training only), then the cell that saw most
training examples of that class (``cell_class_count``; the earliest on
ties).  That cell's prediction is the answer
(:func:`clj.methods.serena.vote.combine_cells`).  The same idea as the
nearest-mean-of-exemplars classifier of iCaRL (Rebuffi et al., CVPR 2017,
§2.1), used here to pick a cell rather than a class.

Three spaces (config ``serena.vote``):

``nearest_class_mean`` (space ``pixels``)
    the normalised input, flattened: D = H*W*C.
``nearest_class_mean_union`` (space ``union``)
    the penultimate features of the union network (``bank`` with the open
    cell merged, the network every cell is a restriction of), L2-normalised
    as iCaRL normalises its features: D = ``model.feature_dim``.
``nearest_class_mean_cell0`` (space ``cell0``)
    the penultimate features of cell 0 (the union network restricted to the
    first cell's mask), L2-normalised.  Under ``freeze='exact'`` cell 0's
    weights are bit-identical from the moment it closes, so every later
    class is summed in one fixed space.

The means are running means over the training stream as it arrives: each
``train_step`` adds the batch's representations to per-class sums
(:func:`accumulate_class_means`) and the per-cell class counts give the
denominators.  No second pass over data: a data-incremental learner sees each
batch once.  Features are those of the network at that step, so a class's
mean averages the network's states over the steps that saw the class: the
union network keeps changing as later cells train (its old class means go
stale), cell 0 changes only while it is open (the first concept's means mix
early and late features).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from clj.methods import common
from clj.methods.serena.cells import State, merged_bank, restrict
from clj.methods.serena.settings import ROUTE_SPACES
from clj.sparse import unpack_mask

SUM_FIELDS = {"pixels": "class_sum", "union": "union_feat_sum", "cell0": "cell0_feat_sum"}
"""space -> the State field holding its per-class sums, float32 [C, D] (D = 0: not kept)."""


def space_dim(space: str, image_shape, model) -> int:
    """D of a space: ``prod(image_shape)`` for pixels, ``model.feature_dim``
    for the feature spaces.

    Raises:
      ValueError: an unknown space.
    """
    if space == "pixels":
        d = 1
        for s in image_shape:
            d *= int(s)
        return d
    if space in ("union", "cell0"):
        return int(model.feature_dim)
    raise ValueError(f"space={space!r} is unknown; valid: {', '.join(SUM_FIELDS)}.")


def cell0_mask(state: State):
    """Cell 0's mask (bool pytree): the open mask while cell 0 is the only
    cell, else row 0 of the packed masks."""
    shapes = jax.tree_util.tree_map(lambda m: m.shape, state.mask_cur)
    stored = jax.tree_util.tree_map(lambda p, sh: unpack_mask(p[0], sh), state.cell_masks, shapes,
                                    is_leaf=lambda a: isinstance(a, jax.Array))
    only = state.n_cells == 1
    return jax.tree_util.tree_map(lambda cur, old: jnp.where(only, cur, old), state.mask_cur, stored)


def space_params(state: State, space: str):
    """Params of the network whose penultimate features define ``space``
    (``union`` or ``cell0``), read from a prepared or unprepared State."""
    bank = state.bank if state.prepared else merged_bank(state)
    if space == "union":
        return bank
    if space == "cell0":
        return restrict(bank, cell0_mask(state))
    raise ValueError(f"space={space!r} has no network; valid: union, cell0.")


def representation(state: State, space: str, x: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    """Inputs in ``space``, float32 [B, D].

    Args:
      state: the State.
      space: ``pixels`` (flattened x), ``union`` or ``cell0`` (L2-normalised
        penultimate features, module doc).
      x: float32 [B, H, W, C] normalised inputs.
      valid: bool [B] rows in the stateless BatchNorm statistics (all if None).
    """
    if space == "pixels":
        return x.reshape(x.shape[0], -1).astype(jnp.float32)
    kw = {} if valid is None else {"valid": valid}
    _, f = state.model.apply({"params": space_params(state, space)}, x, train=False, return_features=True, **kw)
    return common.l2_normalize(f)


def accumulate_class_means(state: State, x: jax.Array, onehot: jax.Array) -> State:
    """Adds one training batch to the per-class sums of every space in
    ``state.static.class_means`` (the counts live in ``cell_class_count``).

    Args:
      state: the State after the batch's step.
      x: float32 [B, H, W, C] the batch's (augmented) inputs.
      onehot: float32 [B, C] one-hot labels.
    Returns:
      the State with ``class_sum`` / ``union_feat_sum`` / ``cell0_feat_sum``
      increased by ``onehot.T @ representation``.
    """
    upd = {}
    for space in state.static.class_means:
        field = SUM_FIELDS[space]
        upd[field] = getattr(state, field) + onehot.T @ representation(state, space, x)
    return state.replace(**upd)


def nearest_mean_cell(sums: jax.Array, cell_class_count: jax.Array, q: jax.Array) -> jax.Array:
    """The routing rule on given statistics: nearest seen class mean, then
    the cell that saw most of that class.

    Args:
      sums: float32 [C, D] per-class sums of training representations.
      cell_class_count: int32 [M, C] training examples of class c seen while
        cell m was open; class c's count is the column sum.
      q: float32 [B, D] test representations.
    Returns:
      int32 [B] cell indices (the earliest cell on ties; unseen classes are
      never chosen unless no class was seen).
    """
    count = jnp.sum(cell_class_count, 0)                                        # [C]
    means = sums / jnp.maximum(count, 1)[:, None].astype(jnp.float32)
    d = jnp.sum(q * q, 1)[:, None] - 2.0 * q @ means.T + jnp.sum(means * means, 1)[None, :]
    cls = jnp.argmin(jnp.where(count[None, :] > 0, d, jnp.inf), 1)             # [B]
    return jnp.argmax(cell_class_count[:, cls], 0).astype(jnp.int32)


def route_cells(state: State, x: jax.Array, rule: str, valid: jax.Array | None = None) -> jax.Array:
    """The cell that judges each input under a class-mean ``rule`` (module doc).

    Args:
      state: the State (prepared or not).
      x: float32 [B, H, W, C] normalised inputs.
      rule: ``nearest_class_mean``, ``nearest_class_mean_union`` or
        ``nearest_class_mean_cell0``.
      valid: bool [B] rows in the BatchNorm statistics of the feature pass.
    Returns:
      int32 [B] cell indices.
    Raises:
      ValueError: an unknown rule, or a State that keeps no means in the
        rule's space (built with another vote and ``route_stats=''``).
    """
    if rule not in ROUTE_SPACES:
        raise ValueError(f"rule={rule!r} is not a class-mean rule; valid: {', '.join(ROUTE_SPACES)}.")
    space = ROUTE_SPACES[rule]
    sums = getattr(state, SUM_FIELDS[space])
    if sums.shape[1] == 0:
        raise ValueError(f"vote={rule!r} needs the {space} class means: build the State with "
                         f"serena.vote={rule!r} or serena.route_stats='all'.")
    return nearest_mean_cell(sums, state.cell_class_count, representation(state, space, x, valid))
