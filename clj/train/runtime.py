"""How a run uses the hardware: chunk length, the seeds x data mesh, the
persistent compilation cache.

Nothing here knows a method; :mod:`clj.train.loop` asks these functions once
per run and prints what they chose.
"""
from __future__ import annotations

import math
import os
from typing import Sequence

import jax
import numpy as np
from jax.sharding import Mesh

SEED_MESH_AXIS = "seed"
DATA_MESH_AXIS = "data"
MESH_MODES = ("auto", "seeds", "data")


def auto_chunking(backend: str, conv: bool, heavy_step: bool = False) -> tuple[int, int]:
    """Default (steps_per_call, unroll) for a backend and a kind of network.

    On the CPU, XLA runs the weight-gradient convolutions of a conv net inside
    a rolled ``lax.scan`` 20-50x slower than the same step alone, so conv nets
    get short, fully unrolled chunks there; MLPs gain from long rolled scans.
    On GPU/TPU a rolled scan of many steps removes the per-call overhead.
    ``benchmarks/bench_chunking.py`` measures the choice.

    Args:
      backend: ``jax.default_backend()`` (``cpu``, ``gpu``, ``tpu``, ...).
      conv: whether the network is convolutional (declared by the model
        registry or the method's spec, never guessed from a name).
      heavy_step: the method's step holds several networks (its spec says);
        unrolled conv chunks of it take minutes to compile on the CPU, so it
        gets one step per call there.
    Returns:
      (steps_per_call, unroll), both >= 1: the upper bound of the chunk
      length (:func:`choose_chunk` picks the run's length below it) and the
      scan's unroll factor.
    """
    if backend == "cpu":
        if conv:
            return (1, 1) if heavy_step else (4, 4)
        return (200, 1)
    return (100, 1)


def choose_chunk(task_steps: Sequence[int], max_len: int) -> int:
    """The one chunk length K of a run (compiled once).

    Every task runs ``ceil(s_t / K)`` calls of K steps; a last chunk's extra
    steps are masked no-ops.  K minimises the steps computed (real plus
    masked) plus one step's worth per host call, over ``1 <= K <= max_len``;
    ties go to the longer chunk.  E.g. 1,267 steps per task and ``max_len``
    200 give K = 181 (7 calls, nothing masked) instead of 200 (7 calls, 133
    masked steps).

    Args:
      task_steps: train steps of each task (ints >= 1).
      max_len: upper bound (``loop.steps_per_call`` or :func:`auto_chunking`).
    Raises:
      ValueError: empty ``task_steps``, a count < 1, or ``max_len`` < 1.
    """
    steps = [int(s) for s in task_steps]
    if not steps or min(steps) < 1 or max_len < 1:
        raise ValueError(f"choose_chunk needs task steps >= 1 and max_len >= 1; got {steps}, {max_len}")
    hi = min(int(max_len), max(steps))
    best, best_cost = hi, None
    for k in range(hi, 0, -1):
        calls = sum(math.ceil(s / k) for s in steps)
        cost = calls * k + calls
        if best_cost is None or cost < best_cost:
            best, best_cost = k, cost
    return best


def mesh_shape(num_seeds: int, num_devices: int, mode: str = "auto") -> tuple[int, int]:
    """(seed axis, data axis) sizes of the run's 2-D mesh.

    ``auto``: all devices on the seed axis when ``num_seeds`` is a multiple
    of the device count (each device holds whole seeds' states: 8 seeds on 4
    devices -> (4, 1)), otherwise all on the data axis (the batch and the
    evaluation examples; 1 or 2 seeds on 4 devices -> (1, 4)).  Mixed
    layouts (2, 2) are not chosen automatically: a method whose step has a
    conditional around a collective (NISPA's phase ends) deadlocked in them
    on XLA's CPU backend; ``seeds``/``data`` force a layout.
    ``seeds``: all devices on the seed axis (``num_seeds`` must be a multiple
    of the device count).  ``data``: all devices on the batch axis, each seed's
    state replicated.

    Raises:
      ValueError: an unknown mode, or ``seeds`` with a seed count the devices
        do not divide.
    """
    if mode not in MESH_MODES:
        raise ValueError(f"loop.mesh={mode!r} is unknown; valid: {', '.join(MESH_MODES)}.")
    if mode == "data":
        return 1, num_devices
    if mode == "seeds":
        if num_seeds % num_devices:
            raise ValueError(f"loop.mesh='seeds' needs num_seeds a multiple of the {num_devices} devices; "
                             f"got num_seeds={num_seeds} (use loop.mesh='auto' or 'data').")
        return num_devices, 1
    if num_seeds % num_devices == 0:
        return num_devices, 1
    return 1, num_devices


def make_mesh(num_seeds: int = 1, devices=None, mode: str = "auto") -> Mesh:
    """A 2-D ``Mesh`` with axes (``seed``, ``data``) over all (or the given)
    devices, shaped by :func:`mesh_shape`."""
    devs = np.asarray(devices if devices is not None else jax.devices()).reshape(-1)
    s, d = mesh_shape(num_seeds, devs.size, mode)
    return Mesh(devs.reshape(s, d), (SEED_MESH_AXIS, DATA_MESH_AXIS))


def enable_compilation_cache(cache_dir: str = "") -> str:
    """Turns on JAX's persistent compilation cache; returns its folder.

    A second run of the same config, and every run of a sweep that shares a
    program, loads the compiled executables instead of compiling again.

    Args:
      cache_dir: the folder; '' = ``$CLJ_CACHE_DIR`` or
        ``$XDG_CACHE_HOME/clj/jax`` (``~/.cache/clj/jax``).
    """
    if not cache_dir:
        from clj.cache import user_cache_dir

        cache_dir = os.environ.get("CLJ_CACHE_DIR") or str(user_cache_dir("jax"))
    os.makedirs(cache_dir, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", cache_dir)
    # cache what took noticeable time to compile (the train chunk, evaluation,
    # begin/end of task), not every tiny eager op
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    return cache_dir
