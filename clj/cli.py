"""The command line: ``python launch.py``, ``python -m clj`` or ``clj``.

    clj --config=configs/derpp_digits.py [--config.optim.lr=0.05 ...] [--workdir=runs/x]
    clj --config=derpp_digits --describe      # the resolved config, each field's meaning
    clj --help                                # methods, datasets, shipped configs

Everything that can be refused is refused before JAX is imported (when the
config file itself does not import it) and before anything is written: a
missing config file, an unknown field, a bad value of any field or method
block, a workdir that is a file, busy, or holding another config's run.  A
refusal is one line ``error: ...`` on stderr and exit status 2.  The checks
that need JAX (the mesh against the devices, the placement, each task's
batches) also come before anything is written in the workdir.

Faults of the file system (a read-only or unwritable workdir, a full disk, a
file where a folder should be, a damaged ``identity.json``) are one line
``error: ...`` too: status 2 before the run starts, 1 during it.  SIGINT or
SIGTERM before training begins is one line and status 128 + the signal's
number; once training runs, the loop saves a checkpoint first
(:mod:`clj.train.loop`).  Unexpected errors keep their traceback.
"""
from __future__ import annotations

import ast
import os
import sys

USAGE = """usage: python launch.py --config=<file or name>[:variant] [--config.<field>=<value> ...]
                        [--workdir=<dir>] [--describe]
       (also: python -m clj ..., or the clj command after pip install clj-jax)

  --config=F         a config file (configs/derpp_digits.py) or a shipped config's name (derpp_digits);
                     ':variant' is passed to its get_config (configs/serena_digits.py:official)
  --config.<field>=V override one field (--config.optim.lr=0.05, --config.num_seeds=3)
  --workdir=D        output folder (default runs/<method>_<dataset>_seed<seed>_<hash of the config>);
                     a workdir belongs to one config: a run resumes in it only with the same config
  --describe         print the resolved config, each field with its meaning, and exit
  --help             this text

several processes (hosts) running one program (jax.distributed; the workdir on a shared file system):
  --coordinator_address=H:P --num_processes=N --process_id=I   (all three, same on every process but I)
  --distributed      on a cluster JAX detects itself (SLURM, Cloud TPU): no other flag needed"""

DIST_FLAGS = ("coordinator_address", "num_processes", "process_id")


def split_distributed(argv: list[str]) -> tuple[list[str], dict | None]:
    """Removes the multi-process flags from ``argv``; returns (rest, the
    ``clj.train.distributed.initialize`` arguments or None when absent).

    Raises:
      clj.config.ConfigError: a flag without a value, or a non-integer count.
    """
    from clj.config import ConfigError

    rest, got, on = [], {}, False
    for a in argv:
        name, eq, value = a[2:].partition("=") if a.startswith("--") else ("", "", "")
        if name == "distributed" and not eq:
            on = True
        elif name in DIST_FLAGS:
            if not value:
                raise ConfigError(f"--{name} needs a value (--{name}=...).")
            got[name] = value
        else:
            rest.append(a)
    if not got and not on:
        return rest, None
    try:
        for k in ("num_processes", "process_id"):
            if k in got:
                got[k] = int(got[k])
    except ValueError:
        raise ConfigError(f"--num_processes / --process_id must be integers; got {got}.") from None
    if got and len(got) != 3:
        raise ConfigError("--coordinator_address, --num_processes and --process_id go together; give all three, "
                          "or --distributed alone where JAX detects the cluster (SLURM, Cloud TPU).")
    return rest, got



def _first_doc_line(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            doc = ast.get_docstring(ast.parse(f.read())) or ""
    except (OSError, SyntaxError):
        return ""
    line = doc.strip().split("\n\n")[0].replace("\n", " ")
    return line if len(line) <= 100 else line[:97] + "..."


def help_text() -> str:
    """The ``--help`` text: usage, methods, datasets and shipped configs."""
    from clj.config import DATASETS, configs_dir, list_configs
    from clj.methods import METHODS

    out = [USAGE, "", "methods (--config.method):"]
    w = max(map(len, METHODS))
    out += [f"  {m.ljust(w)}  {METHODS[m].doc}" for m in sorted(METHODS)]
    out += ["", "datasets (--config.dataset):"]
    w = max(map(len, DATASETS))
    out += [f"  {d.ljust(w)}  {doc}" for d, doc in DATASETS.items()]
    out += [f"  {'tfds:<name>'.ljust(w)}  any prepared TFDS dataset"]
    names = list_configs()
    out += ["", f"config files ({configs_dir()}):"]
    w = max(map(len, names), default=0)
    out += [f"  {n.ljust(w)}  {_first_doc_line(os.path.join(configs_dir(), n + '.py'))}" for n in names]
    out += ["", "exit status: 0 done, 1 a failure during the run, 2 refused before any work (one line on stderr),",
            "  3 a run diverged (non-finite loss or parameters; its results say so), 128 + N stopped by signal N."]
    return "\n".join(out)


def _error(msg: str, status: int = 2) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return status


class StartupInterrupted(BaseException):
    """SIGINT or SIGTERM arrived while the loop's own handler was not
    installed (start-up, or a second signal during training).  A
    ``BaseException``, as ``KeyboardInterrupt``: no ``except Exception``
    swallows it."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = int(signum)


def _catch_startup_signals(state: dict):
    """Makes SIGINT and SIGTERM raise :class:`StartupInterrupted` (SIGTERM
    would otherwise end the process silently, SIGINT with a traceback);
    returns the function that restores the previous handlers.

    While training runs the loop's own handler replaces this one (it saves a
    checkpoint first).  A second signal there comes back here through the
    loop, which promises the default action at once: then the previous
    handler acts (``state["runner"]._signal`` is set by the loop's handler).
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    # a signal the parent made the process ignore (nohup, a background job) stays ignored
    old = {s: h for s in (signal.SIGINT, signal.SIGTERM) if (h := signal.getsignal(s)) is not signal.SIG_IGN}

    def handler(signum, frame):
        if getattr(state.get("runner"), "_signal", None) is not None:  # a second signal while the loop saves
            prev = old.get(signum)
            signal.signal(signum, prev if prev is not None else signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        raise StartupInterrupted(signum)

    for s in old:
        signal.signal(s, handler)

    def restore():
        for s, h in old.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)

    return restore


def _interrupted(signum: int, training: bool) -> int:
    import signal

    name = signal.Signals(signum).name
    if training:  # the loop's own handler was not installed (its set-up, its end, or a second signal)
        print(f"error: interrupted by {name}; rerun the same command: it resumes from the workdir's last "
              "checkpoint, if there is one.", file=sys.stderr)
    else:
        print(f"error: interrupted by {name} during start-up; nothing was trained; rerun the same command.",
              file=sys.stderr)
    return 128 + int(signum)


def _config_arg(argv: list[str]) -> tuple[int, str] | None:
    for i, a in enumerate(argv):
        if a.startswith("--config="):
            return i, a.split("=", 1)[1]
        if a == "--config" and i + 1 < len(argv):
            return i, argv[i + 1]
    return None


def _field_exists(config, dotted: str) -> bool:
    node = config
    for part in dotted.split("."):
        if not hasattr(node, "keys") or part not in node:
            return False
        node = node[part]
    return True


def _explain_unknown(config, dotted: str) -> str:
    parent, _, leaf = dotted.rpartition(".")
    node = config
    for part in parent.split(".") if parent else []:
        if not hasattr(node, "keys") or part not in node:
            return f"config.{dotted} is not a field (no block {parent!r}; blocks: " \
                   f"{', '.join(k for k in config.keys() if hasattr(config[k], 'keys'))})."
        node = node[part]
    if not hasattr(node, "keys"):
        return f"config.{dotted} is not a field: config.{parent} is a value, not a block."
    import difflib

    close = difflib.get_close_matches(leaf, list(node.keys()), n=1)
    hint = f"did you mean {parent + '.' if parent else ''}{close[0]}? " if close else ""
    return (f"config.{dotted} is not a field; {hint}fields of {parent or 'the config'}: "
            f"{', '.join(sorted(node.keys()))}.")


def resolve_config_arg(argv: list[str]):
    """Finds ``--config=<file or name>[:variant]`` in ``argv``, resolves a
    shipped config's name to its file and runs its ``get_config`` once.

    Returns:
      ``(args, config)``: ``argv`` with the ``--config`` value replaced by the
      file's path (for ``ml_collections.config_flags``), and the config it
      gives, before any override.

    Raises:
      clj.config.ConfigError: no ``--config``, no such file, the config
        file's own error (one line), or a ``--config.<field>`` override that
        names no field of it.
    """
    from clj.config import ConfigError, add_import_root, load_config, resolve_config_path

    found = _config_arg(argv)
    if found is None:
        raise ConfigError("--config=<file or name> is required; python launch.py --help lists the shipped configs.")
    i, value = found
    path, sep, variant = value.partition(":")
    path = resolve_config_path(path)
    try:  # run get_config once here: its own errors become one line
        base = load_config(path, variant if sep else None)
    except ConfigError:
        raise
    except Exception as e:  # noqa: BLE001 - a config file can raise anything
        first = (str(e).strip().splitlines() or [""])[0]
        raise ConfigError(f"config file {path}: get_config{'(' + repr(variant) + ')' if sep else '()'} raised "
                          f"{type(e).__name__}: {first}") from None
    add_import_root(path)  # config_flags loads the file again
    args = list(argv)
    if args[i] == "--config":
        del args[i + 1]
    args[i] = f"--config={path}{sep}{variant}"

    for a in args:  # unknown fields: one line naming the valid ones (absl would raise a traceback)
        if a.startswith("--config.") or a.startswith("--noconfig."):
            dotted = a.split("=", 1)[0].split("config.", 1)[1]
            if not _field_exists(base, dotted):
                raise ConfigError(_explain_unknown(base, dotted))
    return args, base


def flag_error_line(e: Exception, base, args: list[str], valid: str) -> str:
    """One line for an error of absl's flag parsing of ``args`` (``base``:
    the config before overrides; ``valid``: the flags to name when one is
    unknown)."""
    from absl import flags

    if isinstance(e, flags.UnrecognizedFlagError):
        name = e.flagname or ""
        if name.startswith("config."):
            dotted = name[len("config."):]
            if _field_exists(base, dotted):
                bad = [a for a in args if a.startswith(f"--config.{dotted}=")]
                shown = bad[0].split("=", 1)[1] if bad else ""
                return f"config.{dotted}={shown!r} is not a valid {type(_leaf(base, dotted)).__name__} (the field's type)."
            return _explain_unknown(base, dotted)
        return f"unknown flag --{name}; valid: {valid}."
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else f"{type(e).__name__} while parsing the flags"


# the errors absl's flag parsing (config_flags included) raises for a bad value
FLAG_ERRORS = (AttributeError, KeyError, TypeError, ValueError)


def parse(argv: list[str]):
    """``(config, workdir or None, describe)`` from the command line, the
    config validated.

    Raises:
      clj.config.ConfigError: any refusal (one-line message).
    """
    from absl import flags
    from ml_collections import config_flags

    from clj.config import ConfigError, validate

    args, base = resolve_config_arg(argv)
    fv = flags.FlagValues()
    config_flags.DEFINE_config_file("config", None, "config file", flag_values=fv, lock_config=True)
    flags.DEFINE_string("workdir", None, "output folder", flag_values=fv)
    flags.DEFINE_boolean("describe", False, "print the resolved config and exit", flag_values=fv)
    try:
        fv(["clj"] + args)
    except (flags.Error, *FLAG_ERRORS) as e:
        raise ConfigError(flag_error_line(e, base, args, "--config, --config.<field>, --workdir, --describe, "
                                          "--help")) from None
    config = fv["config"].value
    validate(config)
    return config, fv["workdir"].value, bool(fv["describe"].value)


def _leaf(config, dotted):
    node = config
    for p in dotted.split("."):
        node = node[p]
    return node


def _print_metrics(out: dict) -> None:
    m = out["metrics"]
    for setting, vals in m.items():
        def fmt(v):
            if isinstance(v, dict):
                return "n/a" if v.get("mean") is None else f"{100 * v['mean']:.2f} ± {100 * v['std']:.2f}"
            return "n/a" if v is None else f"{100 * v:.2f}"
        print(f"[clj] {setting}: final avg acc {fmt(vals['final_average_accuracy'])}%, "
              f"avg incremental acc {fmt(vals['average_incremental_accuracy'])}%, "
              f"forgetting {fmt(vals['forgetting'])}")


def main(argv: list[str] | None = None) -> int:
    """Runs the command line ``argv`` (default ``sys.argv[1:]``); returns the
    exit status (0 done, 1 failed during the run, 2 refused before any work,
    128 + signal number when the loop stopped at SIGTERM/SIGINT after saving
    a checkpoint: it returns ``{"interrupted": "SIGTERM", "checkpoint_step": n}``,
    or when the signal came before training began).  Expected faults (a bad
    value, a file-system fault, a signal) are one line on stderr."""
    state = {"runner": None, "running": False}
    restore = _catch_startup_signals(state)
    try:
        return _main(sys.argv[1:] if argv is None else list(argv), state)
    except (StartupInterrupted, KeyboardInterrupt) as e:
        import signal

        signum = e.signum if isinstance(e, StartupInterrupted) else int(signal.SIGINT)
        return _interrupted(signum, state["running"])
    finally:
        restore()


def _main(argv: list[str], state: dict) -> int:
    if any(a in ("-h", "--help", "-help", "--helpshort", "--helpfull") for a in argv):
        print(help_text())
        return 0
    from clj import workdir as workdir_lib
    from clj.config import ConfigError, describe
    from clj.preflight import check_data

    workdir = None
    try:
        argv, dist_args = split_distributed(argv)
        config, workdir, want_describe = parse(argv)
        workdir = workdir or config.workdir or workdir_lib.default_workdir(config)
        if want_describe:
            print(f"# workdir: {workdir}")
            print(describe(config))
            return 0
        main_process = True
        if dist_args is not None:  # every process runs the same program; process 0 owns the workdir
            from clj.train import distributed

            distributed.initialize(**dist_args)
            main_process = distributed.is_main()
        if main_process:
            workdir_lib.check(workdir, config)  # read-only: refuse a busy or foreign workdir before loading data
        scenario = check_data(config)       # the data exists and fits the config (still nothing written)
        # Every check that needs JAX (placement, the mesh against the devices, each task's
        # batches) runs in the Runner's constructor: build it before the workdir is written.
        from absl import logging

        from clj.train import Runner

        logging.set_verbosity(logging.WARNING)  # orbax logs every file it writes at INFO
        runner = state["runner"] = Runner(config, workdir, scenario=scenario)
        handle = workdir_lib.prepare(workdir, config) if main_process else _Shared(workdir)
    except ConfigError as e:
        return _error(str(e))
    except OSError as e:  # nothing trained: a workdir that cannot be written, a full disk, ...
        if not workdir_lib.is_file_fault(e):
            raise
        return _error(workdir_lib.os_error_line(e, workdir))

    from clj.train.checkpoint import CheckpointError

    with handle:
        try:
            state["running"] = True
            out = runner.run()
        except ConfigError as e:
            return _error(str(e))
        except CheckpointError as e:
            return _error(" ".join(str(e).split()), 1)
        except OSError as e:  # a checkpoint or result that cannot be written
            if not workdir_lib.is_file_fault(e):
                raise
            return _error(workdir_lib.os_error_line(e, workdir), 1)
    if out is None:  # a process other than 0: process 0 reports
        return 0
    if "interrupted" in out:  # the loop saved a checkpoint at SIGTERM/SIGINT and returned
        sig = str(out["interrupted"])
        print(f"[clj] stopped by {sig}; checkpoint written (step {out.get('checkpoint_step')}); rerun the same "
              "command to resume.", file=sys.stderr)
        return 128 + {"SIGTERM": 15, "SIGINT": 2}.get(sig, 15)
    if "stopped_after_task" in out:
        print(f"[clj] stopped after task {out['stopped_after_task']} (stop_after_task); rerun to resume.")
        return 0
    if out.get("status") == "diverged":  # the loop named each diverged seed as it happened
        if out.get("metrics"):
            _print_metrics(out)  # the seeds that did not diverge
        bad = out["diverged"] if isinstance(out["diverged"], list) else [out["diverged"]]
        print(f"[clj] error: {len(bad)} run(s) diverged (seed {', '.join(str(b['seed']) for b in bad)}); their "
              f"results in {workdir} are marked diverged and hold no accuracies. Lower optim.lr or check the "
              "data.", file=sys.stderr)
        return 3
    _print_metrics(out)
    return 0


class _Shared:
    """The workdir as seen by processes other than 0 (process 0 holds its lock)."""

    def __init__(self, path: str):
        self.path = os.path.abspath(path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def main_entry() -> None:
    """The ``clj`` console script (and ``launch.py``, ``python -m clj``):
    exits with :func:`main`'s status; output cut short by a closed pipe
    (``clj --help | head``) ends quietly."""
    try:
        code = main()
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        code = 0
    sys.exit(code)
