"""Checkpoints of the whole run: the State pytree plus the loop's progress.

Written with orbax's ``CheckpointManager`` (after every task, and wherever
the loop asks: a checkpoint's step is any increasing integer and its
metadata any JSON dict, so mid-task checkpoints use the same calls); orbax writes
each step into a temporary directory and renames it when complete, so a run
killed mid-write leaves the previous checkpoint intact (atomic).  The State is
saved as its state dict of global ``jax.Array``s (``flax.serialization.to_state_dict``: arrays only;
the static fields -- model, optimizer spec, hyperparameters -- are rebuilt
from the config) and restored into a freshly initialised State of the same
structure.
"""
from __future__ import annotations

import os
import shutil
import sys

import orbax.checkpoint as ocp
from flax import serialization


def _none_to_empty(tree):
    # orbax stores neither None leaves nor zero-size arrays: encode both as an
    # empty dict; restore takes them from the target (they hold no data).
    if tree is None:
        return {}
    if isinstance(tree, dict):
        return {k: _none_to_empty(v) for k, v in tree.items()}
    if getattr(tree, "size", 1) == 0:
        return {}
    return tree


class CheckpointError(RuntimeError):
    """No checkpoint of the workdir can be read (the message says what to do)."""


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200] if text else ''}"


class Checkpointer:
    """Saves and restores (State, metadata dict) under integer steps in ``directory``.

    A step is any non-negative integer that grows with the run (the loop's
    completed-task count, or a global step count for mid-task checkpoints);
    ``max_to_keep`` newest checkpoints are kept, older ones deleted after each
    save.  Unreadable checkpoints are skipped by :meth:`restore_latest` and
    moved to ``<directory>_unreadable/<step>``.
    """

    def __init__(self, directory: str, max_to_keep: int = 2):
        if max_to_keep < 1:
            raise ValueError(f"max_to_keep={max_to_keep} is invalid: it must be >= 1.")
        self.directory = os.path.abspath(directory)
        self.max_to_keep = max_to_keep
        opts = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                            enable_async_checkpointing=False)
        self.manager = ocp.CheckpointManager(self.directory, options=opts)

    def close(self) -> None:
        """Releases orbax's resources (the manager's threads)."""
        self.manager.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def latest(self) -> int | None:
        """The newest step with a (complete) checkpoint, or None."""
        return self.manager.latest_step()

    def steps(self) -> list[int]:
        """Every step with a complete checkpoint, ascending."""
        return sorted(self.manager.all_steps())

    def save(self, step: int, state, metadata: dict) -> None:
        """Writes the checkpoint of ``step`` (blocking, atomic: a process killed
        mid-write leaves the older checkpoints intact).

        Args:
          step: int >= 0, larger than every saved step.
          state: the State pytree of global ``jax.Array``s (with several
            processes, each writes its own shards).
          metadata: any JSON-serialisable dict (the loop's progress: completed
            tasks, in-task step, metric rows, ...).

        Raises:
          ValueError: ``step`` not larger than the newest saved step.
        """
        last = self.latest()
        if last is not None and step <= last:
            raise ValueError(f"checkpoint step={step} is invalid: it must be > the newest saved step {last}.")
        sd = _none_to_empty(serialization.to_state_dict(state))
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(sd),
                                                       meta=ocp.args.JsonSave(metadata)))
        self.manager.wait_until_finished()

    def restore(self, target_state, task: int | None = None):
        """Restores step ``task`` (default: the newest) into the structure of
        ``target_state``; returns ``(state, metadata)``.  No fallback: see
        :meth:`restore_latest`.

        Raises:
          FileNotFoundError: no checkpoint at all.
        """
        task = self.latest() if task is None else task
        if task is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        # restored into the target's shardings (each process reads its shards)
        target = _none_to_empty(serialization.to_state_dict(target_state))
        out = self.manager.restore(task, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                                 meta=ocp.args.JsonRestore()))
        sd = _restore_nones(serialization.to_state_dict(target_state), out["state"])
        return serialization.from_state_dict(target_state, sd), out["meta"]

    def restore_latest(self, target_state, log=None):
        """The newest *readable* checkpoint: ``(step, state, metadata)``, or
        ``None`` when the directory holds no checkpoint.

        A checkpoint that fails to restore (truncated or missing file, wrong
        structure) is reported in one line through ``log`` (default: stderr),
        moved to ``<directory>_unreadable/<step>`` so later saves of that step
        number succeed, and the previous one is tried.

        Raises:
          CheckpointError: checkpoints exist but none can be read.
        """
        log = log or (lambda msg: print(msg, file=sys.stderr))
        steps = self.steps()
        if not steps:
            return None
        bad = []
        for step in reversed(steps):
            try:
                state, meta = self.restore(target_state, step)
            except Exception as e:  # orbax/tensorstore raise many types for a damaged file
                log(f"[clj] checkpoint {os.path.join(self.directory, str(step))} is unreadable "
                    f"({_one_line(e)}); trying the previous one.")
                bad.append(step)
                continue
            self._quarantine(bad)
            return step, state, meta
        self._quarantine(bad)
        raise CheckpointError(f"no readable checkpoint in {self.directory} (steps {', '.join(map(str, steps))} "
                              f"moved to {self.directory}_unreadable); start over with --config.resume=False "
                              "or use a new --workdir.")

    def _quarantine(self, steps) -> None:
        if not steps:
            return
        dest = self.directory + "_unreadable"
        os.makedirs(dest, exist_ok=True)
        for step in steps:
            src = os.path.join(self.directory, str(step))
            if os.path.exists(src):
                target = os.path.join(dest, str(step))
                if os.path.exists(target):
                    shutil.rmtree(target)
                shutil.move(src, target)
        self.manager.reload()


def _restore_nones(template, restored):
    if template is None:
        return None
    if isinstance(template, dict):
        return {k: _restore_nones(v, restored[k]) for k, v in template.items()}
    if getattr(template, "size", 1) == 0:
        return template
    return restored
