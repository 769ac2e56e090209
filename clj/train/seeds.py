"""How a compiled program runs the runs (seeds x grid points) a device holds:
batched with ``jax.vmap`` or one after another.

``loop.seed_batching`` (config):

- ``vmap``: every run's arrays gain a leading axis and each operation runs
  once for all of them.  A GPU or TPU shares each kernel launch between the
  runs, which is why the loop vmaps seeds.
- ``map``: the runs one after another inside one compiled program (one
  copy of the per-run program per run, their results stacked: no loop,
  since XLA:CPU runs a convolution's weight gradient inside a loop, even a
  one-trip loop, 20-50x slower; :func:`clj.train.runtime.auto_chunking`).
  On XLA:CPU vmapped per-run weights turn every convolution into a grouped
  convolution, several times slower than the runs' convolutions one after
  another.  Meant for one device (the CPU).

The default is ``vmap`` on every backend.  ``map`` pays in compile time (one
copy of the step per run), which on the small networks of a CPU test or
smoke run costs more than the grouped convolution saves: it gains only where
a step's convolutions are large (a ResNet-18 of width 16 at 32x32 on the
CPU: 2 seeds 168 s vmapped, 115 s one after another; a 4-filter CNN on 8x8
digits: 7.5 s vmapped, 10.5 s one after another; ``benchmarks/README.md``,
"Seeds of a convolutional network one after another on the CPU").

Both give every run the result it would have alone (the loop's tests compare
each with separate runs).  Under ``map`` there is no seed axis to reduce over,
so :func:`clj.methods.common.any_seed` returns each run's own flag.
"""
from __future__ import annotations

from typing import Callable, Sequence

import jax

SEED_BATCHING = ("vmap", "map")


def check_seed_batching(mode: str) -> str:
    """``mode`` if it is one of :data:`SEED_BATCHING`.

    Raises:
      ValueError: any other value (one line naming the valid ones).
    """
    if mode not in SEED_BATCHING:
        raise ValueError(f"loop.seed_batching={mode!r} is invalid; valid: {', '.join(SEED_BATCHING)}.")
    return mode


def over_runs(fn: Callable, in_axes: Sequence[int | None], mode: str, *, axis_name: str | None = None,
              spmd_axis_name: str | None = None) -> Callable:
    """``fn`` over the runs' leading axis, as ``jax.vmap(fn, in_axes, ...)``
    (``mode="vmap"``) or as an unrolled loop over the arguments whose
    ``in_axes`` entry is 0 (``mode="map"``; the others are shared by every
    run, ``axis_name`` and ``spmd_axis_name`` are then unused).

    Args:
      fn: the one-run function; its outputs are stacked on a new axis 0.
      in_axes: per positional argument, 0 (one slice per run) or None (shared).
      mode: ``"vmap"`` or ``"map"`` (:data:`SEED_BATCHING`).

    Raises:
      ValueError: an ``in_axes`` entry other than 0 or None, or an unknown mode.
    """
    in_axes = tuple(in_axes)
    if any(a not in (0, None) for a in in_axes):
        raise ValueError(f"in_axes={in_axes!r}: each entry must be 0 or None.")
    if mode == "vmap":
        return jax.vmap(fn, in_axes=in_axes, axis_name=axis_name, spmd_axis_name=spmd_axis_name)
    if mode != "map":
        raise ValueError(f"mode={mode!r} is invalid; valid: vmap, map.")
    per_run = [i for i, a in enumerate(in_axes) if a == 0]

    def mapped(*args):
        if len(args) != len(in_axes):
            raise TypeError(f"expected {len(in_axes)} arguments, got {len(args)}.")

        def one(xs):
            full = list(args)
            for i, x in zip(per_run, xs):
                full[i] = x
            return fn(*full)

        xs = tuple(args[i] for i in per_run)
        n = jax.tree_util.tree_leaves(xs)[0].shape[0]
        # one copy of the program per run, no loop around them (the module doc; even a
        # one-trip loop puts XLA:CPU's weight-gradient convolutions in the slow layout)
        outs = [one(jax.tree.map(lambda a: a[i], xs)) for i in range(n)]
        return jax.tree.map(lambda *o: jax.numpy.stack(o), *outs)

    return mapped
