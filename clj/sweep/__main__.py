"""``python -m clj.sweep``: runs a grid of config values, or rebuilds a sweep's table.

    python -m clj.sweep --config=derpp_mnist \\
        --grid optim.lr=0.01,0.03,0.1 --grid replay.alpha=0.1,0.3 \\
        --config.num_seeds=5 --workdir=sweeps/derpp_mnist [--executor=local|processes|slurm] \\
        [--max_points_per_program=N] [--parallel=N] [--sort=class_il.final_average_accuracy] \\
        [--slurm.partition=gpu --slurm.time=2:00:00 --slurm.gpus_per_node=1]
    python -m clj.sweep --report sweeps/derpp_mnist

``--grid FIELD=V1,V2,...`` (repeatable) sweeps a config field; values are
read as the field's type (int, float, bool, str, tuples as ``(64,64)``).
Plain ``--config.FIELD=V`` overrides apply to every point.  ``--config``
takes a config file or a shipped config's name, as ``python launch.py``
does.  A bad argument is one line ``error: ...`` on stderr and exit
status 2.  See docs/sweeps.md.
"""
import sys

from absl import app, flags, logging
from ml_collections import config_flags

_CONFIG = config_flags.DEFINE_config_file("config", None, "A config file or a shipped config's name "
                                          "(derpp_digits), as python launch.py takes it.", lock_config=True)
_GRID = flags.DEFINE_multi_string("grid", [], "FIELD=V1,V2,... a config field and its values (repeatable).")
_WORKDIR = flags.DEFINE_string("workdir", None, "The sweep folder (one subfolder per point).")
_EXECUTOR = flags.DEFINE_enum("executor", "local", ["local", "processes", "slurm"],
                              "local: one program after another in this process; processes: subprocesses, "
                              "one per GPU (--parallel on CPU); slurm: a submitit job array.")
_MAX_POINTS = flags.DEFINE_integer("max_points_per_program", 0,
                                   "Most grid points vmapped in one program (0 = no limit).")
_PARALLEL = flags.DEFINE_integer("parallel", 0, "processes executor: programs at once (0 = one per GPU, 1 on CPU).")
_SORT = flags.DEFINE_string("sort", "", "Table order: METRIC[:asc|:desc] (default class_il.final_average_accuracy).")
_PLOT_X = flags.DEFINE_string("plot_x", "", "Swept field on the plot's x axis (default: the first numeric one).")
_REPORT = flags.DEFINE_string("report", None, "Rebuild DIR/sweep.csv, .md and the plot from DIR's workdirs; no runs.")
_RUN_PROGRAM = flags.DEFINE_string("run_program", None, "(internal) run one pickled program and exit.")
_DRY_RUN = flags.DEFINE_boolean("dry_run", False, "Print the points and programs, run nothing.")
_S_CLUSTER = flags.DEFINE_enum("slurm.cluster", "slurm", ["slurm", "local", "debug"],
                               "submitit executor: slurm, or local/debug to try the array without SLURM.")
_S_PARTITION = flags.DEFINE_string("slurm.partition", "", "SLURM partition ('' = the cluster's default).")
_S_TIME = flags.DEFINE_string("slurm.time", "60", "Time limit per job: minutes or [d-]h:m:s.")
_S_GPUS = flags.DEFINE_integer("slurm.gpus_per_node", 0, "GPUs per job.")
_S_CPUS = flags.DEFINE_integer("slurm.cpus_per_task", 0, "CPUs per job (0 = default).")
_S_MEM = flags.DEFINE_integer("slurm.mem_gb", 0, "Memory per job in GB (0 = default).")
_S_ARRAY = flags.DEFINE_integer("slurm.array_parallelism", 0, "Most array jobs at once (0 = SLURM's default).")
_S_ACCOUNT = flags.DEFINE_string("slurm.account", "", "SLURM account ('' = none).")


def main(argv):
    logging.set_verbosity(logging.WARNING)
    from clj.config import ConfigError

    try:
        if len(argv) > 1:
            raise ConfigError(f"unexpected arguments: {' '.join(argv[1:])} (write --grid FIELD=V1,V2).")
        if _RUN_PROGRAM.value:
            from clj.sweep.core import run_program
            out = run_program(_RUN_PROGRAM.value)
            print(f"[clj.sweep] program {out['id']} finished in {out['wall_time_s']:.1f}s")
            return 0
        if _REPORT.value:
            import os

            from clj.sweep.report import write_report

            if not os.path.isdir(_REPORT.value):
                raise ConfigError(f"--report {_REPORT.value}: no such folder (give a sweep's --workdir).")
            rep = write_report(_REPORT.value, sort=_SORT.value, plot_x=_PLOT_X.value)
            print(f"[clj.sweep] {rep['rows']} point(s): {rep['csv']}, {rep['md']}"
                  + (f", {rep['plot']}" if rep["plot"] else ""))
            return 0
        config = _CONFIG.value
        if config is None:
            raise ConfigError("--config=<file or name> is required (or --report DIR); python launch.py --help lists "
                              "the shipped configs.")
        if not _WORKDIR.value:
            raise ConfigError("--workdir=DIR is required: the sweep folder.")
        from clj.sweep import parse_grid, plan, run_sweep, sweepable_fields
        from clj.sweep.executors import parse_minutes

        grid = parse_grid(_GRID.value, config)
        if _DRY_RUN.value:
            points, programs = plan(config, grid, _WORKDIR.value, sweepable_fields(config.method),
                                    _MAX_POINTS.value, skip_done=True)
            print(f"{sum(p['done'] for p in points)} of {len(points)} point(s) done; to run:")
            for p in programs:
                print(f"{p.id}: {len(p.points)} point(s)" + (" vmapped" if p.vmapped else ""))
                for i in p.points:
                    print(f"  {points[i]['dir']}")
            return 0
        slurm = dict(cluster=_S_CLUSTER.value, partition=_S_PARTITION.value, time_min=parse_minutes(_S_TIME.value),
                     gpus_per_node=_S_GPUS.value, cpus_per_task=_S_CPUS.value, mem_gb=_S_MEM.value,
                     array_parallelism=_S_ARRAY.value,
                     extra={"slurm_account": _S_ACCOUNT.value} if _S_ACCOUNT.value else None)
        out = run_sweep(config, grid, _WORKDIR.value, executor=_EXECUTOR.value,
                        max_points_per_program=_MAX_POINTS.value, parallel=_PARALLEL.value, slurm=slurm,
                        sort=_SORT.value, plot_x=_PLOT_X.value, meta={"command": " ".join(sys.argv)})
    except (ConfigError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    rep = out["report"]
    print(f"[clj.sweep] table of {rep['rows']} point(s): {rep['md']}")
    with open(rep["md"]) as f:
        print(f.read())
    if out["failed"]:
        print(f"[clj.sweep] {len(out['failed'])} program(s) failed: {', '.join(out['failed'])} "
              "(see sweep.json; rerun to retry)", file=sys.stderr)
        return 1
    return 0


VALID_FLAGS = "--config, --config.<field>, --grid, --workdir, --executor, --report, --help (see --help)"


def parse_flags(argv: list[str]) -> list[str]:
    """absl's flag parsing, with a shipped config's name resolved to its file
    first (:func:`clj.cli.resolve_config_arg`, as ``python launch.py``) and
    every refusal one line ``error: ...`` on stderr, exit status 2."""
    from clj.cli import FLAG_ERRORS, flag_error_line, resolve_config_arg
    from clj.config import ConfigError

    prog, args = argv[0], list(argv[1:])
    base = None
    try:
        if not any(a in ("-h", "--help", "-help", "--helpshort", "--helpfull", "-?") for a in args) and (
                any(a == "--config" or a.startswith("--config=") for a in args)):
            args, base = resolve_config_arg(args)
        return flags.FLAGS([prog] + args)
    except ConfigError as e:
        msg = str(e)
    except (flags.Error, *FLAG_ERRORS) as e:
        if base is None and isinstance(e, flags.UnrecognizedFlagError):
            msg = (f"--{e.flagname} overrides a field of the config: give --config=<file or name> too."
                   if (e.flagname or "").startswith("config.") else
                   f"unknown flag --{e.flagname}; valid: {VALID_FLAGS}.")
        else:
            msg = flag_error_line(e, base, args, VALID_FLAGS)
    print(f"error: {' '.join(msg.split())}", file=sys.stderr)
    sys.exit(2)


def main_entry():
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    main_entry()
