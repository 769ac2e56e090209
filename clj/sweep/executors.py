"""Where a sweep's programs run: ``local`` (one after another in this
process), ``processes`` (subprocesses of this machine, one per GPU), or
``slurm`` (a submitit job array).

Each executor takes the programs still to run and a ``report(pid, **fields)``
callback that the driver uses to keep ``sweep.json`` current; it returns
nothing and never raises for a failed program (the failure is reported).
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import traceback
from typing import Callable, Sequence

from clj.config import ConfigError
from clj.sweep.core import Program, run_program, write_program

EXECUTORS = ("local", "processes", "slurm")


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {e}".splitlines()[0][:500]


def _explained(e: BaseException) -> bool:
    """Whether ``e`` is an expected fault whose message says it all (a refused
    config or workdir, a checkpoint that cannot be read or written)."""
    from clj.train.checkpoint import CheckpointError

    return isinstance(e, (ConfigError, CheckpointError))


def run_local(programs: Sequence[Program], sweep_dir: str, report: Callable) -> None:
    """Runs the programs one after another in this process."""
    for prog in programs:
        report(prog.id, state="running")
        t0 = time.perf_counter()
        try:
            out = run_program(prog)
        except Exception as e:  # noqa: BLE001 - one failed point must not stop the sweep
            if not _explained(e):  # (an expected fault is its one-line error below)
                traceback.print_exc()
            report(prog.id, state="failed", error=_one_line(e), wall_time_s=time.perf_counter() - t0)
            continue
        report(prog.id, state="stopped" if "stopped_after_task" in out else "done", error=None,
               wall_time_s=out["wall_time_s"])


def visible_gpus() -> list[str]:
    """The GPU ids this process may use: ``CUDA_VISIBLE_DEVICES`` when set,
    else those ``nvidia-smi -L`` lists; ``[]`` without GPUs."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip() not in ("", "-1")]
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(l for l in out.splitlines() if l.startswith("GPU "))]


def run_processes(programs: Sequence[Program], sweep_dir: str, report: Callable, parallel: int = 0,
                  gpus: Sequence[str] | None = None) -> None:
    """Runs each program in its own ``python -m clj.sweep --run_program``
    subprocess, several at once.

    With GPUs, one process per GPU at a time (``CUDA_VISIBLE_DEVICES`` set
    to it; ``parallel`` > number of GPUs shares them round-robin); without,
    ``parallel`` processes (default 1).  Each program's output goes to
    ``DIR/programs/<id>.log``.
    """
    gpus = visible_gpus() if gpus is None else list(gpus)
    slots = parallel or (len(gpus) or 1)
    if slots < 1:
        raise ConfigError(f"--parallel={parallel} is invalid: it must be >= 0 (0 = one per GPU, or 1 on CPU).")
    queue = list(programs)
    running: dict = {}  # slot -> (Popen, program, t0, log file)
    while queue or running:
        for slot in range(slots):
            if slot in running or not queue:
                continue
            prog = queue.pop(0)
            path = write_program(prog, sweep_dir)
            env = dict(os.environ)
            if gpus:
                env["CUDA_VISIBLE_DEVICES"] = gpus[slot % len(gpus)]
            log = open(path[:-4] + ".log", "a")
            p = subprocess.Popen([sys.executable, "-m", "clj.sweep", f"--run_program={path}"], env=env,
                                 stdout=log, stderr=subprocess.STDOUT, cwd=os.getcwd())
            report(prog.id, state="running")
            running[slot] = (p, prog, time.perf_counter(), log)
        time.sleep(0.5)
        for slot, (p, prog, t0, log) in list(running.items()):
            rc = p.poll()
            if rc is None:
                continue
            log.close()
            del running[slot]
            wall = time.perf_counter() - t0
            if rc == 0:
                stopped = _stopped(prog)
                report(prog.id, state="stopped" if stopped else "done", error=None, wall_time_s=wall)
            else:
                report(prog.id, state="failed", wall_time_s=wall,
                       error=f"exit status {rc}; see {os.path.relpath(log.name, sweep_dir)}")


def _stopped(prog: Program) -> bool:
    """True when a finished program left a point without its own results (stop_after_task)."""
    from clj.sweep.core import point_done
    from clj.sweep.grid import apply_overrides

    configs = [prog.config] if prog.vmapped is None else [apply_overrides(prog.config, vm) for vm in prog.vmapped]
    return not all(point_done(d, int(c.num_seeds), c) for d, c in zip(prog.point_workdirs, configs))


def parse_minutes(text: str) -> int:
    """Minutes of ``"90"``, ``"1:30:00"`` (h:m:s), ``"30:00"`` (m:s) or
    ``"2-00:00:00"`` (d-h:m:s), as SLURM writes times.

    Raises:
      ConfigError: anything else.
    """
    t = str(text).strip()
    try:
        days = 0
        if "-" in t:
            d, t = t.split("-", 1)
            days = int(d)
        parts = [int(x) for x in t.split(":")]
        if len(parts) == 1:
            m = parts[0]
        elif len(parts) == 2:
            m = parts[0] + (parts[1] > 0)
        elif len(parts) == 3:
            m = parts[0] * 60 + parts[1] + (parts[2] > 0)
        else:
            raise ValueError
    except ValueError:
        raise ConfigError(f"--slurm.time={text!r} is invalid: give minutes (90) or [d-]h:m:s (1:30:00).") from None
    m += days * 24 * 60
    if m <= 0:
        raise ConfigError(f"--slurm.time={text!r} is invalid: it must be > 0 minutes.")
    return m


def run_slurm(programs: Sequence[Program], sweep_dir: str, report: Callable, *, cluster: str = "slurm",
              partition: str = "", time_min: int = 60, gpus_per_node: int = 0, cpus_per_task: int = 0,
              mem_gb: int = 0, array_parallelism: int = 0, extra: dict | None = None) -> None:
    """Submits the programs as one submitit job array (one job per program)
    and waits for them.

    Args:
      cluster: ``"slurm"``, or submitit's ``"local"`` / ``"debug"``
        executors (no SLURM needed: tests, a dry run).
      partition, time_min, gpus_per_node, cpus_per_task, mem_gb: the job's
        resources (0 / '' = the cluster's default).
      array_parallelism: the most jobs of the array running at once (0 = SLURM's default).
      extra: further ``slurm_*`` parameters of submitit (e.g. ``{"slurm_account": "x"}``).

    Job logs are in ``DIR/slurm/``.  A rerun of the sweep resubmits the
    programs not finished.
    """
    import submitit

    if cluster not in ("slurm", "local", "debug"):
        raise ConfigError(f"--slurm.cluster={cluster!r} is invalid; valid: slurm, local, debug.")
    ex = submitit.AutoExecutor(folder=os.path.join(sweep_dir, "slurm", "%j"),
                               cluster=None if cluster == "slurm" else cluster)
    params = {"timeout_min": int(time_min), "name": f"clj-sweep-{os.path.basename(os.path.abspath(sweep_dir))}"}
    if gpus_per_node:
        params["gpus_per_node"] = int(gpus_per_node)
    if cpus_per_task:
        params["cpus_per_task"] = int(cpus_per_task)
    if mem_gb:
        params["mem_gb"] = int(mem_gb)
    if cluster == "slurm":
        if partition:
            params["slurm_partition"] = partition
        if array_parallelism:
            params["slurm_array_parallelism"] = int(array_parallelism)
        params.update(extra or {})
    ex.update_parameters(**params)
    paths = [write_program(p, sweep_dir) for p in programs]
    jobs = ex.map_array(run_program, paths)
    for prog, job in zip(programs, jobs):
        report(prog.id, state="running", job_id=str(job.job_id))
    for prog, job in zip(programs, jobs):
        try:
            out = job.result()
        except Exception as e:  # noqa: BLE001 - submitit raises the job's error (or a failed-job error)
            report(prog.id, state="failed", error=_one_line(e))
            continue
        report(prog.id, state="stopped" if "stopped_after_task" in out else "done", error=None,
               wall_time_s=out["wall_time_s"])
