"""Replay with a herding exemplar memory (PyCIL's Replay: cross-entropy on new data plus herded exemplars, no distillation).

The protocol functions; the implementation is :mod:`clj.methods.icarl`.
"""
from clj.methods import icarl
from clj.methods.icarl import (State, begin_task, end_task, memory_bytes, predict,  # noqa: F401
                               result_extras, task_steps, train_step)


def init(rng, config, scenario) -> State:
    """A fresh State (see :func:`clj.methods.icarl.init`)."""
    return icarl.init(rng, config, scenario, "replay")


SPEC = icarl.make_spec("replay")
