"""MEMO (Zhou et al., ICLR 2023): shared generalized stages, one specialized stage per task.

The protocol functions; the implementation is :mod:`clj.methods.expand`.
"""
from clj.methods import expand
from clj.methods.expand import (State, begin_task, end_task, memory_bytes, predict,  # noqa: F401
                                result_extras, train_step)
from clj.methods.icarl import task_steps  # noqa: F401


def init(rng, config, scenario) -> State:
    """A fresh State (see :func:`clj.methods.expand.init`)."""
    return expand.init(rng, config, scenario, "memo")


SPEC = expand.make_spec("memo")
