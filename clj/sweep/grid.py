"""The pure part of a sweep: parsing ``--grid`` values, the grid's points,
their workdir names and their grouping into programs.

Nothing here imports JAX or touches the disk.
"""
from __future__ import annotations

import ast
import itertools
import json
import re
from typing import Any, Iterable, Mapping, Sequence

from clj.config import ConfigError

# ---------------------------------------------------------------------------- values
def _field(config, path: str):
    """The current value of the dotted field ``path`` of a ConfigDict.

    Raises:
      ConfigError: no such field, naming the nearest level's fields.
    """
    node = config
    parts = path.split(".")
    for i, name in enumerate(parts):
        try:
            keys = list(node.keys())
        except AttributeError:
            raise ConfigError(f"--grid {path}: {'.'.join(parts[:i])} is a value, not a section.") from None
        if name not in keys:
            where = ".".join(parts[:i]) or "the config"
            raise ConfigError(f"--grid {path}: no field {name!r} in {where}; valid: {', '.join(sorted(keys))}.")
        node = node[name]
    return node


def split_values(text: str) -> list[str]:
    """Splits ``"0.1,0.3"`` at the commas that are outside brackets, so
    ``"(64,64),(100,100)"`` gives ``["(64,64)", "(100,100)"]``.

    Raises:
      ConfigError: unbalanced brackets or an empty value.
    """
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            if depth < 0:
                raise ConfigError(f"--grid value list {text!r} has an unbalanced {ch!r}.")
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if depth != 0:
        raise ConfigError(f"--grid value list {text!r} has an unclosed bracket.")
    out.append(cur.strip())
    if any(v == "" for v in out):
        raise ConfigError(f"--grid value list {text!r} has an empty value; write values separated by commas.")
    return out


def parse_value(current: Any, text: str, path: str = "value") -> Any:
    """Parses ``text`` to the type of the field's ``current`` value.

    bool: true/false/1/0 (any case); int: an integer literal; float: any
    number; str: the text as is; tuple/list: a bracketed literal
    (``"(64,64)"``) or a bare ``"64"`` for a 1-tuple; None: a Python
    literal, else the text.

    Raises:
      ConfigError: a value that cannot be read as the field's type.
    """
    def bad(kind):
        return ConfigError(f"{path}={text!r} is not a valid {kind} (the field's type: its value is {current!r}).")

    if isinstance(current, bool):
        t = text.strip().lower()
        if t in ("true", "1", "yes"):
            return True
        if t in ("false", "0", "no"):
            return False
        raise bad("bool (true/false)")
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            raise bad("int") from None
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            raise bad("float") from None
    if isinstance(current, str):
        return text
    if isinstance(current, (tuple, list)):
        try:
            v = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            raise bad(type(current).__name__) from None
        v = v if isinstance(v, (tuple, list)) else (v,)
        return type(current)(v)
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_grid(args: Sequence[str], config) -> dict[str, list]:
    """Parses ``--grid`` arguments (``"optim.lr=0.01,0.03"``) into
    ``{field: [typed values]}``, in the order given.

    Raises:
      ConfigError: a missing ``=``, an unknown field, a field given twice, a
        repeated value, or a value of the wrong type.
    """
    grid: dict[str, list] = {}
    for a in args:
        if "=" not in a:
            raise ConfigError(f"--grid {a!r} is invalid: write FIELD=V1,V2,... (e.g. optim.lr=0.01,0.1).")
        path, text = a.split("=", 1)
        path = path.strip().removeprefix("config.")
        if path in grid:
            raise ConfigError(f"--grid {path} is given twice; give each field once with all its values.")
        cur = _field(config, path)
        if hasattr(cur, "keys"):
            raise ConfigError(f"--grid {path} is a section, not a field; valid: "
                              f"{', '.join(f'{path}.{k}' for k in sorted(cur.keys()))}.")
        vals = [parse_value(cur, v, path) for v in split_values(text)]
        keys = [json.dumps(v) for v in vals]
        if len(set(keys)) != len(keys):
            raise ConfigError(f"--grid {path} repeats a value: {text!r}.")
        grid[path] = vals
    return grid


def expand_grid(grid: Mapping[str, Sequence]) -> list[dict]:
    """The cartesian product of a grid, last field fastest:
    ``{"a": [1, 2], "b": [3]}`` -> ``[{"a": 1, "b": 3}, {"a": 2, "b": 3}]``.
    An empty grid is one point with no overrides."""
    fields = list(grid)
    return [dict(zip(fields, combo)) for combo in itertools.product(*(grid[f] for f in fields))]


def set_field(config, path: str, value) -> None:
    """Sets a dotted field of a ConfigDict (a tuple field takes a list as a tuple)."""
    node = config
    *parents, last = path.split(".")
    for name in parents:
        node = node[name]
    cur = node[last]
    if isinstance(cur, tuple) and isinstance(value, list):
        value = tuple(value)
    if isinstance(cur, float) and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    node[last] = value


def apply_overrides(config, overrides: Mapping[str, Any]):
    """A copy of ``config`` with the dotted ``overrides`` set."""
    c = config.copy_and_resolve_references()
    with c.unlocked():
        for k, v in overrides.items():
            set_field(c, k, v)
    return c


# ---------------------------------------------------------------------------- identity
def config_fingerprint(config, length: int = 6) -> str:
    """The first ``length`` hex digits of the config's workdir fingerprint
    (:func:`clj.workdir.fingerprint`: a hash of every field that can change
    results), so a point's folder name and its ``identity.json`` agree."""
    from clj.workdir import fingerprint

    return fingerprint(config)[:length]


def format_value(v) -> str:
    """A grid value as the sweep writes it (names, tables): floats by ``repr``,
    sequences as ``(a,b)``."""
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (tuple, list)):
        return "(" + ",".join(format_value(x) for x in v) + ")"
    return str(v)


def point_slug(overrides: Mapping[str, Any], max_len: int = 120) -> str:
    """A readable, filesystem-safe name of a point's overrides:
    ``{"optim.lr": 0.03, "replay.alpha": 0.1}`` -> ``"optim.lr=0.03,replay.alpha=0.1"``."""
    s = ",".join(f"{k}={format_value(v)}" for k, v in overrides.items()) or "base"
    s = re.sub(r"[^A-Za-z0-9._=,()+-]", "_", s)
    return s[:max_len]


def point_dirname(overrides: Mapping[str, Any], resolved_config) -> str:
    """The workdir name of a point: its slug, a dash, and the fingerprint of
    its resolved config (``optim.lr=0.03,replay.alpha=0.1-3f2a1c``)."""
    return f"{point_slug(overrides)}-{config_fingerprint(resolved_config)}"


# ---------------------------------------------------------------------------- grouping
def group_points(points: Sequence[Mapping[str, Any]], sweepable: Iterable[str],
                 max_points_per_program: int = 0) -> list[list[int]]:
    """Splits a grid's points into programs.

    Points that differ only in ``sweepable`` fields (numbers the method
    carries as arrays, so the points are one vmapped axis) share a program;
    any other field (e.g. ``replay.buffer_size``) separates them.  Each
    group is then cut, in grid order, into programs of at most
    ``max_points_per_program`` points (0 = no limit).  A sweepable field is
    vmapped only if its values are numbers.

    Args:
      points: the grid's points (dicts of the same fields), in grid order.
      sweepable: the method's vmappable config paths (``MethodSpec.sweepable``).
      max_points_per_program: the most points in one program; 0 = unlimited.

    Returns:
      Lists of point indices, one per program, in order of first point.

    Raises:
      ConfigError: max_points_per_program < 0.
    """
    if max_points_per_program < 0:
        raise ConfigError(f"--max_points_per_program={max_points_per_program} is invalid: it must be >= 0 "
                          "(0 = no limit).")
    sweepable = set(sweepable)

    def vmappable(k, v):
        return k in sweepable and isinstance(v, (int, float)) and not isinstance(v, bool)

    groups: dict[str, list[int]] = {}
    for i, p in enumerate(points):
        static = {k: v for k, v in p.items() if not vmappable(k, v)}
        key = json.dumps([sorted(p), static], sort_keys=True, default=str)
        groups.setdefault(key, []).append(i)
    n = max_points_per_program or max(1, len(points))
    out = [g[j:j + n] for g in groups.values() for j in range(0, len(g), n)]
    return sorted(out, key=lambda g: g[0])


def split_point(point: Mapping[str, Any], sweepable: Iterable[str]) -> tuple[dict, dict]:
    """``(static, vmapped)`` parts of a point's overrides (see :func:`group_points`)."""
    sweepable = set(sweepable)
    vm = {k: v for k, v in point.items()
          if k in sweepable and isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {k: v for k, v in point.items() if k not in vm}, vm
