"""Parameter-tree helpers: counting parameters and bytes."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def _leaf_size(leaf: Any) -> int:
    shape = getattr(leaf, "shape", None)
    if shape is None:
        return int(np.size(leaf))
    return int(np.prod(shape, dtype=np.int64))


def _leaf_nbytes(leaf: Any) -> int:
    nbytes = getattr(leaf, "nbytes", None)
    if nbytes is not None:
        return int(nbytes)
    dtype = getattr(leaf, "dtype", None)
    if dtype is None:
        return int(np.asarray(leaf).nbytes)
    return _leaf_size(leaf) * np.dtype(dtype).itemsize


def count_params(tree: Any) -> int:
    """Total number of scalar entries over all array leaves of a pytree.

    Works on concrete arrays and on ``jax.ShapeDtypeStruct`` leaves (e.g. the
    output of ``jax.eval_shape(model.init, ...)``).  Pass ``variables["params"]``
    to exclude BatchNorm running statistics.
    """
    return sum(_leaf_size(leaf) for leaf in jax.tree_util.tree_leaves(tree))


def param_bytes(tree: Any) -> int:
    """Total ``nbytes`` over all array leaves of a pytree (size * itemsize)."""
    return sum(_leaf_nbytes(leaf) for leaf in jax.tree_util.tree_leaves(tree))
