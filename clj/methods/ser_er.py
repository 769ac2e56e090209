"""SER over ER (reservoir replay; the ER + SER pattern is inferred, ser.md §5.2): the protocol functions; the implementation is :mod:`clj.methods.ser`."""
from clj.methods import ser
from clj.methods.ser import (  # noqa: F401
    State, begin_task, end_task, memory_bytes, predict, result_extras, ser_config, train_step)


def init(rng, config, scenario) -> State:
    """A fresh State (see :func:`clj.methods.ser.init`)."""
    return ser.init(rng, config, scenario, "er")


SPEC = ser.make_spec("er")
