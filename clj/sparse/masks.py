"""Binary weight masks: densities (uniform, ERK), exact-count random masks,
the masked update, prune/regrow (magnitude, SET, RigL), ownership, and
bit-packed storage.

Sparse methods keep dense weight arrays and a boolean mask of the same shape.
Two kinds of mask (DESIGN.md, "Two kinds of mask"):

* a **weight mask** says which connections exist: the forward pass uses
  ``w * mask`` (:func:`apply_masks`);
* an **update mask** says which existing connections may move, normally
  ``mask_task & ~mask_frozen`` (:func:`trainable_mask`).  It multiplies the
  optimizer's *final* update (:func:`masked_updates` /
  :func:`mask_updates`), so gradient, momentum and weight decay of a frozen
  or pruned weight are exactly zero and it stays bit-identical.  Weights that
  become trainable again get their optimizer moments reset
  (:func:`reset_moments`).

Masks are pytrees with the structure of the params: a bool array for every
leaf (all-True for leaves that are never masked, e.g. biases and norms).
Every function here is pure jax with static shapes and counts, so it runs
inside ``jit``, ``vmap`` and ``lax.cond``.
"""
from __future__ import annotations

import math
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

PyTree = Any


# ---------------------------------------------------------------- selection
def default_maskable(path: tuple, leaf) -> bool:
    """Masked leaves by default: kernels of Dense/Conv layers (ndim >= 2, name
    ``kernel``); biases and norm scales are dense (SERENA §4.1, NISPA)."""
    name = str(getattr(path[-1], "key", path[-1])) if path else ""
    return name == "kernel" and getattr(leaf, "ndim", 0) >= 2


def _paths(tree) -> list[tuple]:
    return [p for p, _ in jax.tree_util.tree_flatten_with_path(tree)[0]]


def path_name(path: tuple) -> str:
    """'backbone/Dense_0/kernel' style name of a key path."""
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def maskable_names(params: PyTree, maskable: Callable = default_maskable) -> list[str]:
    return [path_name(p) for p, leaf in jax.tree_util.tree_flatten_with_path(params)[0] if maskable(p, leaf)]


# ---------------------------------------------------------------- densities
def erk_densities(shapes: dict[str, tuple[int, ...]], density: float, power_scale: float = 1.0,
                  dense: tuple[str, ...] = ()) -> dict[str, float]:
    """Per-layer densities of the Erdős–Rényi-Kernel distribution.

    Evci et al. 2020 (RigL), Sec. 3 / Appendix: the raw score of layer l is
    ``(sum(shape) / prod(shape)) ** power_scale``; a global ``eps`` is solved
    so that ``sum_l min(eps * raw_l, 1) * N_l = density * N``; layers whose
    density would exceed 1 are made dense and the solve repeats with their
    weights taken out of the budget (as SERENA's ``_erk`` does).

    Args:
      shapes: layer name -> weight shape (kernel shapes; order irrelevant).
      density: the overall target density, in (0, 1].
      power_scale: exponent of the raw score (1 = ERK).
      dense: names forced to density 1.

    Returns:
      name -> density in (0, 1].

    Raises:
      ValueError: density outside (0, 1], or a budget the dense layers alone
        exceed.
    """
    check_density(density)
    if density == 1.0:
        return {k: 1.0 for k in shapes}
    n = {k: int(np.prod(s)) for k, s in shapes.items()}
    raw = {k: (float(np.sum(s)) / float(np.prod(s))) ** power_scale for k, s in shapes.items()}
    total = sum(n.values())
    dense_set = set(dense)
    while True:
        budget = density * total - sum(n[k] for k in dense_set)
        free = [k for k in shapes if k not in dense_set]
        if budget <= 0 or not free:
            raise ValueError(f"density={density} is too low for layers forced dense: {sorted(dense_set)}.")
        eps = budget / sum(raw[k] * n[k] for k in free)
        over = [k for k in free if eps * raw[k] > 1.0]
        if not over:
            break
        dense_set.add(max(over, key=lambda k: raw[k]))
    return {k: (1.0 if k in dense_set else eps * raw[k]) for k in shapes}


def check_density(density: float) -> None:
    """Raises ValueError unless ``0 < density <= 1``."""
    if not (0.0 < float(density) <= 1.0):
        raise ValueError(f"density={density} is invalid: it must be in (0, 1].")


def layer_densities(params: PyTree, density: float, distribution: str = "erk",
                    maskable: Callable = default_maskable, dense: tuple[str, ...] = ()) -> dict[str, float]:
    """Densities for every maskable leaf of ``params`` (``uniform`` or ``erk``).

    Raises:
      ValueError: unknown distribution or density outside (0, 1].
    """
    check_density(density)
    shapes = {path_name(p): tuple(leaf.shape) for p, leaf in jax.tree_util.tree_flatten_with_path(params)[0]
              if maskable(p, leaf)}
    if distribution == "uniform":
        return {k: (1.0 if k in dense else density) for k in shapes}
    if distribution == "erk":
        return erk_densities(shapes, density, dense=dense)
    raise ValueError(f"distribution={distribution!r} is unknown; valid: 'uniform', 'erk'.")


def count_for(density: float, n: int) -> int:
    """The exact number of kept weights of a layer of ``n`` at ``density``:
    ``round(density * n)``, at least 1."""
    return int(min(n, max(1, round(density * n))))


# ---------------------------------------------------------------- random masks
def random_mask(rng: jax.Array, shape: tuple[int, ...], k: int, allowed: jax.Array | None = None) -> jax.Array:
    """A bool mask of ``shape`` with exactly ``k`` True entries drawn
    uniformly (without replacement) among ``allowed`` positions.

    When fewer than ``k`` positions are allowed, all allowed positions are set
    (the count is then ``allowed.sum()``).  ``k`` is static (Python int).
    """
    n = int(np.prod(shape))
    scores = jax.random.uniform(rng, (n,))
    if allowed is not None:
        scores = jnp.where(allowed.reshape(-1), scores, -1.0)
    return _top_k_mask(scores, k).reshape(shape)


def _top_k_mask(scores: jax.Array, k: int) -> jax.Array:
    """bool [n]: True at the k largest scores that are >= 0."""
    n = scores.shape[0]
    if k <= 0:
        return jnp.zeros((n,), bool)
    vals, idx = jax.lax.top_k(scores, min(k, n))
    return jnp.zeros((n,), bool).at[idx].set(vals >= 0)


def init_masks(rng: jax.Array, params: PyTree, density: float | dict[str, float], distribution: str = "erk",
               maskable: Callable = default_maskable, allowed: PyTree | None = None,
               exact: bool = True) -> PyTree:
    """Random masks for every maskable leaf, all-True masks elsewhere.

    Args:
      rng: PRNG key.
      params: the params pytree (only shapes are used).
      density: overall density (distributed by ``distribution``) or an
        explicit name -> density dict (names from :func:`path_name`).
      distribution: ``erk`` or ``uniform``.
      maskable: predicate (path, leaf) -> bool.
      allowed: optional pytree of bool: positions a new mask may use (e.g. not
        owned by a frozen subnetwork).
      exact: True = exactly ``count_for(d_l, N_l)`` weights per layer (top-k
        of uniform scores); False = independent Bernoulli(d_l) draws (the
        SERENA / NISPA official code).

    Returns:
      A bool pytree with the structure of ``params``.
    """
    dens = density if isinstance(density, dict) else layer_densities(params, density, distribution, maskable)
    leaves_p, treedef = jax.tree_util.tree_flatten_with_path(params)
    allowed_leaves = jax.tree_util.tree_leaves(allowed) if allowed is not None else [None] * len(leaves_p)
    keys = jax.random.split(rng, len(leaves_p))
    out = []
    for (path, leaf), key, al in zip(leaves_p, keys, allowed_leaves):
        name = path_name(path)
        if not maskable(path, leaf) or name not in dens:
            out.append(jnp.ones(leaf.shape, bool))
            continue
        d = float(dens[name])
        if exact:
            out.append(random_mask(key, leaf.shape, count_for(d, int(np.prod(leaf.shape))), al))
        else:
            m = jax.random.bernoulli(key, d, leaf.shape)
            out.append(m if al is None else m & al)
    return jax.tree_util.tree_unflatten(treedef, out)


# ---------------------------------------------------------------- apply / update
def apply_masks(params: PyTree, masks: PyTree) -> PyTree:
    """``w * mask`` for every leaf (the forward pass of a sparse network)."""
    return jax.tree_util.tree_map(lambda w, m: w * m.astype(w.dtype), params, masks)


def trainable_mask(task_mask: PyTree, frozen_mask: PyTree | None = None) -> PyTree:
    """The update mask ``mask_task & ~mask_frozen``."""
    if frozen_mask is None:
        return task_mask
    return jax.tree_util.tree_map(lambda t, f: jnp.logical_and(t, jnp.logical_not(f)), task_mask, frozen_mask)


def mask_updates(updates: PyTree, update_mask: PyTree) -> PyTree:
    """Multiplies an optimizer's final updates by the update mask: frozen and
    pruned weights receive an update of exactly zero."""
    return jax.tree_util.tree_map(lambda u, m: jnp.where(m, u, jnp.zeros_like(u)), updates, update_mask)


def masked_updates() -> optax.GradientTransformationExtraArgs:
    """An optax transformation that zeroes the update of every weight whose
    ``update_mask`` entry is False.  Put it **last** in the chain, and pass
    the mask at each step::

        tx = optax.chain(optax.sgd(0.1, momentum=0.9), clj.sparse.masked_updates())
        updates, s = tx.update(grads, s, params, update_mask=mask)

    Because it acts on the final update (after momentum, Adam moments and
    weight decay), a frozen weight is bit-identical after any number of
    steps.  Without ``update_mask`` it is the identity.
    """

    def init_fn(params):
        del params
        return optax.EmptyState()

    def update_fn(updates, state, params=None, *, update_mask=None, **extra):
        del params, extra
        if update_mask is None:
            return updates, state
        return mask_updates(updates, update_mask), state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def reset_moments(tx: optax.GradientTransformation, opt_state: PyTree, reset_mask: PyTree) -> PyTree:
    """Zeroes the optimizer state (momentum, Adam's mu/nu, ...) of the weights
    where ``reset_mask`` is True: newly freed or regrown weights start with
    fresh moments.  Uses ``optax.tree_utils.tree_map_params`` to find the
    params-shaped parts of ``opt_state``."""
    return optax.tree_utils.tree_map_params(
        tx, lambda s, r: jnp.where(r, jnp.zeros_like(s), s), opt_state, reset_mask,
        transform_non_params=lambda x: x)


# ---------------------------------------------------------------- prune / regrow
def magnitude_prune(weights: jax.Array, mask: jax.Array, k: int, allowed: jax.Array | None = None) -> jax.Array:
    """Drops the ``k`` active weights of smallest magnitude (among ``allowed``
    ones, e.g. not frozen).  Returns the new mask (exactly k fewer when k
    droppable weights exist)."""
    active = mask if allowed is None else mask & allowed
    # Largest score = smallest magnitude among droppable weights.
    scores = jnp.where(active.reshape(-1), 1.0 / (1.0 + jnp.abs(weights.reshape(-1)).astype(jnp.float32)), -1.0)
    drop = _top_k_mask(scores, k).reshape(mask.shape)
    return mask & ~drop


def random_regrow(rng: jax.Array, mask: jax.Array, k: int, allowed: jax.Array | None = None) -> jax.Array:
    """SET (Mocanu et al. 2018): activates ``k`` inactive positions chosen
    uniformly among ``allowed`` ones.  Returns the new mask."""
    cand = ~mask if allowed is None else ~mask & allowed
    return mask | random_mask(rng, mask.shape, k, cand)


def random_regrow_count(rng: jax.Array, mask: jax.Array, k: jax.Array | int,
                        allowed: jax.Array | None = None) -> jax.Array:
    """:func:`random_regrow` with a *traced* count: activates ``min(k,
    #candidates)`` inactive positions drawn uniformly without replacement
    among ``allowed`` ones (NISPA's growth, whose budget is only known inside
    the jitted step; Gurbuz & Dovrolis 2022, Sec. 3.5).

    Static shapes for any ``k`` (int32 []): the positions are ranked by a
    full ``argsort`` of uniform scores, so no recompile when ``k`` changes.
    Returns the new bool mask.
    """
    cand = (~mask if allowed is None else ~mask & allowed).reshape(-1)
    n = cand.shape[0]
    scores = jnp.where(cand, jax.random.uniform(rng, (n,)), -1.0)
    order = jnp.argsort(-scores)
    rank = jnp.zeros((n,), jnp.int32).at[order].set(jnp.arange(n, dtype=jnp.int32))
    grown = cand & (rank < jnp.asarray(k, jnp.int32))
    return mask | grown.reshape(mask.shape)


def gradient_regrow(grads: jax.Array, mask: jax.Array, k: int, allowed: jax.Array | None = None) -> jax.Array:
    """RigL (Evci et al. 2020, Sec. 3): activates the ``k`` inactive positions
    with the largest gradient magnitude among ``allowed`` ones."""
    cand = ~mask if allowed is None else ~mask & allowed
    g = jnp.abs(grads.reshape(-1)).astype(jnp.float32)
    scores = jnp.where(cand.reshape(-1), g / (1.0 + g), -1.0)  # in [0, 1); -1 = not a candidate
    return mask | _top_k_mask(scores, k).reshape(mask.shape)


class RewireResult(NamedTuple):
    mask: jax.Array      # bool, the new mask
    grown: jax.Array     # bool, positions activated by this rewiring
    dropped: jax.Array   # bool, positions removed


def prune_and_regrow(rng: jax.Array, weights: jax.Array, mask: jax.Array, k: int, mode: str = "set",
                     grads: jax.Array | None = None, prunable: jax.Array | None = None,
                     growable: jax.Array | None = None) -> RewireResult:
    """One fixed-count topology update of a layer: drop ``k`` by magnitude,
    grow ``k`` (``set``: random; ``rigl``: by gradient).  A position dropped
    now is not regrown in the same update.  Density stays exact whenever k
    droppable and k growable positions exist.

    Raises:
      ValueError: unknown mode, or ``rigl`` without grads.
    """
    if mode not in ("set", "rigl"):
        raise ValueError(f"mode={mode!r} is unknown; valid: 'set', 'rigl'.")
    pruned = magnitude_prune(weights, mask, k, prunable)
    dropped = mask & ~pruned
    grow_ok = ~dropped if growable is None else growable & ~dropped
    if mode == "set":
        new = random_regrow(rng, pruned, k, grow_ok)
    else:
        if grads is None:
            raise ValueError("mode='rigl' needs grads.")
        new = gradient_regrow(grads, pruned, k, grow_ok)
    return RewireResult(new, new & ~pruned, dropped)


def cosine_drop_fraction(step: jax.Array, total_steps: int, initial: float = 0.3) -> jax.Array:
    """RigL's drop-fraction schedule ``initial/2 * (1 + cos(pi * step / T))``."""
    return initial / 2.0 * (1.0 + jnp.cos(jnp.pi * step / max(total_steps, 1)))


# ---------------------------------------------------------------- ownership & storage
def update_ownership(owner: PyTree, mask: PyTree, owner_id: int | jax.Array) -> PyTree:
    """Ownership map (int32 per weight, -1 = free): weights in ``mask`` that
    are still free become owned by ``owner_id``; owned ones keep their owner."""
    return jax.tree_util.tree_map(lambda o, m: jnp.where((o < 0) & m, jnp.asarray(owner_id, o.dtype), o),
                                  owner, mask)


def init_ownership(params: PyTree) -> PyTree:
    return jax.tree_util.tree_map(lambda w: jnp.full(w.shape, -1, jnp.int32), params)


def pack_mask(mask: jax.Array) -> jax.Array:
    """Bit-packs a bool mask to uint8 [ceil(n / 8)] (8 weights per byte)."""
    return jnp.packbits(mask.reshape(-1).astype(jnp.uint8))


def unpack_mask(packed: jax.Array, shape: tuple[int, ...]) -> jax.Array:
    """Inverse of :func:`pack_mask`."""
    n = int(np.prod(shape))
    return jnp.unpackbits(packed)[:n].astype(bool).reshape(shape)


def masks_nbytes(masks: PyTree, maskable_only: PyTree | None = None) -> int:
    """Bytes to store ``masks`` bit-packed: ``ceil(n / 8)`` per leaf (leaves
    where ``maskable_only`` is False are not counted)."""
    leaves = jax.tree_util.tree_leaves(masks)
    sel = jax.tree_util.tree_leaves(maskable_only) if maskable_only is not None else [True] * len(leaves)
    return int(sum(math.ceil(int(np.prod(m.shape)) / 8) for m, s in zip(leaves, sel) if s))


def density(masks: PyTree, maskable: Callable = default_maskable) -> dict[str, float]:
    """Per-layer and overall (``'__total__'``) density of the maskable leaves."""
    out, kept, tot = {}, 0, 0
    for p, m in jax.tree_util.tree_flatten_with_path(masks)[0]:
        if not maskable(p, m):
            continue
        k, n = int(jnp.sum(m)), int(np.prod(m.shape))
        out[path_name(p)] = k / n
        kept += k
        tot += n
    out["__total__"] = kept / max(tot, 1)
    return out
