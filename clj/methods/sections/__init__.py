"""Each method's config section: its defaults, the meaning of each field and
its checks, in one place that imports neither JAX nor Flax.

:func:`clj.config.validate` calls :func:`check` before any work (and before
JAX is imported when the config file itself does not import it); the method
modules read their sections through the same functions (``get_section``), so
a value is checked by exactly one piece of code.

A :class:`Section` is one ``config.<name>`` block, declared with its family:
:mod:`~clj.methods.sections.baselines` (``replay``, ``reg``),
:mod:`~clj.methods.sections.cil` (``cil``, ``akr``),
:mod:`~clj.methods.sections.nispa`, :mod:`~clj.methods.sections.ser`,
:mod:`~clj.methods.sections.serena`; the checks they share (a choice, a bound,
an interval) are in :mod:`~clj.methods.sections.base`.  ``METHOD_SECTIONS``
says which blocks a method reads; ``METHOD_CHECKS`` adds checks across
blocks (e.g. MEMO's backbone).  A method not declared here declares its
blocks in its :class:`~clj.methods.api.MethodSpec` (``sections``) and may
add a ``validate_config(config)`` hook (which may import JAX).

Raises (every function here): :class:`clj.errors.ConfigError` naming the
field, the value and what is valid.
"""
from __future__ import annotations

from clj.errors import ConfigError
from clj.methods.sections.base import Section, merged
from clj.methods.sections.baselines import REG, REG_EWC_MODES, REG_MAS_SCALES, REPLAY
from clj.methods.sections.cil import (AKR, AKR_ATTN_ARCHS, AKR_ATTN_NORMS, AKR_ATTN_OBJECTIVES, AKR_ATTN_TRAINS,
                                      AKR_BCE_OVER, AKR_DRIFT_METRICS, AKR_IMPORTANCE_NORMS, AKR_PAIR_MODES,
                                      AKR_PHASE0_MIX, AKR_REPLAYS, AKR_TARGET_MODES, CIL, CIL_BATCHING, CIL_BUDGETS,
                                      CIL_GROWTH, CIL_PREDICT_RULES, CIL_SCHEDULERS, CIL_WA_LOSSES, EXPAND_MODELS,
                                      SCHEDULES, check_expand_model)
from clj.methods.sections.nispa import NISPA, NISPA_MASK_INITS, NISPA_TASK_IL_RULES
from clj.methods.sections.ser import (SER, SER_CLASSIFIERS, SER_CLS_INITS, SER_MNP_MODES, SER_NUM_POINTS,
                                      SER_POOL_MODES, SER_TARGETS, check_ser_model)
from clj.methods.sections.serena import (SERENA, SERENA_DETECTORS, SERENA_FREEZE_MODES, SERENA_MASK_DRAWS,
                                         SERENA_MODELS, SERENA_NEW_CELL_INITS, SERENA_OPTIMS, SERENA_PROTOCOL_DEFAULTS,
                                         SERENA_PROTOCOLS, SERENA_ROUTE_SPACES, SERENA_ROUTE_STATS,
                                         SERENA_VOTES, serena_resolved)

SECTIONS = {s.name: s for s in (REPLAY, NISPA, REG, CIL, AKR, SER, SERENA)}


def get_section(name: str, config) -> dict:
    """The checked values of block ``name`` (defaults filled in)."""
    s = SECTIONS[name]
    values = merged(s, config)
    s.check(values, config)
    return values


# method -> blocks it reads (checked when present or when required).
METHOD_SECTIONS = {
    "finetune": (), "joint": (),
    "er": ("replay",), "der": ("replay",), "derpp": ("replay",), "er_ace": ("replay",),
    "icarl": ("cil",), "wa": ("cil",), "replay": ("cil",), "memo": ("cil",), "dynamic_er": ("cil",),
    "akr": ("cil", "akr"),
    "nispa": ("nispa",),
    "ewc": ("reg",), "si": ("reg",), "mas": ("reg",),
    "ser_derpp": ("replay", "ser"), "ser_er_ace": ("replay", "ser"), "ser_er": ("replay", "ser"),
    "serena": ("serena",),
}

METHOD_CHECKS = {"memo": (check_expand_model,), "dynamic_er": (check_expand_model,),
                 "ser_derpp": (check_ser_model,), "ser_er_ace": (check_ser_model,),
                 "ser_er": (check_ser_model,)}


def method_sections(method: str) -> tuple:
    """The :class:`Section` s ``method`` reads: those declared here, else the
    ones its :class:`~clj.methods.api.MethodSpec` declares (importing the
    method's module, and so JAX)."""
    if method in METHOD_SECTIONS:
        return tuple(SECTIONS[n] for n in METHOD_SECTIONS[method])
    from clj.methods import METHODS, get_spec

    return tuple(get_spec(method).sections) if method in METHODS else ()


def declared(method: str) -> bool:
    """Whether ``method``'s checks live here (else its module's hook runs)."""
    return method in METHOD_SECTIONS


def check(config) -> None:
    """Runs every check of ``config.method``'s blocks and cross-block rules.

    Raises:
      ConfigError: the first bad value, naming it and what is valid.
    """
    for name in METHOD_SECTIONS.get(config.method, ()):
        get_section(name, config)
    for fn in METHOD_CHECKS.get(config.method, ()):
        fn(config)


def field_docs(config) -> dict:
    """``"<block>.<field>" -> meaning`` for the blocks ``config.method`` reads
    and any declared block present in ``config``."""
    out = {}
    blocks = {s.name: s for s in method_sections(config.method)}
    blocks.update({n: SECTIONS[n] for n in SECTIONS if n in config and n not in blocks})
    for n, sec in blocks.items():
        for k, d in sec.docs.items():
            out[f"{n}.{k}"] = d
    return out


def section_config(name: str, **overrides):
    """A ``config.<name>`` block (``ml_collections.ConfigDict``) with the
    section's defaults updated by ``overrides``; JAX-free, so a config file
    that builds its blocks with it loads without importing JAX.

    Raises:
      ConfigError: an unknown section or field.
    """
    import ml_collections

    if name not in SECTIONS:
        raise ConfigError(f"section {name!r} is unknown; valid: {', '.join(sorted(SECTIONS))}.")
    d = dict(SECTIONS[name].defaults)
    unknown = sorted(set(overrides) - set(d))
    if unknown:
        raise ConfigError(f"{name}.{unknown[0]} is not a field; valid fields: {', '.join(sorted(d))}.")
    d.update(overrides)
    return ml_collections.ConfigDict(d)


def akr_config(**overrides):
    """``config.akr`` block (JAX-free twin of ``clj.methods.akr.akr_config``)."""
    return section_config("akr", **overrides)


def cil_config(**overrides):
    """``config.cil`` block (JAX-free twin of ``clj.methods.cil_common.cil_config``)."""
    return section_config("cil", **overrides)


def ser_config(**overrides):
    """``config.ser`` block (JAX-free twin of ``clj.methods.ser.ser_config``)."""
    return section_config("ser", **overrides)


__all__ = ["Section", "merged", "REG", "REG_EWC_MODES", "REG_MAS_SCALES", "REPLAY", "AKR", "AKR_ATTN_ARCHS",
           "AKR_ATTN_NORMS", "AKR_ATTN_OBJECTIVES", "AKR_ATTN_TRAINS", "AKR_BCE_OVER", "AKR_DRIFT_METRICS",
           "AKR_IMPORTANCE_NORMS", "AKR_PAIR_MODES", "AKR_PHASE0_MIX", "AKR_REPLAYS", "AKR_TARGET_MODES", "CIL",
           "CIL_BATCHING", "CIL_BUDGETS", "CIL_GROWTH", "CIL_PREDICT_RULES", "CIL_SCHEDULERS", "CIL_WA_LOSSES",
           "EXPAND_MODELS", "SCHEDULES", "check_expand_model", "NISPA", "NISPA_MASK_INITS", "NISPA_TASK_IL_RULES",
           "SER", "SER_CLASSIFIERS", "SER_CLS_INITS", "SER_MNP_MODES", "SER_NUM_POINTS", "SER_POOL_MODES",
           "SER_TARGETS", "check_ser_model", "SERENA", "SERENA_DETECTORS", "SERENA_FREEZE_MODES",
           "SERENA_MASK_DRAWS", "SERENA_MODELS", "SERENA_NEW_CELL_INITS", "SERENA_OPTIMS",
           "SERENA_PROTOCOL_DEFAULTS", "SERENA_PROTOCOLS", "SERENA_ROUTE_SPACES", "SERENA_ROUTE_STATS",
           "SERENA_VOTES", "serena_resolved", "SECTIONS",
           "METHOD_SECTIONS", "METHOD_CHECKS", "get_section", "method_sections", "declared", "check",
           "field_docs", "section_config", "akr_config", "cil_config", "ser_config"]
