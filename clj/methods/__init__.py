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
Optional config-dependent hooks: ``validate_config(config)`` (raises
``ConfigError``; called by ``clj.config.validate``) and
``task_id_at_test(config) -> (task_il, class_il)`` (overrides
``USES_TASK_ID_AT_TEST``; ``class_il=True`` also gives the true task id to the
class-IL pass, for protocols that reproduce a task-indexed evaluation).
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
    # issue 4: SERENA
    "serena": "clj.methods.serena",
    # issue 5: NISPA and regularisation baselines
    "nispa": "clj.methods.nispa",
    "ewc": "clj.methods.ewc",
    "si": "clj.methods.si",
    "mas": "clj.methods.mas",
    # issue 8: ER-ACE and SER
    "er_ace": "clj.methods.er_ace",
    "ser_derpp": "clj.methods.ser_derpp",
    "ser_er_ace": "clj.methods.ser_er_ace",
    "ser_er": "clj.methods.ser_er",
    # issue 7: attentive knowledge replay (on iCaRL) and its plain-mixup baseline (config.akr.replay)
    "akr": "clj.methods.akr",
    "agem": "clj.methods.agem",
    "lwf": "clj.methods.lwf",
}


def get_spec(name: str):
    """The :class:`~clj.methods.api.MethodSpec` of the method called ``name``.

    Raises:
      ValueError: an unknown name, listing the valid ones.
    """
    return get_method(name).SPEC


def get_method(name: str):
    """The method module called ``name``.

    Raises:
      ValueError: an unknown name, listing the valid ones.
    """
    if name not in METHODS:
        raise ValueError(f"method={name!r} is unknown; valid methods: {', '.join(sorted(METHODS))}.")
    return importlib.import_module(METHODS[name])
