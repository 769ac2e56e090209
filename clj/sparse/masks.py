"""Binary weight masks: densities (uniform, ERK), exact-count random masks,
the one masked update, random regrowth, and bit-packed storage.

Sparse methods keep dense weight arrays and a boolean mask of the same shape.
Two kinds of mask (``docs/methods.md``, "The masked update"):

* a **weight mask** says which connections exist: the forward pass uses
  ``w * mask`` (:func:`apply_masks`);
* an **update mask** says which existing connections may move, normally
  ``mask_task & ~mask_frozen`` (:func:`trainable_mask`).
  :func:`masked_optimizer` wraps any optax optimizer so that gradient,
  momentum, weight decay and final update of every weight outside the update
  mask are exactly zero: frozen weights stay bit-identical.  SERENA, NISPA and
  every head or branch freeze of the class-incremental methods
  (:func:`clj.methods.common.apply_gradients`) update through it.

Masks are pytrees with the structure of the params: a bool array for every
leaf (all-True for leaves that are never masked, e.g. biases and norms).
Every function here is pure jax with static shapes and counts, so it runs
inside ``jit``, ``vmap`` and ``lax.cond``.
"""
from __future__ import annotations

import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

PyTree = Any


# ---------------------------------------------------------------- selection
def default_maskable(path: tuple, leaf) -> bool:
    """Masked leaves by default: kernels of Dense/Conv layers (ndim >= 2, name
    ``kernel``); biases and norm scales are dense (``docs/serena.md``,
    "Concept cells and their masks"; NISPA)."""
    name = str(getattr(path[-1], "key", path[-1])) if path else ""
    return name == "kernel" and getattr(leaf, "ndim", 0) >= 2


def path_name(path: tuple) -> str:
    """'backbone/Dense_0/kernel' style name of a key path."""
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


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


def _where_mask(tree: PyTree, mask: PyTree) -> PyTree:
    """``where(mask, x, 0)`` for every leaf (mask leaves bool or 0/1,
    broadcastable to the leaf)."""
    return jax.tree_util.tree_map(lambda x, m: jnp.where(m, x, jnp.zeros_like(x)), tree, mask)


def masked_optimizer(tx: optax.GradientTransformation) -> optax.GradientTransformationExtraArgs:
    """``tx`` restricted to the trainable weights: the one masked update of
    every sparse or freezing method (``docs/methods.md``, "The masked
    update").

    The masks are extra arguments of each update::

        tx = clj.sparse.masked_optimizer(optax.sgd(0.1, momentum=0.9))
        updates, s = tx.update(grads, s, params, update_mask=mask)
        params = optax.apply_updates(params, updates)

    With ``update_mask`` (bool pytree with the structure of ``params``, each
    leaf broadcastable to its parameter; True = may move) one update

    1. zeroes the gradient where ``grad_mask`` is False (default:
       ``update_mask``);
    2. runs ``tx`` on the masked gradient and on ``where(update_mask, params,
       0)``, so weight decay (coupled or decoupled) sees 0 at a frozen weight;
    3. zeroes ``tx``'s final update where ``update_mask`` is False.

    A weight outside ``update_mask`` therefore receives an update of exactly
    +0.0 (it keeps its value; a -0.0 becomes +0.0), and its momentum, Adam
    moments and decay stay exactly 0 from a fresh ``tx.init``.  Every method
    re-creates its optimizer when its masks change (SERENA per cell, NISPA per
    phase, the class-incremental methods per task), so no moment of a weight
    that becomes trainable again needs resetting.  At the weights that may
    move, the update is ``tx``'s, bit for bit, for any elementwise ``tx``
    (SGD, momentum, Adam, weight decay, schedules); a ``tx`` that mixes
    weights (global-norm clipping, trust ratios) sees frozen weights as 0.

    ``grad_mask`` wider or narrower than ``update_mask`` expresses a leak on
    purpose: SERENA's ``freeze='faithful'`` passes ``update_mask`` = the open
    cell and ``grad_mask`` = its trainable weights, so coupled weight decay and
    momentum move the frozen weights inside the cell as in the official code
    (``docs/serena.md``, "Freezing and the optimizer").

    Without masks the wrapper is ``tx``.  Its state is ``tx``'s own (same
    pytree), so checkpoints and code reading ``tx``'s state (e.g.
    ``optax.inject_hyperparams``' ``hyperparams``) are unchanged.
    """
    inner = optax.with_extra_args_support(tx)

    def update_fn(updates, state, params=None, *, update_mask=None, grad_mask=None, **extra):
        gm = update_mask if grad_mask is None else grad_mask
        if gm is not None:
            updates = _where_mask(updates, gm)
        if update_mask is not None and params is not None:
            params = _where_mask(params, update_mask)
        updates, state = inner.update(updates, state, params, **extra)
        if update_mask is not None:
            updates = _where_mask(updates, update_mask)
        return updates, state

    return optax.GradientTransformationExtraArgs(tx.init, update_fn)


# ---------------------------------------------------------------- regrowth
def random_regrow_count(rng: jax.Array, mask: jax.Array, k: jax.Array | int,
                        allowed: jax.Array | None = None) -> jax.Array:
    """Random regrowth with a *traced* count (SET's growth rule, Mocanu et
    al. 2018; NISPA's ``full_random`` growth, Gurbuz & Dovrolis 2022, Sec.
    3.5): activates ``min(k, #candidates)`` inactive positions drawn
    uniformly without replacement among ``allowed`` ones.

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


# ---------------------------------------------------------------- storage
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
