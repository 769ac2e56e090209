"""Dark Experience Replay (Buzzega et al. 2020, Alg. 1 without the label term).

The protocol functions; the shared implementation is in
:mod:`clj.methods.rehearsal`.
"""
from clj.methods import rehearsal
from clj.methods.rehearsal import State, begin_task, end_task, memory_bytes, predict, train_step  # noqa: F401


def init(rng, config, scenario) -> State:
    """A fresh State (see :func:`clj.methods.rehearsal.init`)."""
    return rehearsal.init(rng, config, scenario, "der")


SPEC = rehearsal.make_spec("der")
