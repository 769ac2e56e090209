"""Checkpoints of the whole run: the State pytree plus the loop's progress.

Written with orbax's ``CheckpointManager`` after every task; orbax writes
each step into a temporary directory and renames it when complete, so a run
killed mid-write leaves the previous checkpoint intact (atomic).  The State is
saved as its state dict of global ``jax.Array``s (``flax.serialization.to_state_dict``: arrays only;
the static fields -- model, optimizer spec, hyperparameters -- are rebuilt
from the config) and restored into a freshly initialised State of the same
structure.
"""
from __future__ import annotations

import os

import jax
import numpy as np
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


class Checkpointer:
    """Saves and restores (State, progress dict) per task in ``directory``."""

    def __init__(self, directory: str, max_to_keep: int = 2):
        self.directory = os.path.abspath(directory)
        opts = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                            enable_async_checkpointing=False)
        self.manager = ocp.CheckpointManager(self.directory, options=opts)

    def latest(self) -> int | None:
        """The last completed task with a checkpoint, or None."""
        return self.manager.latest_step()

    def save(self, task: int, state, progress: dict) -> None:
        """Writes the checkpoint of task ``task`` (blocking, atomic)."""
        # the global jax arrays themselves: with several processes each writes its shards
        sd = _none_to_empty(serialization.to_state_dict(state))
        self.manager.save(task, args=ocp.args.Composite(state=ocp.args.StandardSave(sd),
                                                       meta=ocp.args.JsonSave(progress)))
        self.manager.wait_until_finished()

    def restore(self, target_state, task: int | None = None):
        """Restores into the structure of ``target_state``; returns
        ``(state, progress)``."""
        task = self.latest() if task is None else task
        if task is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        # restored into the target's shardings (each process reads its shards)
        target = _none_to_empty(serialization.to_state_dict(target_state))
        out = self.manager.restore(task, args=ocp.args.Composite(state=ocp.args.StandardRestore(target),
                                                                 meta=ocp.args.JsonRestore()))
        sd = _restore_nones(serialization.to_state_dict(target_state), out["state"])
        return serialization.from_state_dict(target_state, sd), out["meta"]


def _restore_nones(template, restored):
    if template is None:
        return None
    if isinstance(template, dict):
        return {k: _restore_nones(v, restored[k]) for k, v in template.items()}
    if getattr(template, "size", 1) == 0:
        return template
    return restored
