"""Config blocks: a method family's ``config.<name>`` block is a
:class:`Section` (defaults, a one-line meaning per field, checks), declared
once in the family's ``section.py`` and named by the method's registry entry
(:mod:`clj.methods`).  This module holds the class, the checks the blocks
share (a choice, a bound, an interval), the one way a method reads its
checked block (:func:`block`), and the functions the config checks and
``--describe`` call, all of them reading the registry.  JAX-free.

Raises (every check): :class:`clj.errors.ConfigError` naming the field, the
value and what is valid.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from clj.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Section:
    """One ``config.<name>`` block.

    Attributes:
      name: the block's key in the config (``"nispa"``).
      defaults: field -> default value (a missing field takes it).
      docs: field -> one-line meaning (``--describe`` prints it).
      check: ``check(values: dict, config) -> None``; ``values`` is the block
        merged over ``defaults``.
      check_with_data: ``check_with_data(values: dict, config, scenario) ->
        None``, the checks that need the loaded data (e.g. a buffer larger
        than the training set); run before any training.
    """

    name: str
    defaults: dict
    docs: dict
    check: Callable[[dict, object], None]
    check_with_data: Callable[[dict, object, object], None] | None = None


def merged(section: Section, config) -> dict:
    """``config.<section>`` over the section's defaults, as a plain dict.

    Raises:
      ConfigError: a field the section does not have (naming the valid ones).
    """
    values = dict(section.defaults)
    block = config.get(section.name, None) if hasattr(config, "get") else None
    if block is not None:
        given = block.to_dict() if hasattr(block, "to_dict") else dict(block)
        unknown = sorted(set(given) - set(section.defaults))
        if unknown:
            raise ConfigError(f"{section.name}.{unknown[0]} is not a field; valid fields: "
                              f"{', '.join(sorted(section.defaults))}.")
        values.update(given)
    return values


def need(cond: bool, msg: str) -> None:
    """Raises ``ConfigError(msg)`` unless ``cond``."""
    if not cond:
        raise ConfigError(msg)


def choice(section: str, key: str, value, valid) -> None:
    """``value`` must be one of ``valid``."""
    if value not in valid:
        raise ConfigError(f"{section}.{key}={value!r} is unknown; valid: {', '.join(map(str, valid))}.")


def choices(section: str, v: dict, **valid) -> None:
    """:func:`choice` for each ``key=valid_values`` in turn."""
    for key, opts in valid.items():
        choice(section, key, v[key], opts)


def number(section: str, v: dict, key: str) -> float:
    """The field as a float; a value that is not a number is refused."""
    try:
        return float(v[key])
    except (TypeError, ValueError):
        raise ConfigError(f"{section}.{key}={v[key]!r} is invalid: it must be a number.") from None


def at_least(section: str, v: dict, lo, *keys: str) -> None:
    """Each field of ``keys`` must be >= ``lo``."""
    for k in keys:
        need(number(section, v, k) >= lo, f"{section}.{k}={v[k]} is invalid: it must be >= {lo}.")


def positive(section: str, v: dict, *keys: str) -> None:
    """Each field of ``keys`` must be > 0."""
    for k in keys:
        need(number(section, v, k) > 0, f"{section}.{k}={v[k]} is invalid: it must be > 0.")


def in_interval(section: str, v: dict, key: str, interval: str) -> None:
    """The field must lie in ``interval``, written as in the message:
    ``"(0, 1]"``, ``"[0, 1)"``, ``"(0, 1)"``, ``"[0, 1]"``."""
    lo, hi = (float(s) for s in interval[1:-1].split(","))
    x = number(section, v, key)
    ok = (x > lo if interval[0] == "(" else x >= lo) and (x < hi if interval[-1] == ")" else x <= hi)
    need(ok, f"{section}.{key}={v[key]} is invalid: it must be in {interval}.")


def block(config, section: Section):
    """The checked ``config.<section.name>`` block over the section's
    defaults: the one way a method reads its block.

    Returns:
      a fresh ``ml_collections.ConfigDict`` (``v.field`` and ``v["field"]``;
      changing it changes nothing in ``config``).

    Raises:
      ConfigError: an unknown field or a bad value, naming it and what is valid.
    """
    import ml_collections

    values = merged(section, config)
    section.check(values, config)
    return ml_collections.ConfigDict(values)


def method_sections(method: str) -> tuple:
    """The :class:`Section` s method ``method`` reads (its registry entry).

    Raises:
      ConfigError: an unknown method.
    """
    from clj.methods import entry

    return tuple(entry(method).sections)


def all_sections() -> dict:
    """``name -> Section`` of every block of every registered method."""
    from clj.methods import METHODS

    out = {}
    for e in METHODS.values():
        for s in e.sections:
            out.setdefault(s.name, s)
    return out


def check(config) -> None:
    """Runs every check of ``config.method``'s blocks and its entry's extra
    checks (``clj.config.validate`` calls it).

    Raises:
      ConfigError: the first bad value, naming it and what is valid.
    """
    from clj.methods import entry

    e = entry(config.method)
    for s in e.sections:
        s.check(merged(s, config), config)
    for fn in e.checks:
        fn(config)


def check_with_data(config, scenario) -> None:
    """Runs the data-dependent checks of ``config.method``'s blocks
    (``clj.config.validate_with_data`` calls it).

    Raises:
      ConfigError: the first bad value, naming it and what is valid.
    """
    for s in method_sections(config.method):
        if s.check_with_data is not None:
            s.check_with_data(merged(s, config), config, scenario)


def field_docs(config) -> dict:
    """``"<block>.<field>" -> meaning`` for the blocks ``config.method`` reads
    and any registered block present in ``config``."""
    out = {}
    blocks = {s.name: s for s in method_sections(config.method)}
    blocks.update({n: s for n, s in all_sections().items() if n in config and n not in blocks})
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

    known = all_sections()
    if name not in known:
        raise ConfigError(f"section {name!r} is unknown; valid: {', '.join(sorted(known))}.")
    d = dict(known[name].defaults)
    unknown = sorted(set(overrides) - set(d))
    if unknown:
        raise ConfigError(f"{name}.{unknown[0]} is not a field; valid fields: {', '.join(sorted(d))}.")
    d.update(overrides)
    return ml_collections.ConfigDict(d)
