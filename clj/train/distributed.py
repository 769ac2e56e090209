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
