"""SERENA at test time (``docs/serena.md``, "Prediction: the official vote"): every
live cell runs the union network restricted to its mask, and the cells'
outputs are combined by a vote or a routing rule.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from clj.methods.serena.cells import State, merged_bank, restrict, store_mask
from clj.methods.serena.settings import ROUTE_SPACES, VOTES
from clj.methods.serena.route import route_cells
from clj.sparse import unpack_mask


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
    return state.replace(bank=merged_bank(state), cell_masks=store_mask(state.cell_masks, state.n_cells - 1,
                                                                        state.mask_cur), prepared=True)


def cell_outputs(state: State, x: jax.Array, valid: jax.Array | None = None) -> jax.Array:
    """Logits of the live cells, float32 [M, B, C]: cell m runs the union
    network (open cell merged) restricted to its mask.

    Args:
      state: the State (prepared or not, :func:`prepare_predict`).
      x: float32 [B, H, W, C] normalised inputs.
      valid: bool [B] rows that enter the BatchNorm statistics (all if None);
        padding rows get outputs too, but do not change the others'.
    Returns:
      float32 [M, B, C]; rows ``m >= n_cells`` are zeros: they are not
      computed.  Cells run ``static.eval_cell_batch`` at a time (vmapped), for
      ``ceil(n_cells / eval_cell_batch)`` iterations of a loop whose trip
      count is data-dependent (under a vmap over seeds it runs the largest
      seed's count).
    """
    static = state.static
    st = prepare_predict(state)
    bank, cms = st.bank, st.cell_masks
    M = static.max_cells
    G = min(static.eval_cell_batch or M, M)
    n_groups = -(-M // G)
    n_live = st.n_cells
    shapes = jax.tree_util.tree_map(lambda b: b.shape, bank)
    # Pad the cell axis to whole groups (padding rows are never computed).
    cms = jax.tree_util.tree_map(lambda c: jnp.pad(c, ((0, n_groups * G - M), (0, 0))), cms)
    kw = {} if valid is None else {"valid": valid}

    def one(packed):
        masks = jax.tree_util.tree_map(lambda p, sh: unpack_mask(p, sh), packed, shapes,
                                       is_leaf=lambda a: isinstance(a, jax.Array))
        params = restrict(bank, masks)
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
      ``official_task_indexed`` (``docs/serena.md``, "Prediction: the
        official vote"): cells ``m <= task_id[b]`` vote for their argmax
        class with weight ``m + 1``; the most-voted class wins,
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
      ``nearest_class_mean_union`` / ``nearest_class_mean_cell0``: the same
        with class means of penultimate features of the union network / of
        cell 0 (:mod:`clj.methods.serena.route`).  The three class-mean
        rules are clj's, not SERENA's.

    The vote rules return ``key + 0.5 * mean_prob``: ``key = score * (M + 2)
    + (M + 1 - first_voter)`` is integer and unique among voted classes, so
    argmax is exactly the vote; the half-unit ``mean_prob`` term orders only
    classes without votes (it matters when the loop masks classes, e.g. in
    the task-IL pass).

    Raises:
      ValueError: an unknown rule, ``official_task_indexed`` without
        ``task_id`` or a class-mean rule without ``route``.
    """
    M, B, C = logits.shape
    m = jnp.arange(M)
    active = jnp.broadcast_to((m < n_cells)[:, None], (M, B))
    probs = jax.nn.softmax(logits, -1)
    act_f = active[..., None].astype(jnp.float32)
    mean_p = jnp.sum(probs * act_f, 0) / jnp.maximum(jnp.sum(act_f, 0), 1.0)
    if rule == "mean_prob":
        return jnp.log(mean_p + 1e-12)
    if rule in ("max_confidence", "max_logit") or rule in ROUTE_SPACES:
        if rule in ROUTE_SPACES:
            if route is None:
                raise ValueError(f"vote={rule!r} needs route (the cell per example).")
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
    ``static.vote`` (:func:`combine_cells`).

    Args:
      task_id: int32 [B], used only by the official rule; in ``official``
        protocol the loop passes it to both evaluation passes
        (:func:`clj.methods.serena.settings.capabilities`).
      valid: bool [B], the rows that are real examples (padding False).  The
        stateless BatchNorm of the ResNet normalises with the statistics of
        the valid rows only, so a padded batch predicts its valid rows as the
        unpadded batch does (``docs/serena.md``, "Backbones").  None: every row is real.

    For speed, call :func:`prepare_predict` once per evaluation and pass its
    result here; the scores are the same either way.
    """
    rule = state.static.vote
    if rule == "official_task_indexed" and task_id is None:
        rule = "recency_vote"  # no task id given: every cell votes
    st = prepare_predict(state)  # once, for the routing pass and the cells
    route = route_cells(st, x, rule, valid) if rule in ROUTE_SPACES else None
    return combine_cells(cell_outputs(st, x, valid), st.n_cells, rule, task_id, route)


def route_by_class_mean(state: State, x: jax.Array) -> jax.Array:
    """The cell that judges each input under ``vote='nearest_class_mean'``
    (clj's rule, not SERENA's; :mod:`clj.methods.serena.route`).

    The class c* whose mean training input (``class_sum / count``, classes
    seen so far only) is nearest to x in squared Euclidean distance, then the
    cell m that saw most training examples of c* (``cell_class_count``; the
    earliest on ties).  Uses labels of the training stream, never a task id.

    Args:
      state: the State (built with ``vote='nearest_class_mean'`` or
        ``route_stats='all'``).
      x: float32 [B, H, W, C] normalised inputs.
    Returns:
      int32 [B] cell indices.
    Raises:
      ValueError: the State keeps no pixel class sums.
    """
    return route_cells(state, x, "nearest_class_mean")
