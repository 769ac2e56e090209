"""Several processes (hosts) running one program through ``jax.distributed``.

Every process runs the same loop on its own devices; arrays are global
(:func:`put` builds them from the host copy each process holds), process 0
alone prints and writes files, and :func:`barrier` orders the writes against
the other processes' reads.  Checkpoints are saved by orbax from the global
arrays, each process writing its shards, so the workdir must be on a file
system every host sees.
"""
from __future__ import annotations

import jax
import numpy as np


def initialize(coordinator_address: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> None:
    """``jax.distributed.initialize`` with the CPU collectives clj needs.

    With no arguments JAX detects the cluster itself (SLURM, Cloud TPU, ...).
    On CPU-only processes (tests on one machine) the cross-process
    collectives go through gloo.

    Raises:
      ValueError: some but not all of the three arguments given.
    """
    given = [a is not None for a in (coordinator_address, num_processes, process_id)]
    if any(given) and not all(given):
        raise ValueError("--coordinator_address, --num_processes and --process_id go together; give all three, "
                         "or none of them where JAX detects the cluster itself (SLURM, Cloud TPU).")
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    except Exception:  # noqa: BLE001 - option absent in this JAX: nothing to choose
        pass
    if all(given):
        jax.distributed.initialize(coordinator_address=coordinator_address, num_processes=int(num_processes),
                                   process_id=int(process_id))
    else:
        jax.distributed.initialize()


def is_main() -> bool:
    """True in process 0, the only one that prints and writes."""
    return jax.process_index() == 0


def put(array, sharding) -> jax.Array:
    """A global ``jax.Array`` of the host ``array`` (the same on every process)
    laid out by ``sharding``; each process fills only its own devices."""
    array = np.asarray(array)
    return jax.make_array_from_callback(array.shape, sharding, lambda idx: array[idx])


def local_box(shape, sharding) -> tuple[slice, ...]:
    """The block of a global array of ``shape`` that this process's devices
    hold under ``sharding``: one ``slice`` per axis (the whole array alone).

    A process reading its part of a batch from disk reads exactly this block
    and builds the global array with :func:`put_local`.

    Raises:
      ValueError: the process's shards do not form one block (a mesh whose
        devices interleave processes along a sharded axis).
    """
    shape = tuple(int(n) for n in shape)
    blocks = {tuple(s.indices(n)[:2] for s, n in zip(idx, shape))
              for idx in sharding.addressable_devices_indices_map(shape).values()}
    box = tuple(slice(min(b[d][0] for b in blocks), max(b[d][1] for b in blocks)) for d in range(len(shape)))
    volume = lambda b: int(np.prod([hi - lo for lo, hi in b]))  # noqa: E731
    if sum(volume(b) for b in blocks) != int(np.prod([s.stop - s.start for s in box])):
        raise ValueError(f"this process's shards of an array {shape} under {sharding} do not form one block")
    return box


def put_local(local, box: tuple[slice, ...], shape, sharding) -> jax.Array:
    """A global ``jax.Array`` of ``shape`` from this process's block ``local``
    (the part of the global array at ``box``, see :func:`local_box`); axes past
    ``len(box)`` are whole."""
    local = np.asarray(local)

    def part(idx):
        return local[tuple(slice(s.indices(n)[0] - b.start, s.indices(n)[1] - b.start) if d < len(box) else s
                           for d, (s, n, b) in enumerate(zip(idx, shape, box + (None,) * len(shape)))
                           )]

    return jax.make_array_from_callback(tuple(shape), sharding, part)


def to_host(tree):
    """Every leaf of ``tree`` as a full numpy array on every process (an
    all-gather across processes where arrays span several)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return jax.tree.map(lambda a: np.asarray(multihost_utils.process_allgather(a, tiled=True))
                        if isinstance(a, jax.Array) else a, tree)


def barrier(name: str) -> None:
    """Waits until every process reached ``barrier(name)`` (no-op alone)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)
