"""A sweep's plan (points, workdirs, programs), its record ``sweep.json``,
and running one program.

Layout of a sweep folder ``DIR``::

    DIR/sweep.json                     the grid, the programs and their state
    DIR/sweep.csv, DIR/sweep.md        the table (clj.sweep.report)
    DIR/sweep_<metric>.png             a metric against a swept field
    DIR/<slug>-<hash>/                 one workdir per point: point.json, config.json,
                                       results.json (1 seed) or seed_<s>/ + summary.json
    DIR/programs/<id>/                 a vmapped group's own workdir (its checkpoints)
    DIR/programs/<id>.pkl, <id>.log    what a worker runs, and its output (processes/slurm)

A program of one point runs in the point's workdir as a plain run does; a
program of several points (points that differ only in the method's sweepable
fields) runs them as one vmapped axis with ``Runner(points=...)``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
import pickle
import time
from typing import Any, Mapping, Sequence

from clj.config import ConfigError
from clj.metrics.results import read_json, write_json_atomic
from clj.sweep import grid as grid_lib


@dataclasses.dataclass
class Program:
    """One process's work: a config, and the points it runs as one vmapped axis.

    Attributes:
      id: a name unique in the sweep (the point's dirname for one point).
      workdir: the Runner's workdir (a point's own folder for one point;
        ``DIR/programs/<id>`` holding the checkpoints for several).
      points: indices of the sweep's points run here.
      config: the config of the program (base, plain overrides and the
        points' static fields set; for one point, all its fields).
      vmapped: per point, the overrides carried as a vmapped axis (None for a
        one-point program).
      point_workdirs: the results folder of each point.
      methods: methods registered at run time under a short name
        (:func:`clj.methods.registered_outside`), registered again in the
        worker process.
      sys_path: the folders of the sweeping process's ``sys.path`` outside
        the Python installation (where an outside method's package may be),
        put on the worker's ``sys.path``.
    """

    id: str
    workdir: str
    points: list
    config: Any
    vmapped: list | None
    point_workdirs: list
    methods: dict = dataclasses.field(default_factory=dict)
    sys_path: list = dataclasses.field(default_factory=list)


def sweepable_fields(method: str) -> tuple:
    """The config paths that ``method`` can run as a vmapped axis: its spec's
    ``sweepable`` when the loop's Runner takes ``points``, else ``()`` (one
    program per point)."""
    from clj.methods import get_spec
    from clj.train import Runner

    if "points" not in inspect.signature(Runner.__init__).parameters:
        return ()
    return tuple(getattr(get_spec(method), "sweepable", ()) or ())


DONE_FILE = "point_done.json"
"""Written by :func:`run_program` into a point's folder once the point's run
has written its results: the config's fingerprint and the SHA-256 of that
results file.  A point is done only when it matches (:func:`point_state`)."""


def results_file(point_dir: str, num_seeds: int) -> str:
    """The file a finished point's table row comes from: ``summary.json``
    for several seeds, ``results.json`` for one."""
    return os.path.join(point_dir, "summary.json" if int(num_seeds) > 1 else "results.json")


def _sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _folder_fingerprint(point_dir: str) -> str | None:
    """The fingerprint of the config whose run holds ``point_dir`` (its
    ``identity.json``, read by :mod:`clj.workdir`), or None."""
    from clj import workdir as workdir_lib

    stored, _ = workdir_lib._stored_fields(point_dir)
    return None if stored is None else workdir_lib.fingerprint(stored)


def mark_point_done(point_dir: str, config) -> bool:
    """Records that ``point_dir``'s results file was written by the run of
    ``config`` (:data:`DONE_FILE`: the fingerprint and the file's SHA-256).
    Call right after the run returned its results; returns False (writing
    nothing) when the folder holds no results file."""
    from clj import workdir as workdir_lib

    res = results_file(point_dir, int(config.num_seeds))
    if not os.path.isfile(res):
        return False
    write_json_atomic(os.path.join(point_dir, DONE_FILE),
                      {"fingerprint": workdir_lib.fingerprint(config), "file": os.path.basename(res),
                       "sha256": _sha256_file(res)})
    return True


def point_state(point_dir: str, num_seeds: int, config=None, fingerprint: str | None = None
                ) -> tuple[bool, str | None]:
    """Whether a point is done, and why not: ``(True, None)`` when its results
    file exists and belongs to its own run; ``(False, None)`` when there are
    no results (not finished); ``(False, reason)`` when a results file is
    there but is not the point's own (one line: no or foreign
    ``identity.json``, no :data:`DONE_FILE`, a file other than the one its run
    wrote).

    The point's identity is ``config`` (its resolved config), else
    ``fingerprint`` (the fingerprint or its first hex digits, as
    ``point.json`` keeps them), else the ``point.json`` in the folder.
    """
    from clj import workdir as workdir_lib

    res = results_file(point_dir, num_seeds)
    if not os.path.isfile(res):
        return False, None
    name = os.path.basename(res)
    want = workdir_lib.fingerprint(config) if config is not None else fingerprint
    if want is None and os.path.isfile(os.path.join(point_dir, "point.json")):
        try:
            want = read_json(os.path.join(point_dir, "point.json")).get("fingerprint")
        except (OSError, ValueError, AttributeError):
            want = None
    try:
        have = _folder_fingerprint(point_dir)
    except (ConfigError, OSError, ValueError, KeyError, TypeError):  # a damaged identity.json
        return False, f"{name} is not counted: the folder's identity.json cannot be read"
    if have is None:
        return False, f"{name} is not counted: no identity.json of its run beside it"
    if want and not have.startswith(want):
        return False, f"{name} is not counted: the folder holds another config's run (fingerprint {have[:8]}, " \
                      f"this point's {want[:8]})"
    try:
        mark = read_json(os.path.join(point_dir, DONE_FILE))
    except FileNotFoundError:
        return False, f"{name} is not counted: no {DONE_FILE} (its run did not finish it in this sweep)"
    except (OSError, ValueError):
        return False, f"{name} is not counted: {DONE_FILE} cannot be read"
    if not isinstance(mark, dict) or mark.get("fingerprint") != have or mark.get("file") != name:
        return False, f"{name} is not counted: {DONE_FILE} belongs to another config's run"
    if mark.get("sha256") != _sha256_file(res):
        return False, f"{name} is not counted: it is not the file its run wrote"
    return True, None


def point_done(point_dir: str, num_seeds: int, config=None, fingerprint: str | None = None) -> bool:
    """True when a point's results are written and are its own (see
    :func:`point_state`)."""
    return point_state(point_dir, num_seeds, config, fingerprint)[0]


def plan(config, grid: Mapping[str, Sequence], workdir: str, sweepable: Sequence[str] = (),
         max_points_per_program: int = 0, skip_done: bool = False) -> tuple[list[dict], list[Program]]:
    """The points of a grid (with their workdirs) and the programs that run them.

    With ``skip_done``, points whose own results exist (:func:`point_state`)
    get ``"done": True`` and no program; a point whose folder holds a results
    file that is not its own gets ``"not_counted": reason`` and runs again.
    The others are grouped as if they were the whole grid (so a
    rerun of an interrupted sweep finds the same programs, and their
    checkpoints, since programs finish all their points together).

    Args:
      config: the base config, plain overrides applied.
      grid: ``{field: [values]}`` (:func:`clj.sweep.grid.parse_grid`).
      workdir: the sweep folder.
      sweepable: the method's vmappable fields (``()``: one program per point).
      max_points_per_program: the most points in one vmapped program (0 = all).
      skip_done: leave finished points out of the programs.

    Returns:
      ``(points, programs)``: each point is ``{"index", "overrides", "dir",
      "fingerprint", "done"}``.

    Raises:
      ConfigError: two points resolving to the same config, or a grid value
        the config refuses.
    """
    from clj.config import validate

    workdir = os.path.abspath(workdir)
    raw = grid_lib.expand_grid(grid)
    points, configs = [], []
    for i, ov in enumerate(raw):
        c = grid_lib.apply_overrides(config, ov)
        validate(c)
        name = grid_lib.point_dirname(ov, c)
        d = os.path.join(workdir, name)
        done, why = point_state(d, int(c.num_seeds), c) if skip_done else (False, None)
        points.append({"index": i, "overrides": ov, "dir": d, "fingerprint": grid_lib.config_fingerprint(c),
                       "done": done, **({"not_counted": why} if why else {})})
        configs.append(c)
    dirs = [p["dir"] for p in points]
    if len(set(dirs)) != len(dirs):
        raise ConfigError("two grid points resolve to the same workdir; give each value once.")
    programs = []
    todo = [i for i, p in enumerate(points) if not p["done"]]
    for g in grid_lib.group_points([raw[i] for i in todo], sweepable, max_points_per_program):
        g = [todo[j] for j in g]
        if len(g) == 1:
            p = points[g[0]]
            programs.append(Program(id=os.path.basename(p["dir"]), workdir=p["dir"], points=g, config=configs[g[0]],
                                    vmapped=None, point_workdirs=[p["dir"]]))
            continue
        static, _ = grid_lib.split_point(raw[g[0]], sweepable)
        vm = [grid_lib.split_point(raw[i], sweepable)[1] for i in g]
        ident = hashlib.sha1(json.dumps([points[i]["fingerprint"] for i in g]).encode()).hexdigest()[:8]
        pid = f"{grid_lib.point_slug(static, 60) if static else 'grid'}-x{len(g)}-{ident}"
        programs.append(Program(id=pid, workdir=os.path.join(workdir, "programs", pid), points=g,
                                config=grid_lib.apply_overrides(config, static), vmapped=vm,
                                point_workdirs=[points[i]["dir"] for i in g]))
    return points, programs


def user_sys_path() -> list:
    """The folders on ``sys.path`` outside the Python installation (the
    current folder for ``''``): where a method defined outside clj may be
    imported from."""
    import sys
    import sysconfig

    inst = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, sys.exec_prefix,
                                          sysconfig.get_paths().get("purelib", ""),
                                          sysconfig.get_paths().get("platlib", "")) if p}
    out = []
    for p in sys.path:
        p = os.path.realpath(p or os.getcwd())
        if os.path.isdir(p) and not any(p == i or p.startswith(i + os.sep) for i in inst) and p not in out:
            out.append(p)
    return out


def write_program(prog: Program, sweep_dir: str) -> str:
    """Pickles a program for a worker process, with the run-time registered
    methods and the user's import folders; returns the file's path."""
    from clj.methods import registered_outside

    prog = dataclasses.replace(prog, methods=registered_outside(), sys_path=user_sys_path())
    d = os.path.join(os.path.abspath(sweep_dir), "programs")
    os.makedirs(d, exist_ok=True)
    path = os.path.join(d, f"{prog.id}.pkl")
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        pickle.dump(dataclasses.asdict(prog), f)
    os.replace(tmp, path)
    return path


def run_program(prog: Program | Mapping | str) -> dict:
    """Runs one program (a :class:`Program`, its dict, or the path of its
    pickle) in this process.

    A point whose run returned its results is marked done
    (:func:`mark_point_done`).

    Returns:
      ``{"id", "wall_time_s", "stopped_after_task"?}``.
    """
    if isinstance(prog, str):
        with open(prog, "rb") as f:
            prog = pickle.load(f)
    if isinstance(prog, Program):
        prog = dataclasses.asdict(prog)
    import sys

    for p in reversed(prog.get("sys_path") or []):  # an outside method's package, as the sweep saw it
        if p not in sys.path:
            sys.path.insert(0, p)
    from clj.methods import reregister

    reregister(prog.get("methods") or {})
    from clj import workdir as workdir_lib
    from clj.train import Runner

    t0 = time.perf_counter()
    # every folder this program writes is its own: locked, and holding this config's identity
    handles = [workdir_lib.prepare(prog["workdir"], prog["config"])]
    try:
        if prog["vmapped"] is None:
            point_configs = [prog["config"]]
            out = Runner(prog["config"], prog["workdir"]).run()
        else:
            point_configs = [grid_lib.apply_overrides(prog["config"], vm) for vm in prog["vmapped"]]
            for d, c in zip(prog["point_workdirs"], point_configs):
                handles.append(workdir_lib.prepare(d, c))
            out = Runner(prog["config"], prog["workdir"], points=prog["vmapped"],
                         point_workdirs=prog["point_workdirs"]).run()
        if isinstance(out, (dict, list)) and not (isinstance(out, dict) and ("stopped_after_task" in out
                                                                             or "interrupted" in out)):
            for d, c in zip(prog["point_workdirs"], point_configs):  # (still holding the folders)
                mark_point_done(d, c)
    finally:
        for h in handles:
            h.release()
    res = {"id": prog["id"], "wall_time_s": time.perf_counter() - t0}
    if isinstance(out, dict) and "stopped_after_task" in out:
        res["stopped_after_task"] = out["stopped_after_task"]
    return res


# ---------------------------------------------------------------------------- sweep.json
class SweepRecord:
    """``DIR/sweep.json``: the sweep's grid, points and programs with their
    state (``pending | running | done | stopped | failed``), rewritten
    atomically on every change.  Only the driving process writes it."""

    def __init__(self, sweep_dir: str, base: dict, points: list[dict], programs: list[Program]):
        self.path = os.path.join(sweep_dir, "sweep.json")
        old = read_json(self.path) if os.path.isfile(self.path) else {}
        old_prog = {p["id"]: p for p in old.get("programs", [])}
        self.data = dict(base)
        program_of = {i: prog.id for prog in programs for i in prog.points}
        self.data["points"] = [{"index": p["index"], "overrides": p["overrides"], "dir": os.path.basename(p["dir"]),
                                "fingerprint": p["fingerprint"], "done": p["done"],
                                "program": program_of.get(p["index"]),
                                **({"not_counted": p["not_counted"]} if p.get("not_counted") else {})}
                               for p in points]
        self.data["programs"] = []
        for prog in programs:
            prev = old_prog.get(prog.id, {})
            self.data["programs"].append({
                "id": prog.id, "workdir": os.path.relpath(prog.workdir, sweep_dir), "points": prog.points,
                "vmapped": prog.vmapped is not None, "state": prev.get("state", "pending"),
                "attempts": prev.get("attempts", 0), "wall_time_s": prev.get("wall_time_s"),
                "error": prev.get("error")})
        self.save()

    def program(self, pid: str) -> dict:
        return next(p for p in self.data["programs"] if p["id"] == pid)

    def set(self, pid: str, **fields) -> None:
        prog = self.program(pid)
        prog.update(fields)
        if fields.get("state") == "done":
            for i in prog["points"]:
                self.data["points"][i]["done"] = True
        self.save()

    def save(self) -> None:
        write_json_atomic(self.path, self.data)


def write_point_files(points: list[dict], num_seeds: int, grid_fields: Sequence[str]) -> None:
    """Writes ``point.json`` (overrides, fields swept, seeds, fingerprint)
    into each point's workdir, so the table can be rebuilt from the workdirs
    alone."""
    for p in points:
        os.makedirs(p["dir"], exist_ok=True)
        path = os.path.join(p["dir"], "point.json")
        rec = {"index": p["index"], "overrides": p["overrides"], "grid_fields": list(grid_fields),
               "num_seeds": int(num_seeds), "fingerprint": p["fingerprint"]}
        if os.path.isfile(path) and read_json(path) == rec:
            continue
        write_json_atomic(path, rec)
