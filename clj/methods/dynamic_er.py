"""DER, dynamically expandable representation (Yan et al., CVPR 2021): one whole backbone per task; registered as dynamic_er since der is Dark Experience Replay.

The protocol functions; the implementation is :mod:`clj.methods.expand`.
"""
from clj.methods import expand
from clj.methods.expand import (State, begin_task, end_task, memory_bytes, predict,  # noqa: F401
                                result_extras, train_step)
from clj.methods.icarl import task_steps  # noqa: F401


def init(rng, config, scenario) -> State:
    """A fresh State (see :func:`clj.methods.expand.init`)."""
    return expand.init(rng, config, scenario, "der")


SPEC = expand.make_spec("der")
