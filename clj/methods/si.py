"""SI (Zenke et al., ICML 2017): a quadratic penalty baseline.

The protocol functions; the shared implementation is in
:mod:`clj.methods.regularization`.
"""
from clj.methods import regularization
from clj.methods.regularization import State, begin_task, end_task, memory_bytes, predict, train_step  # noqa: F401


def init(rng, config, scenario) -> State:
    """A fresh State (see :func:`clj.methods.regularization.init`)."""
    return regularization.init(rng, config, scenario, "si")


SPEC = regularization.make_spec("si")
