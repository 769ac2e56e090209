"""A config block (:class:`Section`) and the checks its fields share, written
once: a choice among names, a lower bound, an interval.  JAX-free.

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
    """

    name: str
    defaults: dict
    docs: dict
    check: Callable[[dict, object], None]


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
