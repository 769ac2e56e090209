"""Joint training: the upper bound.  At task t the loop trains on the union
of the training data of tasks 0..t (its spec declares ``cumulative_data``), continuing from the
previous parameters; the step is plain SGD on that data.
"""
from clj.methods import rehearsal
from clj.methods.rehearsal import State, begin_task, end_task, memory_bytes, predict, train_step  # noqa: F401



def init(rng, config, scenario) -> State:
    """A fresh State (see :func:`clj.methods.rehearsal.init`)."""
    return rehearsal.init(rng, config, scenario, "finetune")


SPEC = rehearsal.make_spec("finetune", cumulative_data=True)
