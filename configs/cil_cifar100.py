"""Any class-IL method of the MEMO / PyCIL tables on CIFAR-100, one config:
``--config=configs/cil_cifar100.py:<method>,<init_cls>,<increment>[,<budget>]``.

``budget`` is ``fixed`` (2000 exemplars in total, the CIL survey's benchmark
table 5; the default) or ``fair`` (MEMO's memory-aligned budget, the MEMO
paper's App. Table 14).  ``B0 IncN`` is ``init_cls = increment = N``.  The
generalized blocks of MEMO / DER train after task 0 when the first task has
fewer than 50 classes (the reference scripts' ``--train_base``; MEMO paper
App. C.2).  Everything else is configs/cil_cifar100_common.py's PyCIL protocol.

    python launch.py --config=configs/cil_cifar100.py:icarl,10,10,fixed --workdir=runs/icarl_b0inc10
"""
from clj.configs.cil_cifar100_common import UPDATE_EPOCHS, cifar_config


def get_config(spec: str = "icarl,10,10,fixed"):
    parts = [p.strip() for p in str(spec).split(",")]
    if len(parts) not in (3, 4):
        raise ValueError(f"cil_cifar100 variant {spec!r} is invalid: give <method>,<init_cls>,<increment>[,fixed|fair].")
    method, init_cls, increment = parts[0], int(parts[1]), int(parts[2])
    budget = parts[3] if len(parts) == 4 else "fixed"
    if budget not in ("fixed", "fair"):
        raise ValueError(f"cil_cifar100 budget {budget!r} is invalid; valid: fixed, fair.")
    if method not in UPDATE_EPOCHS:
        raise ValueError(f"cil_cifar100 method {method!r} is invalid; valid: {', '.join(sorted(UPDATE_EPOCHS))}.")
    first = init_cls or increment
    c = cifar_config(method, init_cls or increment, increment, train_base=first < 50)
    if budget == "fixed":
        c.cil.budget = "fixed"
        c.cil.memory_size = 2000
    return c
