"""Experience Replay with a reservoir buffer (Chaudhry et al. 2019; Mammoth `er`).

The protocol functions; the shared implementation is in
:mod:`clj.methods.rehearsal`.
"""
from clj.methods import rehearsal
from clj.methods.rehearsal import State, begin_task, end_task, memory_bytes, predict, train_step  # noqa: F401


def init(rng, config, scenario) -> State:
    """A fresh State (see :func:`clj.methods.rehearsal.init`)."""
    return rehearsal.init(rng, config, scenario, "er")


SPEC = rehearsal.make_spec("er")
