"""WA with a herding exemplar memory (Zhao et al., CVPR 2020: distillation (weight 2, T=2) plus weight aligning of the new classes' head weights after each task >= 1).

The protocol functions; the implementation is :mod:`clj.methods.icarl`.
"""
from clj.methods import icarl
from clj.methods.icarl import (State, begin_task, end_task, memory_bytes, predict,  # noqa: F401
                               result_extras, task_steps, train_step)


def init(rng, config, scenario) -> State:
    """A fresh State (see :func:`clj.methods.icarl.init`)."""
    return icarl.init(rng, config, scenario, "wa")


SPEC = icarl.make_spec("wa")
