"""Continual-learning methods: the registry.

Every method is a :class:`~clj.methods.api.MethodSpec`: the five protocol
functions of DESIGN.md over its own ``State`` (a ``flax.struct.dataclass``)
plus the capabilities the loop reads.  A registry line names where the spec
comes from and says in one line what the method is:

* ``"module"``: the module's ``SPEC``;
* ``"module:variant"``: ``module.make_spec("variant")``, for a family whose
  members share one implementation (ER/DER/DER++ in ``rehearsal``,
  iCaRL/WA/Replay in ``icarl``, MEMO/DER (Yan) in ``expand``, EWC/SI/MAS in
  ``regularization``, SER over each base in ``ser``).

Adding a method: write its module (ending with ``SPEC = MethodSpec(...)``),
add its line here; nothing else in ``clj/`` changes (README, "How to add a
method").
"""
from __future__ import annotations

import functools
import importlib
from typing import NamedTuple


class Entry(NamedTuple):
    """One registry line: where the spec is (``"module"`` or
    ``"module:variant"``) and a one-line description (``--help``)."""

    where: str
    doc: str


METHODS: dict[str, Entry] = {
    # baselines (Mammoth's ER family)
    "finetune": Entry("clj.methods.rehearsal:finetune", "plain fine-tuning, no protection against forgetting (lower bound)"),
    "joint": Entry("clj.methods.rehearsal:joint", "trains on the union of the tasks seen so far (upper bound)"),
    "er": Entry("clj.methods.rehearsal:er", "experience replay, reservoir buffer"),
    "der": Entry("clj.methods.rehearsal:der", "dark experience replay: logit matching on replayed examples"),
    "derpp": Entry("clj.methods.rehearsal:derpp", "DER++: DER plus cross-entropy on replayed examples"),
    "er_ace": Entry("clj.methods.er_ace", "ER with asymmetric cross-entropy"),
    "agem": Entry("clj.methods.agem", "A-GEM: gradient projected so the episodic memory's loss does not increase"),
    "lwf": Entry("clj.methods.lwf", "learning without forgetting: distillation from the previous model"),
    "ewc": Entry("clj.methods.regularization:ewc", "elastic weight consolidation"),
    "si": Entry("clj.methods.regularization:si", "synaptic intelligence"),
    "mas": Entry("clj.methods.regularization:mas", "memory aware synapses"),
    # class-IL with exemplars and growth (PyCIL's family; MEMO)
    "icarl": Entry("clj.methods.icarl:icarl", "iCaRL: exemplars by herding, distillation, NME classifier"),
    "wa": Entry("clj.methods.icarl:wa", "weight aligning of the classifier after each task"),
    "replay": Entry("clj.methods.icarl:replay", "class-IL replay of exemplars (PyCIL's baseline)"),
    "memo": Entry("clj.methods.expand:memo", "MEMO: memory-efficient expandable model (shared shallow, new deep blocks)"),
    "dynamic_er": Entry("clj.methods.expand:dynamic_er", "DER (Yan et al.): a new backbone per task, dynamically expandable"),
    # the five papers
    "serena": Entry("clj.methods.serena", "SERENA: a sparse cell per detected concept, task-free online"),
    "nispa": Entry("clj.methods.nispa", "NISPA: sparse network, stable/plastic units, task-IL"),
    "ser_derpp": Entry("clj.methods.ser:derpp", "SER on DER++: saliency-modulated ResNet-18"),
    "ser_er_ace": Entry("clj.methods.ser:er_ace", "SER on ER-ACE"),
    "ser_er": Entry("clj.methods.ser:er", "SER on ER"),
    "akr": Entry("clj.methods.akr", "attentive knowledge replay on iCaRL (config.akr.replay picks mixup/none)"),
}


@functools.lru_cache(maxsize=None)
def get_spec(name: str):
    """The :class:`~clj.methods.api.MethodSpec` of the method called ``name``
    (one object per name, so compiled functions keyed on it are reused).

    Raises:
      ValueError: an unknown name, listing the valid ones.
    """
    if name not in METHODS:
        raise ValueError(f"method={name!r} is unknown; valid methods: {', '.join(sorted(METHODS))}.")
    module, _, variant = METHODS[name].where.partition(":")
    mod = importlib.import_module(module)
    return mod.make_spec(variant) if variant else mod.SPEC


def get_method(name: str):
    """The method called ``name`` as its spec (``.init``, ``.begin_task``,
    ``.train_step``, ``.end_task``, ``.predict``); see :func:`get_spec`.

    Raises:
      ValueError: an unknown name, listing the valid ones.
    """
    return get_spec(name)
