"""Class-balanced exemplar memory with iCaRL herding, on the device.

The memory of the class-incremental methods of PyCIL (iCaRL, WA, DER, MEMO,
and the methods built on them).  Sources: Rebuffi et al., "iCaRL:
Incremental Classifier and Representation Learning", CVPR 2017, Alg. 4
(herding selection), Alg. 5 (reduction), Alg. 1 (nearest-mean-of-exemplars);
PyCIL's ``BaseLearner.build_rehearsal_memory`` conventions as
``docs/memo.md``, "The exemplar memory", describes them:

* a **fixed total** budget M (``m = floor(M / C_t)`` exemplars per class after
  task t, C_t = classes seen including the new ones) or a **fixed per-class**
  budget (``m = memory_per_class``, the memory grows with the classes);
* at each task end: **reduce** every old class to its first m exemplars
  (herding order, so the highest-priority ones stay), then **construct** the
  new classes' exemplars by herding;
* herding runs on L2-normalised features of all the class's training images
  (test transform), chooses iteratively the candidate that brings the mean
  of the chosen set closest to the class mean, without replacement, and stops
  early when a class runs out of candidates;
* NME class means: the mean of the L2-normalised features of a class's
  exemplars, L2-normalised again.

Every function is pure jax over arrays with static shapes, jit- and
vmap-able (the loop vmaps ``end_task`` over seeds): herding is a
``lax.fori_loop`` with a taken-mask, ``vmap``-ed over the classes of a task.
"""
from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

EPS = 1e-8


@struct.dataclass
class ExemplarMemory:
    """Exemplar arrays.  Filled slots are ``[0, count)`` (compacted).

    Attributes:
      x: uint8 [M, H, W, C] stored raw images.
      y: int32 [M] labels, -1 for empty slots.
      rank: int32 [M] position of the exemplar in its class's herding order
        (0 = chosen first); large for empty slots.
      class_means: float32 [num_classes, D] unit-norm NME class means (zero
        rows for classes without exemplars).
    """

    x: jax.Array
    y: jax.Array
    rank: jax.Array
    class_means: jax.Array

    @property
    def capacity(self) -> int:
        return int(self.y.shape[-1])

    def valid(self) -> jax.Array:
        """bool [M]: filled slots."""
        return self.y >= 0

    def count(self) -> jax.Array:
        """int32 []: number of stored exemplars."""
        return jnp.sum(self.valid()).astype(jnp.int32)


def init_memory(capacity: int, image_shape: tuple[int, ...], num_classes: int, feat_dim: int) -> ExemplarMemory:
    """An empty memory of ``capacity`` slots.

    Raises:
      ValueError: capacity < 1.
    """
    if capacity < 1:
        raise ValueError(f"exemplar memory capacity={capacity} is invalid: it must be >= 1.")
    return ExemplarMemory(x=jnp.zeros((capacity, *image_shape), jnp.uint8),
                          y=jnp.full((capacity,), -1, jnp.int32),
                          rank=jnp.full((capacity,), np.iinfo(np.int32).max, jnp.int32),
                          class_means=jnp.zeros((num_classes, feat_dim), jnp.float32))


def per_class_quota(seen_classes: int, memory_size: int, fixed_memory: bool = False,
                    memory_per_class: int = 20) -> int:
    """m, exemplars per class after a task (a Python int, static).

    ``fixed_memory=False``: ``floor(memory_size / seen_classes)`` (PyCIL
    ``samples_per_class``); ``True``: ``memory_per_class``.

    Raises:
      ValueError: seen_classes < 1, or a quota of 0 (budget smaller than the
        number of classes), naming the values.
    """
    if seen_classes < 1:
        raise ValueError(f"seen_classes={seen_classes} must be >= 1.")
    m = int(memory_per_class) if fixed_memory else int(memory_size) // int(seen_classes)
    if m < 1:
        raise ValueError(f"exemplar budget gives {m} exemplars per class for {seen_classes} classes "
                         f"(memory_size={memory_size}, fixed_memory={fixed_memory}, "
                         f"memory_per_class={memory_per_class}); valid: a budget of >= 1 per class.")
    return m


def memory_capacity(num_classes: int, memory_size: int, fixed_memory: bool = False,
                    memory_per_class: int = 20) -> int:
    """Slots needed for the whole run: M, or ``memory_per_class * num_classes``."""
    return int(memory_per_class) * int(num_classes) if fixed_memory else int(memory_size)


# --------------------------------------------------------------------- herding
def l2_normalize(v: jax.Array, axis: int = -1) -> jax.Array:
    """``v / (||v|| + 1e-8)`` (PyCIL's EPSILON)."""
    return v / (jnp.linalg.norm(v, axis=axis, keepdims=True) + EPS)


def herding_select(feats: jax.Array, valid: jax.Array, m: int) -> tuple[jax.Array, jax.Array]:
    """iCaRL herding of one class (Rebuffi et al. 2017, Alg. 4).

    Args:
      feats: float32 [n, D] features of the candidates (not yet normalised).
      valid: bool [n] which rows are candidates of the class.
      m: number of exemplars to choose (static).

    Returns:
      ``(idx, ok)``: int32 [m] chosen rows in selection order, bool [m] whether
      step k chose anything (False once the class's candidates run out).

    With v_i the normalised features, mu their (unnormalised) mean over the
    candidates and S the sum of the k-1 chosen ones, step k picks the
    remaining candidate minimising ``||mu - (S + v_i) / k||``; ties go to the
    lowest row.
    """
    v = l2_normalize(feats.astype(jnp.float32))
    w = valid.astype(jnp.float32)
    mu = jnp.sum(v * w[:, None], 0) / jnp.maximum(jnp.sum(w), 1.0)
    n = feats.shape[0]

    def body(k, carry):
        S, taken, idx, ok = carry
        cand = valid & ~taken
        d = jnp.linalg.norm(mu[None, :] - (S[None, :] + v) / (k + 1).astype(jnp.float32), axis=1)
        d = jnp.where(cand, d, jnp.inf)
        i = jnp.argmin(d).astype(jnp.int32)
        has = jnp.any(cand)
        S = S + jnp.where(has, v[i], 0.0)
        taken = taken.at[i].set(taken[i] | has)
        return S, taken, idx.at[k].set(i), ok.at[k].set(has)

    init = (jnp.zeros_like(mu), jnp.zeros((n,), bool), jnp.zeros((m,), jnp.int32), jnp.zeros((m,), bool))
    _, _, idx, ok = jax.lax.fori_loop(0, m, body, init)
    return idx, ok


def herding_classes(feats: jax.Array, labels: jax.Array, classes: jax.Array, m: int):
    """Herding for several classes at once (``vmap`` over ``classes``).

    Args:
      feats: float32 [n, D] features of all candidates (e.g. a task's
        training images).
      labels: int32 [n].
      classes: int32 [K] the classes to select for.
      m: exemplars per class (static).

    Returns:
      ``(idx, ok)``: int32 [K, m] rows of ``feats``, bool [K, m].
    """
    return jax.vmap(lambda c: herding_select(feats, labels == c, m))(classes)


def herding_reference(feats: np.ndarray, m: int) -> list[int]:
    """Brute-force NumPy herding (for tests): the same rule by explicit
    deletion from the candidate list, as iCaRL's pseudo-code states it."""
    v = feats / (np.linalg.norm(feats, axis=1, keepdims=True) + EPS)
    mu = v.mean(0)
    rest = list(range(v.shape[0]))
    chosen: list[int] = []
    S = np.zeros_like(mu)
    for k in range(1, m + 1):
        if not rest:
            break
        d = [np.linalg.norm(mu - (S + v[i]) / k) for i in rest]
        j = rest.pop(int(np.argmin(d)))
        chosen.append(j)
        S = S + v[j]
    return chosen


# --------------------------------------------------------- reduce / construct
def _compact(mem: ExemplarMemory, keep: jax.Array) -> ExemplarMemory:
    """Keeps the slots where ``keep`` (stable order) and moves them to the front."""
    order = jnp.argsort(jnp.where(keep, 0, 1), stable=True)
    keep_s = keep[order]
    big = jnp.iinfo(jnp.int32).max
    return mem.replace(x=mem.x[order], y=jnp.where(keep_s, mem.y[order], -1),
                       rank=jnp.where(keep_s, mem.rank[order], big))


def reduce_memory(mem: ExemplarMemory, m: int | jax.Array) -> ExemplarMemory:
    """iCaRL ReduceExemplarSet (Alg. 5): every class keeps its first ``m``
    exemplars in herding order; the memory is compacted."""
    return _compact(mem, mem.valid() & (mem.rank < m))


def add_exemplars(mem: ExemplarMemory, x: jax.Array, idx: jax.Array, ok: jax.Array,
                  classes: jax.Array) -> ExemplarMemory:
    """Appends herding results after the filled slots.

    Args:
      mem: a compacted memory (as ``reduce_memory`` leaves it).
      x: uint8 [n, H, W, C] the candidates' images.
      idx, ok: int32 / bool [K, m] from :func:`herding_classes`.
      classes: int32 [K] labels of the K classes.

    Exemplars that do not fit in the capacity are dropped (they are the last
    ones of the last classes; a budget computed by :func:`per_class_quota`
    always fits).
    """
    K, m = idx.shape
    flat_idx = idx.reshape(-1)
    flat_ok = ok.reshape(-1)
    flat_cls = jnp.repeat(classes.astype(jnp.int32), m)
    flat_rank = jnp.tile(jnp.arange(m, dtype=jnp.int32), K)
    order = jnp.argsort(jnp.where(flat_ok, 0, 1), stable=True)
    flat_idx, flat_ok, flat_cls, flat_rank = flat_idx[order], flat_ok[order], flat_cls[order], flat_rank[order]
    M = mem.capacity
    pos = mem.count() + jnp.arange(K * m, dtype=jnp.int32)
    pos = jnp.where(flat_ok & (pos < M), pos, M)  # M = out of bounds -> dropped
    return mem.replace(x=mem.x.at[pos].set(x[flat_idx], mode="drop"),
                       y=mem.y.at[pos].set(flat_cls, mode="drop"),
                       rank=mem.rank.at[pos].set(flat_rank, mode="drop"))


def class_means(feats: jax.Array, labels: jax.Array, valid: jax.Array, num_classes: int) -> jax.Array:
    """NME class means (iCaRL Alg. 1; PyCIL, no flip): float32 [num_classes, D].

    Args:
      feats: float32 [M, D] exemplar features; labels int32 [M]; valid bool [M].
    """
    v = l2_normalize(feats.astype(jnp.float32))
    seg = jnp.where(valid, labels, num_classes)
    sums = jax.ops.segment_sum(v, seg, num_classes + 1)[:num_classes]
    cnt = jax.ops.segment_sum(valid.astype(jnp.float32), seg, num_classes + 1)[:num_classes]
    mean = sums / jnp.maximum(cnt, 1.0)[:, None]
    return mean / (jnp.linalg.norm(mean, axis=1, keepdims=True) + EPS) * (cnt > 0)[:, None]


def nme_scores(feats: jax.Array, means: jax.Array) -> jax.Array:
    """Logit-like NME scores float32 [B, C]: minus the squared distance of the
    normalised feature to each class mean (argmax = nearest mean)."""
    f = l2_normalize(feats.astype(jnp.float32))
    return -(jnp.sum(f * f, 1, keepdims=True) - 2.0 * f @ means.T + jnp.sum(means * means, 1)[None, :])


def extract_features(feature_fn: Callable[[jax.Array], jax.Array], x: jax.Array,
                     transform: Callable[[jax.Array], jax.Array], batch_size: int = 256) -> jax.Array:
    """Features of uint8 images in fixed-size chunks (``lax.map``).

    Args:
      feature_fn: float32 [b, H, W, C] -> float32 [b, D] (eval mode).
      x: uint8 [n, H, W, C].
      transform: the test transform, uint8 [b, ...] -> float32 [b, ...].
      batch_size: chunk size (static).

    Returns:
      float32 [n, D].
    """
    n = x.shape[0]
    b = max(1, min(batch_size, n))
    nb = math.ceil(n / b)
    pad = nb * b - n
    xp = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)]) if pad else x
    out = jax.lax.map(lambda xb: feature_fn(transform(xb)), xp.reshape(nb, b, *x.shape[1:]))
    return out.reshape(nb * b, -1)[:n]


def update_memory(mem: ExemplarMemory, feature_fn, transform, x: jax.Array, y: jax.Array,
                  new_classes: tuple[int, ...], m: int, num_classes: int,
                  batch_size: int = 256) -> ExemplarMemory:
    """PyCIL ``build_rehearsal_memory`` (reduce, then construct, then means).

    Args:
      mem: the memory before the task's end.
      feature_fn, transform: see :func:`extract_features` (current network).
      x, y: uint8 [n, H, W, C] / int32 [n] the task's training data.
      new_classes: the task's classes (static).
      m: exemplars per class now (static; :func:`per_class_quota`).
      num_classes: width of ``class_means``.

    Returns:
      The memory with old classes reduced to m, new classes herded (at most m
      each) and every class mean recomputed with the current network.
    """
    feats = extract_features(feature_fn, x, transform, batch_size)
    idx, ok = herding_classes(feats, y, jnp.asarray(new_classes, jnp.int32), m)
    mem = reduce_memory(mem, m)
    mem = add_exemplars(mem, x, idx, ok, jnp.asarray(new_classes, jnp.int32))
    mfeats = extract_features(feature_fn, mem.x, transform, batch_size)
    return mem.replace(class_means=class_means(mfeats, mem.y, mem.valid(), num_classes))


def sample_exemplars(mem: ExemplarMemory, rng: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """``n`` slots uniformly with replacement among the filled ones.

    Returns int32 [n] slot indices and bool [n] (all False when empty)."""
    c = mem.count()
    idx = jax.random.randint(rng, (n,), 0, jnp.maximum(c, 1))
    return idx, jnp.broadcast_to(c > 0, (n,))


def exemplar_bytes(mem: ExemplarMemory) -> int:
    """Bytes of the stored images (count x H x W x C, uint8), the quantity
    the memory-aligned protocol counts (``docs/memo.md``, "The memory-aligned
    (fair) budget")."""
    per = int(np.prod(mem.x.shape[1:]))
    return int(mem.count()) * per


# ------------------------------------------------------- memory-aligned budget
def fair_exemplars(kind: str, backbone_params: int, num_tasks: int, image_bytes: int,
                   base_exemplars: int = 2000, generalized_params: int = 0,
                   specialized_params: int = 0) -> int:
    """Exemplars that give a method DER's byte budget (MEMO, Zhou et al.,
    ICLR 2023, Sec. 5 / App. "fair" protocol; 4 bytes per parameter, FC
    excluded, ``image_bytes`` per exemplar).

    DER's budget is ``num_tasks`` backbones plus ``base_exemplars``:

    * ``"dynamic_er"`` (DER of Yan et al.): ``base_exemplars``;
    * ``"single"`` (iCaRL, WA, Replay...): ``base + floor(P (T-1) 4 / I)``;
    * ``"memo"``: ``base + floor((T P - (P_g + T P_s)) 4 / I)``.

    Raises:
      ValueError: an unknown kind, naming the valid ones.
    """
    P, T, Ib = int(backbone_params), int(num_tasks), int(image_bytes)
    if kind == "dynamic_er":
        return int(base_exemplars)
    if kind == "single":
        return int(base_exemplars) + (P * (T - 1) * 4) // Ib
    if kind == "memo":
        return int(base_exemplars) + ((T * P - (int(generalized_params) + T * int(specialized_params))) * 4) // Ib
    raise ValueError(f"fair budget kind={kind!r} is unknown; valid: dynamic_er, single, memo.")
