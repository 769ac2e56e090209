"""Continual-learning methods: the registry, the one door to a method.

Every method is a :class:`~clj.methods.api.MethodSpec` (the five protocol
functions over its own ``State`` plus the capabilities the loop reads;
``docs/methods.md``).  Methods live in one package per family
(:mod:`~clj.methods.baselines`, :mod:`~clj.methods.cil`,
:mod:`~clj.methods.akr`, :mod:`~clj.methods.ser`,
:mod:`~clj.methods.serena`, :mod:`~clj.methods.nispa`), each owning its
config blocks in its ``section.py``.

A registry :class:`Entry` says where the spec is (``"module"``: the module's
``SPEC``; ``"module:variant"``: ``module.make_spec("variant")``), what the
method is in one line, which config blocks it reads and any extra checks
across blocks.  Every config check (``clj.config.validate``,
``validate_with_data``), ``--describe`` and the JAX-free block builders read
these entries, and nothing else.

A method from outside clj either calls :func:`register` (from its own
package, or from the config file that uses it), or is named by its dotted
path: ``config.method = "mypkg.mymethod"`` or ``"mypkg.mymethod:variant"``
imports ``mypkg.mymethod``, whose ``SPEC`` / ``make_spec`` is the spec,
whose module docstring's first line is its doc, and whose optional
``SECTIONS`` (tuple of :class:`~clj.methods.sections.Section`) and
``CHECKS`` (tuple of ``config -> None``) are its blocks and checks.  A
dotted name works in every process a sweep starts, with no edit to clj
(README, "How to add a method").
"""
from __future__ import annotations

import functools
import importlib
from typing import NamedTuple

from clj.errors import ConfigError
from clj.methods.akr.section import AKR
from clj.methods.baselines.section import GDUMB, GEM, GSS, LWF, ONLINE, REG, REPLAY
from clj.methods.cil.section import BIC, CIL, COIL, FOSTER, LUCIR, PODNET, check_expand_model
from clj.methods.nispa.section import CLNP, NISPA, STL
from clj.methods.ser.section import SER, check_ser_model
from clj.methods.serena.section import SERENA


class Entry(NamedTuple):
    """One registry line.

    Attributes:
      where: ``"module"`` (its ``SPEC``) or ``"module:variant"``
        (``module.make_spec("variant")``).
      doc: one line: what the method is (``--help`` lists it).
      sections: the config blocks the method reads
        (:class:`~clj.methods.sections.Section`); their checks run before any
        work and ``--describe`` prints their fields.
      checks: extra checks across blocks, ``config -> None`` raising
        :class:`~clj.errors.ConfigError` (JAX-free, like the blocks).
    """

    where: str
    doc: str
    sections: tuple = ()
    checks: tuple = ()


_B, _C = "clj.methods.baselines", "clj.methods.cil"
METHODS: dict[str, Entry] = {
    # baselines (Mammoth's ER family, regularisation, A-GEM, LwF; online MIR, CoPE, GDumb and GSS)
    "finetune": Entry(f"{_B}.rehearsal:finetune", "plain fine-tuning, no protection against forgetting (lower bound)"),
    "joint": Entry(f"{_B}.rehearsal:joint", "trains on the union of the tasks seen so far (upper bound)"),
    "er": Entry(f"{_B}.rehearsal:er", "experience replay, reservoir buffer", (REPLAY,)),
    "der": Entry(f"{_B}.rehearsal:der", "dark experience replay: logit matching on replayed examples", (REPLAY,)),
    "derpp": Entry(f"{_B}.rehearsal:derpp", "DER++: DER plus cross-entropy on replayed examples", (REPLAY,)),
    "er_ace": Entry(f"{_B}.er_ace", "ER with asymmetric cross-entropy", (REPLAY,)),
    "agem": Entry(f"{_B}.agem", "A-GEM: gradient projected so the episodic memory's loss does not increase",
                  (REPLAY,)),
    "mir": Entry(f"{_B}.mir", "ER with maximally interfered retrieval: replays the buffer examples that a "
                 "virtual step hurts most", (REPLAY, ONLINE)),
    "cope": Entry(f"{_B}.cope", "continual prototype evolution: PPP loss on L2 embeddings, momentum prototypes, "
                  "class-balanced buffer", (REPLAY, ONLINE)),
    "gem": Entry(f"{_B}.gem", "GEM: gradient projected by a QP so no past task's memory loss increases",
                 (REPLAY, GEM)),
    "lwf": Entry(f"{_B}.lwf", "learning without forgetting: distillation from the previous model", (LWF,)),
    "ewc": Entry(f"{_B}.regularization:ewc", "elastic weight consolidation", (REG,)),
    "si": Entry(f"{_B}.regularization:si", "synaptic intelligence", (REG,)),
    "mas": Entry(f"{_B}.regularization:mas", "memory aware synapses", (REG,)),
    "gdumb": Entry(f"{_B}.gdumb", "GDumb: greedy class-balanced memory, network retrained from scratch on it",
                   (REPLAY, GDUMB)),
    "gss": Entry(f"{_B}.gss", "GSS-greedy: memory kept by gradient-similarity scores", (REPLAY, GSS)),
    # class-IL with exemplars and growth (PyCIL's family; MEMO)
    "icarl": Entry(f"{_C}.icarl:icarl", "iCaRL: exemplars by herding, distillation, NME classifier", (CIL,)),
    "wa": Entry(f"{_C}.icarl:wa", "weight aligning of the classifier after each task", (CIL,)),
    "replay": Entry(f"{_C}.icarl:replay", "class-IL replay of exemplars (PyCIL's baseline)", (CIL,)),
    "memo": Entry(f"{_C}.expand:memo", "MEMO: memory-efficient expandable model (shared shallow, new deep blocks)",
                  (CIL,), (check_expand_model,)),
    "dynamic_er": Entry(f"{_C}.expand:dynamic_er",
                        "DER (Yan et al.): a new backbone per task, dynamically expandable", (CIL,),
                        (check_expand_model,)),
    "coil": Entry(f"{_C}.coil", "Coil: co-transport (Sinkhorn plans between class means) of old and new classifiers",
                  (CIL, COIL)),
    "foster": Entry(f"{_C}.foster", "FOSTER: feature boosting with a second backbone, then compression into one",
                    (CIL, FOSTER)),
    "lucir": Entry(f"{_C}.lucir", "LUCIR: cosine classifier, less-forget distillation, margin ranking on hard negatives",
                   (CIL, LUCIR)),
    "bic": Entry(f"{_C}.bic", "BiC: distillation, then a bias-correction layer on the new classes' logits",
                 (CIL, BIC)),
    "podnet": Entry(f"{_C}.podnet", "PODNet: pooled-outputs distillation, local similarity classifier, NCA loss",
                    (CIL, PODNET)),
    # the five papers
    "serena": Entry("clj.methods.serena.serena", "SERENA: a sparse cell per detected concept, task-free online",
                    (SERENA,)),
    "nispa": Entry("clj.methods.nispa.nispa", "NISPA: sparse network, stable/plastic units, task-IL", (NISPA,)),
    "stl": Entry("clj.methods.nispa.stl:stl", "single-task learning: one sparse network per task at NISPA's density",
                 (STL,)),
    "stl_iso": Entry("clj.methods.nispa.stl:stl_iso",
                     "single-task learning with NISPA's connection budget split over the tasks", (STL,)),
    "clnp": Entry("clj.methods.nispa.clnp", "CLNP: L1 training, pruning of inactive units, frozen kept units",
                  (CLNP,)),
    "ser_derpp": Entry("clj.methods.ser.ser:derpp", "SER on DER++: saliency-modulated ResNet-18", (REPLAY, SER),
                       (check_ser_model,)),
    "ser_er_ace": Entry("clj.methods.ser.ser:er_ace", "SER on ER-ACE", (REPLAY, SER), (check_ser_model,)),
    "ser_er": Entry("clj.methods.ser.ser:er", "SER on ER", (REPLAY, SER), (check_ser_model,)),
    "akr": Entry("clj.methods.akr.akr", "attentive knowledge replay on iCaRL (config.akr.replay picks mixup/none)",
                 (CIL, AKR)),
}
BUILTIN = frozenset(METHODS)


def register(name: str, where: str, doc: str, sections: tuple = (), checks: tuple = ()) -> Entry:
    """Adds (or replaces, for a name not built into clj) a registry entry.

    Args:
      name: the value of ``config.method`` that selects the method.
      where: ``"package.module"`` or ``"package.module:variant"`` (see the
        module doc); imported only when the method is used.
      doc: one line: what the method is.
      sections: its config blocks (:class:`~clj.methods.sections.Section`).
      checks: extra ``config -> None`` checks across blocks.

    Returns:
      the :class:`Entry`.

    Raises:
      ConfigError: ``name`` is a method built into clj, or ``where`` is not a
        dotted module path.
    """
    if name in BUILTIN:
        raise ConfigError(f"method {name!r} is built into clj; register yours under another name.")
    module = where.partition(":")[0]
    if not module or not all(p.isidentifier() for p in module.split(".")):
        raise ConfigError(f"where={where!r} is not a module path; valid: 'package.module' or "
                          "'package.module:variant'.")
    e = Entry(where, doc, tuple(sections), tuple(checks))
    METHODS[name] = e
    _spec_of.cache_clear()
    return e


def is_dotted(name: str) -> bool:
    """Whether ``name`` names a method by its module path (``a.b[:v]``)."""
    module = name.partition(":")[0]
    return "." in module and all(p.isidentifier() for p in module.split("."))


def entry(name: str) -> Entry:
    """The registry entry of method ``name``: a registered name, or a dotted
    ``package.module[:variant]`` path (the module is imported; its
    ``SECTIONS``, ``CHECKS`` and docstring make the entry).

    Raises:
      ConfigError: an unknown name, or a dotted path whose module cannot be
        imported or has no ``SPEC`` / ``make_spec``.
    """
    if name in METHODS:
        return METHODS[name]
    if not is_dotted(name):
        raise ConfigError(f"method={name!r} is unknown; valid methods: {', '.join(sorted(METHODS))}, or a "
                          "method of your own as 'package.module[:variant]'.")
    module, _, variant = name.partition(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(f"method={name!r}: module {module!r} cannot be imported ({e}); put its package on "
                          "PYTHONPATH or install it.") from None
    if name in METHODS:  # the module registered itself under its dotted name
        return METHODS[name]
    if not hasattr(mod, "make_spec" if variant else "SPEC"):
        raise ConfigError(f"method={name!r}: module {module!r} has no "
                          f"{'make_spec(variant)' if variant else 'SPEC'}; a method module ends with "
                          "SPEC = MethodSpec(...).")
    doc = ((mod.__doc__ or "").strip().splitlines() or [name])[0]
    e = Entry(name, doc, tuple(getattr(mod, "SECTIONS", ())), tuple(getattr(mod, "CHECKS", ())))
    METHODS[name] = e
    return e


@functools.lru_cache(maxsize=None)
def _spec_of(name: str):
    module, _, variant = entry(name).where.partition(":")
    mod = importlib.import_module(module)
    return mod.make_spec(variant) if variant else mod.SPEC


def get_spec(name: str):
    """The :class:`~clj.methods.api.MethodSpec` of method ``name`` (one object
    per name, so compiled functions keyed on it are reused).

    Raises:
      ConfigError: an unknown name (see :func:`entry`).
    """
    entry(name)
    return _spec_of(name)


def get_method(name: str):
    """The method called ``name`` as its spec; see :func:`get_spec`."""
    return get_spec(name)


def registered_outside() -> dict:
    """``name -> (where, doc)`` of the entries registered at run time under a
    name that is not their module path (a sweep's worker processes register
    them again: :func:`reregister`)."""
    return {n: (e.where, e.doc) for n, e in METHODS.items() if n not in BUILTIN and n != e.where}


def reregister(entries: dict) -> None:
    """Registers again the entries of :func:`registered_outside` in another
    process: each entry's module is imported (a module that calls
    :func:`register` itself restores its own blocks); an entry still missing
    is registered with the module's ``SECTIONS`` and ``CHECKS``."""
    for name, (where, doc) in entries.items():
        if name in METHODS:
            continue
        mod = importlib.import_module(where.partition(":")[0])
        if name not in METHODS:
            register(name, where, doc, tuple(getattr(mod, "SECTIONS", ())), tuple(getattr(mod, "CHECKS", ())))


__all__ = ["Entry", "METHODS", "BUILTIN", "register", "entry", "is_dotted", "get_spec", "get_method",
           "registered_outside", "reregister"]
