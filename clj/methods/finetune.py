"""Finetune: plain SGD on the stream, no protection against forgetting (the lower bound).

The protocol functions; the shared implementation is in
:mod:`clj.methods.rehearsal`.
"""
from clj.methods import rehearsal
from clj.methods.rehearsal import State, begin_task, end_task, memory_bytes, predict, train_step  # noqa: F401


def init(rng, config, scenario) -> State:
    """A fresh State (see :func:`clj.methods.rehearsal.init`)."""
    return rehearsal.init(rng, config, scenario, "finetune")


SPEC = rehearsal.make_spec("finetune")
