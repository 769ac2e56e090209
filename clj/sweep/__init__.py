"""Sweeps: a grid of config values run as programs on an executor, one
workdir per point, one table at the end.

    python -m clj.sweep --config=configs/derpp_digits.py \\
        --grid optim.lr=0.01,0.03,0.1 --grid replay.alpha=0.1,0.3 \\
        --config.num_seeds=5 --workdir=sweeps/derpp_lr_alpha [--executor=local|processes|slurm]

Points that differ only in fields the method declares ``sweepable`` run as one
vmapped program (one compile for points x seeds); other fields make separate
programs.  Rerunning the command skips finished points and resumes the others
from their checkpoints; a point is finished only when its folder's results
file is the one its own run wrote (``point_done.json``, see
:func:`clj.sweep.core.point_state`), else it runs again.  See docs/sweeps.md.
"""
from __future__ import annotations

import os
from typing import Mapping, Sequence

from clj.sweep.core import Program, mark_point_done, plan, point_done, point_state, run_program, sweepable_fields
from clj.sweep.grid import (apply_overrides, config_fingerprint, expand_grid, group_points, parse_grid,
                            parse_value, point_dirname, point_slug, split_values)
from clj.sweep.report import write_report


def run_sweep(config, grid: Mapping[str, Sequence], workdir: str, *, executor: str = "local",
              max_points_per_program: int = 0, parallel: int = 0, slurm: Mapping | None = None,
              sort: str = "", plot_x: str = "", sweepable: Sequence[str] | None = None,
              meta: Mapping | None = None) -> dict:
    """Runs a grid and writes its table.

    Args:
      config: the base config (plain overrides applied).
      grid: ``{field: [values]}`` (see :func:`parse_grid`).
      workdir: the sweep folder ``DIR``.
      executor: ``local`` | ``processes`` | ``slurm``.
      max_points_per_program: the most points in one vmapped program (0 = no limit).
      parallel: processes at once for ``processes`` (0 = one per GPU, 1 on CPU).
      slurm: keyword arguments of :func:`clj.sweep.executors.run_slurm`.
      sort, plot_x: see :func:`write_report`.
      sweepable: the vmappable fields (default: the method's, when the loop
        supports grids; ``()`` runs one program per point).
      meta: more fields for ``sweep.json`` (e.g. the command line).

    Returns:
      ``{"ran": [program ids run], "skipped": [point folders already done],
      "failed": [program ids], "report": write_report's dict}``.

    Raises:
      ConfigError: a bad executor, grid value or sort metric (before any run).
    """
    from clj.config import ConfigError
    from clj.sweep import executors
    from clj.sweep.core import SweepRecord, write_point_files

    if executor not in executors.EXECUTORS:
        raise ConfigError(f"--executor={executor!r} is invalid; valid: {', '.join(executors.EXECUTORS)}.")
    workdir = os.path.abspath(workdir)
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ConfigError(f"--workdir={workdir} is a file; give a folder (it is created if missing).")
    if sweepable is None:  # (one point: nothing to vmap, and no need to import the loop here)
        n_points = 1
        for v in grid.values():
            n_points *= len(v)
        sweepable = sweepable_fields(config.method) if n_points > 1 else ()
    points, programs = plan(config, grid, workdir, sweepable, max_points_per_program, skip_done=True)
    os.makedirs(workdir, exist_ok=True)
    num_seeds = int(config.num_seeds)
    write_point_files(points, num_seeds, list(grid))
    base = {"method": config.method, "dataset": config.dataset, "grid": {k: list(v) for k, v in grid.items()},
            "num_seeds": num_seeds, "seed": int(config.seed), "sweepable": list(sweepable),
            "max_points_per_program": int(max_points_per_program), "executor": executor, **(meta or {})}
    record = SweepRecord(workdir, base, points, programs)
    todo = programs
    skipped = [os.path.basename(p["dir"]) for p in points if p["done"]]
    for p in points:
        if p.get("not_counted"):  # a results file that is not the point's own: the point runs again
            print(f"[clj.sweep] {os.path.basename(p['dir'])}: {p['not_counted']}; it runs again.")
    print(f"[clj.sweep] {len(points)} point(s): {len(skipped)} done, {len(points) - len(skipped)} to run in "
          f"{len(todo)} program(s) on {executor}.")

    def report(pid, **fields):
        if fields.get("state") == "running":
            fields["attempts"] = record.program(pid).get("attempts", 0) + 1
        record.set(pid, **fields)
        if fields.get("state") in ("done", "failed", "stopped"):
            print(f"[clj.sweep] {pid}: {fields['state']}"
                  + (f" ({fields['error']})" if fields.get("error") else ""))

    if todo:
        if executor == "local":
            executors.run_local(todo, workdir, report)
        elif executor == "processes":
            executors.run_processes(todo, workdir, report, parallel=parallel)
        else:
            executors.run_slurm(todo, workdir, report, **dict(slurm or {}))
    rep = write_report(workdir, sort=sort, plot_x=plot_x)
    failed = [p["id"] for p in record.data["programs"] if p["state"] == "failed"]
    return {"ran": [p.id for p in todo], "skipped": skipped, "failed": failed, "report": rep}


__all__ = ["Program", "apply_overrides", "config_fingerprint", "expand_grid", "group_points", "parse_grid",
           "mark_point_done", "parse_value", "plan", "point_dirname", "point_done", "point_slug", "point_state",
           "run_program", "run_sweep",
           "split_values", "sweepable_fields", "write_report"]
