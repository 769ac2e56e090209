"""A JAX profiler trace of a few training chunks (``loop.profile=True``).

The trace covers ``loop.profile_chunks`` chunks of the first task this
process trains, from its second chunk on (the first one compiles); a task
with a single chunk is traced whole, its compilation included.  It is written
under ``<workdir>/profile/plugins/profile/<time>/`` as ``<host>.xplane.pb``
(TensorBoard's profile plugin: ``tensorboard --logdir <workdir>/profile``)
with ``perfetto_trace.json.gz`` beside it (opens in Perfetto,
ui.perfetto.dev).  Process 0 alone traces.  Each traced chunk is one
step of the trace (``jax.profiler.StepTraceAnnotation`` named ``clj_chunk``).

Off (the default), the loop never builds a :class:`ChunkProfiler` and its
chunk calls are untouched.
"""
from __future__ import annotations

import os

import jax

PROFILE_DIR = "profile"


class ChunkProfiler:
    """Traces chunks of one task through :meth:`wrap`.

    Args:
      directory: where the trace goes (``<workdir>/profile``).
      chunks: how many chunks to trace (>= 1).
      log: one-line messages (default: stdout).
    """

    def __init__(self, directory: str, chunks: int, log=None):
        self.directory = os.path.abspath(directory)
        self.chunks = max(1, int(chunks))
        self.log = log or (lambda msg: print(msg, flush=True))
        self.done = False      # a trace was written (or could not be): later tasks are not wrapped
        self._active = False
        self._where = ""

    def wrap(self, fn, t: int, start_chunk: int, n_chunks: int):
        """``fn`` (the compiled chunk), traced on the chunks of task ``t``
        chosen above; ``fn`` itself once a trace was written.  ``start_chunk``
        and ``n_chunks``: the chunks this task runs (a resumed task starts
        later)."""
        if self.done:
            return fn
        left = n_chunks - start_chunk
        first = 1 if left > 1 else 0                 # after the compiling call when there is one
        last = min(left, first + self.chunks) - 1    # calls first..last of this task are traced
        self._where = (f"chunk {start_chunk + first + 1}" if first == last else
                       f"chunks {start_chunk + first + 1}-{start_chunk + last + 1}") + f" of task {t + 1}"
        calls = [0]

        def traced(*args):
            i = calls[0]
            calls[0] += 1
            if i == first and not self.done:
                self._start()
            if not self._active or i > last:
                return fn(*args)
            with jax.profiler.StepTraceAnnotation("clj_chunk", step_num=start_chunk + i):
                out = fn(*args)
            if i == last:
                jax.block_until_ready(out)  # the trace holds the chunk's device work, not just its dispatch
                self.stop()
            return out

        return traced

    def _start(self) -> None:
        try:
            os.makedirs(self.directory, exist_ok=True)
            jax.profiler.start_trace(self.directory, create_perfetto_trace=True)
        except (RuntimeError, OSError, ValueError) as e:  # e.g. a trace already running in this process
            self.done = True
            self.log(f"[clj] loop.profile: no trace written ({type(e).__name__}: {str(e).splitlines()[0]}); "
                     "training goes on.")
            return
        self._active = True

    def stop(self) -> None:
        """Ends a running trace and says where it is (idempotent; the loop
        calls it when a task ends before its last traced chunk)."""
        if not self._active:
            return
        self._active = False
        self.done = True
        try:
            jax.profiler.stop_trace()
        except (RuntimeError, OSError) as e:
            self.log(f"[clj] loop.profile: the trace could not be written ({type(e).__name__}: "
                     f"{str(e).splitlines()[0]}); training goes on.")
            return
        self.log(f"[clj] profile of {self._where} written under {self.directory}; view it with "
                 f"tensorboard --logdir {self.directory} (profile tab) or open its perfetto_trace.json.gz in Perfetto.")


def trace_files(directory: str, suffix: str = ".xplane.pb") -> list[str]:
    """The trace files under ``directory`` (``<dir>/plugins/profile/<run>/*<suffix>``), sorted."""
    import glob

    return sorted(glob.glob(os.path.join(directory, "plugins", "profile", "*", "*" + suffix)))


__all__ = ["ChunkProfiler", "PROFILE_DIR", "trace_files"]
