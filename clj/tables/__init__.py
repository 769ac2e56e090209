"""A seed paper's table as one command: its rows run, clj's numbers printed
beside the paper's.

    python -m clj.tables memo_cifar100 [--rows "iCaRL B0 Inc10,WA B0 Inc10"] [--workdir DIR]
                                       [--num_seeds N] [--executor local|processes|slurm] [--tiny]

Each row is a shipped config (:mod:`clj.tables.catalog`).  Before any row
trains, every selected row's programs are compiled for abstract arrays and
their device memory read (:func:`clj.train.memory.program_memory`); the
command prints it with the row's steps and refuses, in one line, a row that
cannot fit a device (``--device_memory_gib`` overrides what the device
reports; the CPU reports nothing, so nothing is refused there unless it is
given).  The rows then run through the sweep executors (one point each,
seeds vmapped; a row whose class order follows the seed runs one program
per seed), so a rerun skips the finished rows and resumes the others.  The
table -- clj's mean +- sample std over seeds, the paper's number, the
difference and the row's ``launch.py`` command -- is printed and written to
``<workdir>/table.md`` and ``table.json``.

``--tiny`` runs every selected row's real code path end to end on synthetic
data of the row's real image shape (two images per class, one epoch,
batches of at most 16, the smallest network of the row's family) and, for a
class split, the row's first :data:`TINY_TASKS` tasks (the classes of its
first two tasks: the first task's programs and the ones every later task
shares): a check that the row runs, not a number (the test suite runs it).
"""
from __future__ import annotations

import json
import math
import os
import re
from typing import Sequence

import numpy as np

from clj.errors import ConfigError
from clj.tables.catalog import TABLES, Metric, Row, Table

# (H, W, C), classes of the datasets the tables use (for --tiny's synthetic stand-in)
DATASET_SHAPES = {
    "digits": ((8, 8, 1), 10), "mnist": ((28, 28, 1), 10), "fashion_mnist": ((28, 28, 1), 10),
    "emnist": ((28, 28, 1), 47), "cifar10": ((32, 32, 3), 10), "cifar100": ((32, 32, 3), 100),
    "tiny_imagenet": ((64, 64, 3), 200), "imagenet100": ((224, 224, 3), 100), "imagenet1k": ((224, 224, 3), 1000),
    "mini_imagenet": ((288, 384, 3), 100), "fg_imagenet": ((288, 384, 3), 100),
}
TINY_BATCH = 16
TINY_PER_CLASS = 2  # --tiny: training images per class (and test images per class)
TINY_TASKS = 2  # --tiny: the tasks of a class split kept (the first, and one that every later task repeats)


def get_table(name: str) -> Table:
    """The table called ``name``.

    Raises:
      ConfigError: no such table (the message lists them).
    """
    if name not in TABLES:
        raise ConfigError(f"table {name!r} is unknown; valid: {', '.join(sorted(TABLES))}.")
    return TABLES[name]


def select_rows(table: Table, rows: Sequence[str] | None) -> list[Row]:
    """The rows of ``table`` named in ``rows`` (labels, in table order; None = all).

    Raises:
      ConfigError: a label that is not a row of the table.
    """
    if not rows:
        return list(table.rows)
    labels = [r.label for r in table.rows]
    bad = [r for r in rows if r not in labels]
    if bad:
        raise ConfigError(f"--rows {bad[0]!r} is not a row of {table.name}; valid: {'; '.join(labels)}.")
    return [r for r in table.rows if r.label in set(rows)]


def row_config(row: Row, num_seeds: int, tiny: bool = False):
    """The config a row runs (its shipped config, variant and overrides;
    ``num_seeds`` seeds), or its ``--tiny`` stand-in (module doc).

    Raises:
      ConfigError: the config cannot be loaded or an override does not apply.
    """
    from clj.config import class_order_follows_seed, load_config
    from clj.sweep.grid import apply_overrides

    try:
        c = load_config(row.config, row.variant)
    except (ValueError, FileNotFoundError) as e:
        raise ConfigError(f"row {row.label!r}: {e}") from None
    if row.overrides:
        apply_overrides(c, dict(row.overrides))
    c.num_seeds = 1 if class_order_follows_seed(c) else int(num_seeds)
    if tiny:
        c = tiny_config(c)
    return c


def tiny_config(c):
    """``c`` on synthetic data of its dataset's image shape and class count
    (for a class split, the classes of its first :data:`TINY_TASKS` tasks):
    :data:`TINY_PER_CLASS` training and test images per class, one epoch (a
    method's own ``*_epochs`` fields too), batches of at most
    :data:`TINY_BATCH` and at most the smallest task's images, the row's
    network at its smallest width / depth, small memories.

    Raises:
      ConfigError: a dataset with no known shape.
    """
    import ml_collections

    from clj.config import _class_split

    name = str(c.dataset)
    if name.startswith("tfds:") or name not in DATASET_SHAPES and name != "synthetic":
        raise ConfigError(f"dataset={name!r} has no known image shape for --tiny; known: "
                          f"{', '.join(sorted(DATASET_SHAPES))}.")
    shape, classes = (tuple(c.synthetic.image_shape), int(c.synthetic.num_classes)) if name == "synthetic" \
        else DATASET_SHAPES[name]
    sc = c.scenario
    try:
        split = _class_split(classes, int(sc.get("init_cls", 0)), int(sc.get("increment", 2)))
    except ConfigError:
        split = [classes]
    if str(sc.get("kind", "class_il")) in ("class_il", "task_il") and int(sc.get("num_tasks", 0)) == 0:
        split = split[:TINY_TASKS]  # the first tasks' classes only: the others' data is left out
        classes = sum(split)
    per_class = TINY_PER_CLASS
    # batches of at most the smallest task's images: that task is one step, and no
    # task is padded up to a batch with more images than the row needs
    B = min(int(c.train.batch_size), TINY_BATCH, per_class * max(1, min(split)))
    c.dataset = "synthetic"
    c.synthetic = ml_collections.ConfigDict(dict(image_shape=shape, num_classes=classes,
                                                 train_per_class=per_class, test_per_class=TINY_PER_CLASS))
    c.train.batch_size = B
    c.train.epochs = 1
    for k in ("init_epochs", "max_steps"):
        if k in c.train:
            c.train[k] = 1 if k == "init_epochs" else c.train[k]
    c.loop.eval_batch_size = min(int(c.loop.eval_batch_size), 64)
    c.data.placement = "device"
    c.progress = False
    c.plots = False
    m = c.model
    fields = _model_fields(str(m.name))
    if "width" in fields and ("width" in m or "hidden" not in fields):  # a convolutional width
        m.width = min(int(m.get("width", 64)), 4)
    if "num_blocks" in m or "num_blocks" in fields:  # ResNet-32 -> ResNet-8 (1 block per stage)
        m.num_blocks = 1
    if "hidden" in m and "hidden" in fields:
        m.hidden = tuple(min(int(h), 32) for h in m.hidden)
    if "channels" in m:  # NISPA's ConvNet: its convolutions' channels and its FC layer
        m.channels = tuple(min(int(ch), 8) for ch in m.channels)
    if "fc_width" in m:
        m.fc_width = min(int(m.fc_width), 32)
    if "replay" in c:
        c.replay.minibatch_size = min(int(c.replay.minibatch_size), TINY_BATCH)
        c.replay.buffer_size = min(int(c.replay.buffer_size), per_class * classes)  # <= the training images
    if "nispa" in c:  # phases of one epoch, at most two per task
        c.nispa.phase_epochs = 1
        c.nispa.max_phases = min(int(c.nispa.max_phases), 2)
        c.nispa.min_phases = min(int(c.nispa.min_phases), c.nispa.max_phases)
        c.train.epochs = c.nispa.max_phases
    for block in c.values():  # a method's own epoch counts (FOSTER's compression, BiC's stage 2, ...)
        if isinstance(block, ml_collections.ConfigDict):
            for k, v in block.items():
                if k.endswith("_epochs") and isinstance(v, int) and not isinstance(v, bool) and v > 1:
                    block[k] = 1
    if "ser" in c:
        if str(c.ser.get("sal_target", "")) == "dataset":
            c.ser.sal_target = "spectral_residual"  # synthetic images have no stored saliency maps
        if str(c.ser.get("sal_init", "")).startswith("pretrain:"):
            c.ser.sal_init = "pretrain:2"  # two steps of the saliency pretraining (the paper configs: 2000)
    if "cil" in c:
        c.cil.memory_size = min(int(c.cil.memory_size), 2 * classes)
        c.cil.base_exemplars = min(int(c.cil.base_exemplars), 2 * classes)
        c.cil.memory_per_class = min(int(c.cil.memory_per_class), 2)
        c.cil.feature_batch_size = min(int(c.cil.feature_batch_size), 64)
        c.cil.max_replay_batch = min(int(c.cil.max_replay_batch), TINY_BATCH)
    return c


def _model_fields(name: str) -> set:
    """Which of ``width`` / ``hidden`` / ``num_blocks`` the model registered
    as ``name`` accepts (its constructor is tried; nothing is initialised)."""
    from clj.models import get_model

    out = set()
    for field, value in (("width", 4), ("hidden", (32,)), ("num_blocks", 1)):
        try:
            get_model(name, 2, **{field: value})
        except (TypeError, ValueError):
            continue
        out.add(field)
    return out


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", label).strip("_").lower()


def check_memory(rows: list[Row], configs: list, device_memory: int | None, log=print) -> list:
    """Compiles every row's programs for abstract arrays, prints each row's
    device memory and steps, and refuses a row that cannot fit.

    Args:
      rows, configs: the rows and their configs.
      device_memory: bytes one device offers (None: what the device reports;
        nothing is refused when it reports nothing).

    Returns:
      the rows' :class:`clj.train.memory.ProgramMemory`.

    Raises:
      ConfigError: a row whose peak exceeds ``device_memory`` (one line: the
        row, what it needs, what the device has, what to change).
    """
    from clj.train.memory import GIB, device_memory_bytes, program_memory

    limit = device_memory if device_memory is not None else device_memory_bytes()
    out = []
    for row, c in zip(rows, configs):
        m = program_memory(c)
        log(f"[clj.tables] {row.label}: {m.line()}")
        if limit is not None and m.peak > limit:
            fix = (f"--config.data.placement=stream (keeps the {m.data / GIB:.2f} GiB of data on disk)"
                   if m.data > 0.1 * m.peak else "a smaller train.batch_size")
            raise ConfigError(f"row {row.label!r} needs {m.peak / GIB:.2f} GiB per device but a device has "
                              f"{limit / GIB:.2f} GiB; run it with {fix}, or fewer seeds per device "
                              f"(--num_seeds={max(1, int(c.num_seeds) // 2)} or more devices).")
        out.append(m)
    return out


def _seed_values(point_dir: str, metric: Metric) -> list[float]:
    """The metric (percent) of every finished seed of a row's point folder."""
    import glob

    files = sorted(glob.glob(os.path.join(point_dir, "seed_*", "results.json"))) or \
        [os.path.join(point_dir, "results.json")]
    vals = []
    for f in files:
        if not os.path.exists(f):
            continue
        with open(f, encoding="utf-8") as fh:
            r = json.load(fh)
        if r.get("status") == "diverged":
            continue
        v = (r.get("metrics") or {}).get(metric.setting, {}).get(metric.name)
        if v is not None:
            vals.append(100.0 * float(v))
    return vals


def run_table(name: str, *, rows: Sequence[str] | None = None, workdir: str | None = None,
              num_seeds: int | None = None, executor: str = "local", tiny: bool = False,
              device_memory_gib: float | None = None, parallel: int = 0, check_only: bool = False,
              log=print) -> dict:
    """Runs a table's rows and writes its table (module doc).

    Args:
      name: the table (:data:`clj.tables.catalog.TABLES`).
      rows: row labels to run (None = all).
      workdir: the table's folder (default ``runs/tables/<name>[_tiny]``).
      num_seeds: seeds per row (default: the table's).
      executor: ``local`` | ``processes`` | ``slurm`` (the sweep executors).
      tiny: the ``--tiny`` stand-in of every row (module doc).
      device_memory_gib: the memory of one device in GiB (default: what it reports).
      parallel: processes at once for ``processes``.
      check_only: stop after the memory check (nothing is trained or written).

    Returns:
      ``{"table": name, "rows": [{"label", "command", "paper": [...], "clj": [[values per seed]...],
      "mean": [...], "std": [...], "memory_gib": float, "steps": int}], "markdown": str}``.

    Raises:
      ConfigError: an unknown table, row or executor, a row config that cannot
        run, or a row that cannot fit a device (before any row trains).
    """
    from clj.sweep import executors, plan, run_sweep

    table = get_table(name)
    if executor not in executors.EXECUTORS:
        raise ConfigError(f"--executor={executor!r} is invalid; valid: {', '.join(executors.EXECUTORS)}.")
    if num_seeds is not None and int(num_seeds) < 1:
        raise ConfigError(f"--num_seeds={num_seeds} is invalid: it must be >= 1.")
    chosen = select_rows(table, rows)
    n = int(num_seeds or table.seeds)
    configs = [row_config(r, n, tiny) for r in chosen]
    limit = None if device_memory_gib is None else int(float(device_memory_gib) * (1 << 30))
    mems = check_memory(chosen, configs, limit, log=log)
    if check_only:
        return {"table": name, "rows": [{"label": r.label, "memory_gib": m.peak / (1 << 30), "steps": m.steps}
                                        for r, m in zip(chosen, mems)]}
    from clj.config import class_order_follows_seed

    workdir = os.path.abspath(workdir or os.path.join("runs", "tables", name + ("_tiny" if tiny else "")))
    os.makedirs(workdir, exist_ok=True)
    out_rows = []
    for row, c, m in zip(chosen, configs, mems):
        d = os.path.join(workdir, _slug(row.label))
        grid = {"seed": [int(c.seed) + s for s in range(n)]} if class_order_follows_seed(c) and n > 1 else {}
        log(f"[clj.tables] {row.label}: {row.command()}")
        res = run_sweep(c, grid, d, executor=executor, parallel=parallel, sweepable=(),
                        meta={"table": name, "row": row.label, "command": row.command(), "tiny": tiny})
        if res["failed"]:
            log(f"[clj.tables] {row.label}: failed ({', '.join(res['failed'])}); see {d}/sweep.json")
        points, _ = plan(c, grid, d, ())
        per_metric = []
        for metric in table.metrics:
            vals = []
            for p in points:
                vals += _seed_values(p["dir"], metric)
            per_metric.append(vals)
        out_rows.append({"label": row.label, "command": row.command(), "paper": list(row.paper),
                         "clj": per_metric,
                         "mean": [float(np.mean(v)) if v else None for v in per_metric],
                         "std": [float(np.std(v, ddof=1)) if len(v) > 1 else 0.0 if v else None for v in per_metric],
                         "memory_gib": m.peak / (1 << 30), "steps": m.steps})
    md = format_table(table, out_rows, tiny)
    result = {"table": name, "tiny": tiny, "num_seeds": n, "rows": out_rows, "markdown": md}
    with open(os.path.join(workdir, "table.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    with open(os.path.join(workdir, "table.md"), "w", encoding="utf-8") as f:
        f.write(md)
    log(md)
    return result


def catalog_markdown() -> str:
    """Every table with its full-size command and each row's paper numbers
    and ``launch.py`` command (the body of docs/tables.md)."""
    lines = []
    for t in TABLES.values():
        lines += [f"### `{t.name}`: {t.title}", "", f"Source: {t.source}. Default seeds per row: {t.seeds}.", "",
                  "```", f"python -m clj.tables {t.name} --workdir runs/tables/{t.name}", "```", "",
                  "| row | " + " | ".join(f"{m.label} (paper)" for m in t.metrics) + " | config |",
                  "|---|" + "---|" * len(t.metrics) + "---|"]
        for r in t.rows:
            lines.append(f"| {r.label} | " + " | ".join(_fmt(p) for p in r.paper) + f" | `{r.command()}` |")
        if t.note:
            lines += ["", t.note]
        lines.append("")
    return "\n".join(lines)


def _fmt(x, nd=2) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def format_table(table: Table, rows: list[dict], tiny: bool = False) -> str:
    """The Markdown table: per metric the paper's number, clj's mean +- std
    (n seeds) and clj minus paper; then the row's command."""
    head = ["row"]
    for m in table.metrics:
        head += [f"{m.label} paper", f"{m.label} clj", f"{m.label} diff"]
    head.append("config")
    lines = [f"## {table.title}" + (" (--tiny: synthetic data, not a result)" if tiny else ""), "",
             f"Source: {table.source}.", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["label"]]
        for i, _ in enumerate(table.metrics):
            paper = r["paper"][i] if i < len(r["paper"]) else None
            mean, std, n = r["mean"][i], r["std"][i], len(r["clj"][i])
            cells += [_fmt(paper), "–" if mean is None else f"{mean:.2f} ± {std:.2f} ({n})",
                      "–" if mean is None or paper is None else f"{mean - paper:+.2f}"]
        cells.append(f"`{r['command']}`")
        lines.append("| " + " | ".join(cells) + " |")
    if table.note:
        lines += ["", table.note]
    return "\n".join(lines) + "\n"


__all__ = ["DATASET_SHAPES", "Metric", "Row", "TABLES", "Table", "check_memory", "format_table", "get_table",
           "row_config", "run_table", "select_rows", "tiny_config"]
