"""Continual-learning methods.  Each is a module exporting the protocol of
DESIGN.md over its own ``State`` (a ``flax.struct.dataclass``):

* ``init(rng, config, scenario) -> State``
* ``begin_task(state, task: TaskInfo) -> State``
* ``train_step(state, batch, rng) -> (State, metrics)``  (pure, jit/vmap-able)
* ``end_task(state, task_data: dict) -> State``
* ``predict(state, x, task_id | None) -> logits``
* ``memory_bytes(state) -> dict`` (optional: buffer / masks / model bytes)

Optional module constants the loop reads: ``CUMULATIVE_DATA`` (train on the
union of seen tasks: joint), ``USES_TASK_ID_AT_TEST`` (predict uses the task
id, so task-IL evaluation calls it with the true task).
"""
from __future__ import annotations

import importlib

# name -> module path.  Methods of later issues register here.
METHODS = {
    "finetune": "clj.methods.finetune",
    "joint": "clj.methods.joint",
    "er": "clj.methods.er",
    "der": "clj.methods.der",
    "derpp": "clj.methods.derpp",
    # issue 6: class-incremental learning with exemplars and growth
    "icarl": "clj.methods.icarl",
    "wa": "clj.methods.wa",
    "replay": "clj.methods.cil_replay",
    "memo": "clj.methods.memo",
    "dynamic_er": "clj.methods.dynamic_er",
    # issue 7: attentive knowledge replay (on iCaRL) and its plain-mixup baseline (config.akr.replay)
    "akr": "clj.methods.akr",
}


def get_method(name: str):
    """The method module called ``name``.

    Raises:
      ValueError: an unknown name, listing the valid ones.
    """
    if name not in METHODS:
        raise ValueError(f"method={name!r} is unknown; valid methods: {', '.join(sorted(METHODS))}.")
    return importlib.import_module(METHODS[name])
