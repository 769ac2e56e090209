"""The device memory a run needs, from its compiled programs.

XLA's memory analysis (``jax.stages.Compiled.memory_analysis``) of the two
programs a run executes over and over -- the training chunk (K steps of every
vmapped run) and the evaluation counts -- gives, per device, the bytes of
their arguments (the runs' State, the resident data, the index arrays), of
their outputs (the new State, the metrics), of the outputs that reuse an
argument's buffer (donation), and of their temporaries.  A run's peak is the
larger of the two programs' ``arguments + outputs - aliased + temporaries``:
the data and the State are resident in both, and the two never run at once.

The programs are compiled for abstract arrays (``Runner(...,
abstract_data=True)``: shapes and shardings only), so nothing is put on a
device; with JAX's persistent compilation cache on (the default) the run
that follows reuses the compiled chunk.  The State is the one of task 0's
start: a method whose State grows at a task boundary (none with static
shapes does) would need more later.
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np


GIB = float(1 << 30)


@dataclasses.dataclass(frozen=True)
class ProgramMemory:
    """Bytes per device of a run's programs (XLA's memory analysis).

    Attributes:
      state: the State of every vmapped run (the chunk's State argument).
      data: the resident training and test splits and evaluation indices
        (0 with the ``stream`` placement, whose chunks are counted in the
        chunk's arguments).
      chunk_peak: the training chunk's arguments + outputs - aliased +
        temporaries.
      chunk_temp: its temporaries alone.
      eval_peak, eval_temp: the same for the evaluation program.
      steps: the training steps of the run, all tasks, per vmapped run.
      runs: vmapped runs (seeds x grid points).
      devices: devices the runs are spread over.
    """

    state: int
    data: int
    chunk_peak: int
    chunk_temp: int
    eval_peak: int
    eval_temp: int
    steps: int
    runs: int
    devices: int

    @property
    def peak(self) -> int:
        """Bytes per device the run needs at most: the larger program's peak."""
        return max(self.chunk_peak, self.eval_peak)

    def line(self) -> str:
        """One line: the peak and what it is made of, in GiB, and the steps."""
        g = lambda b: f"{b / GIB:.3f}"  # noqa: E731
        return (f"{g(self.peak)} GiB per device (State {g(self.state)}, resident data {g(self.data)}, "
                f"training chunk temporaries {g(self.chunk_temp)}, evaluation temporaries {g(self.eval_temp)}); "
                f"{self.steps} steps x {self.runs} run(s) on {self.devices} device(s)")


def _nbytes_per_device(tree) -> int:
    """Bytes of a tree of ShapeDtypeStructs / arrays on one device (its shard)."""
    total = 0
    for a in jax.tree_util.tree_leaves(tree):
        shape = a.shape
        sh = getattr(a, "sharding", None)
        if sh is not None and hasattr(sh, "shard_shape"):
            shape = sh.shard_shape(shape)
        total += int(np.prod(shape, dtype=np.int64)) * np.dtype(a.dtype).itemsize
    return total


def _peak(compiled) -> tuple[int, int]:
    m = compiled.memory_analysis()
    if m is None:  # a backend without the analysis
        return 0, 0
    peak = m.argument_size_in_bytes + m.output_size_in_bytes - m.alias_size_in_bytes + m.temp_size_in_bytes
    return int(peak), int(m.temp_size_in_bytes)


def program_memory(config, scenario=None) -> ProgramMemory:
    """Compiles a config's training chunk and evaluation for abstract arrays
    and reads their memory (module doc).  Nothing is put on a device and
    nothing is written.

    Args:
      config: a run's config (validated here as the loop does).
      scenario: its scenario (default: loaded from the config).

    Returns:
      the :class:`ProgramMemory` (bytes per device).

    Raises:
      ConfigError: a config that cannot run (the loop's own checks).
    """
    from clj.train.loop import Runner

    r = Runner(config, "/nonexistent-clj-memory-estimate", scenario=scenario, abstract_data=True)
    state_sh = r._state_sharding
    init, keys0, swept = r._init_program()
    state = jax.eval_shape(init, keys0, swept)
    # the State the first task's chunk runs on: after its begin_task (a method may set
    # per-task statics there), so that the program measured is the one the run compiles
    # first, and the run finds it in the persistent compilation cache
    info0 = r._plan_task_info(0)
    state = jax.eval_shape(lambda s: r._begin_task(s, info0), state)
    state = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=state_sh), state)
    S, K, B = r.S, r.K, r.B
    i32 = np.dtype(np.int32)
    if r.placement == "stream":
        shp = tuple(r.scenario.image_shape)
        bsh = r._chunk_sharding
        X = jax.ShapeDtypeStruct((S, K, B) + shp, np.uint8, sharding=bsh)
        if r.data.extra_shapes:  # a method's per-image extras, read with each chunk
            X = {"image": X, **{n: jax.ShapeDtypeStruct((S, K, B) + tuple(e), np.uint8, sharding=bsh)
                                for n, e in r.data.extra_shapes.items()}}
        Y = jax.ShapeDtypeStruct((S, K, B), i32, sharding=bsh)
        data_bytes = 0
    else:
        X, Y = r._train_X, r.data.Y
        data_bytes = _nbytes_per_device([X, Y, r.data.Xt, r.data.Yt])
    data_bytes += _nbytes_per_device([r.data.eval_idx, r.data.eval_task, r.data.eval_valid, r.data.task_cls])
    idx = jax.ShapeDtypeStruct((S, K, B), i32, sharding=r._chunk_sharding)
    key_data = jax.random.key_data(jax.random.PRNGKey(0))
    keys = jax.ShapeDtypeStruct((S,) + key_data.shape, key_data.dtype, sharding=state_sh)
    scalar = jax.ShapeDtypeStruct((), i32)
    chunk = r._chunk_fn().lower(state, X, Y, idx, keys, scalar, scalar, scalar, scalar, scalar).compile()
    chunk_peak, chunk_temp = _peak(chunk)
    eval_peak = eval_temp = 0
    if r.placement != "stream":
        d = r.data
        seen = jax.ShapeDtypeStruct((r.scenario.num_classes,), np.bool_, sharding=r._replicated)
        ev = r._eval_counts_fn().lower(state, d.Xt, d.Yt, d.eval_idx, d.eval_task, d.eval_valid, seen,
                                       d.task_cls, scalar).compile()
        eval_peak, eval_temp = _peak(ev)
    steps = int(sum(p.steps for p in r.plans))
    return ProgramMemory(state=_nbytes_per_device(state), data=data_bytes, chunk_peak=chunk_peak,
                         chunk_temp=chunk_temp, eval_peak=eval_peak, eval_temp=eval_temp, steps=steps,
                         runs=S, devices=int(r.n_dev))


def device_memory_bytes(device=None) -> int | None:
    """The memory one device offers (``memory_stats()['bytes_limit']``), or
    None where the backend does not say (the CPU)."""
    device = device or jax.devices()[0]
    try:
        stats = device.memory_stats()
    except Exception:  # noqa: BLE001 - backends without the call
        return None
    if not stats:
        return None
    return int(stats.get("bytes_limit") or 0) or None
