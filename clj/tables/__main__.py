"""``python -m clj.tables <table> [options]``: see :mod:`clj.tables`.

    python -m clj.tables --list
    python -m clj.tables memo_cifar100 --rows "iCaRL B0 Inc10" --num_seeds 3 --workdir runs/memo_table
    python -m clj.tables derpp --tiny
"""
from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    from clj.errors import ConfigError
    from clj.tables import TABLES, run_table

    p = argparse.ArgumentParser(prog="python -m clj.tables", description="Run a seed paper's table.")
    p.add_argument("table", nargs="?", help="the table's name (--list shows them)")
    p.add_argument("--list", action="store_true", help="list the tables and their rows")
    p.add_argument("--markdown", action="store_true", help="with --list: the tables as Markdown (docs/tables.md)")
    p.add_argument("--rows", default="", help="row labels to run, separated by ';' or ',' (default: all)")
    p.add_argument("--workdir", default=None, help="the table's folder (default runs/tables/<table>)")
    p.add_argument("--num_seeds", type=int, default=None, help="seeds per row (default: the table's)")
    p.add_argument("--executor", default="local", help="local | processes | slurm")
    p.add_argument("--parallel", type=int, default=0, help="processes at once for --executor=processes")
    p.add_argument("--tiny", action="store_true", help="every row's code path on tiny synthetic data")
    p.add_argument("--device_memory_gib", type=float, default=None,
                   help="memory of one device (default: what the device reports)")
    p.add_argument("--check", action="store_true", help="print each row's memory and steps, train nothing")
    a = p.parse_args(argv)
    if a.list and a.markdown:
        from clj.tables import catalog_markdown

        print(catalog_markdown(), end="")
        return 0
    if a.list or not a.table:
        for t in TABLES.values():
            print(f"{t.name}: {t.title} [{t.source}]")
            for r in t.rows:
                print(f"    {r.label}: {r.command()}")
        return 0
    rows = None
    if a.rows:
        from clj.tables import get_table

        labels = {r.label for r in get_table(a.table).rows} if a.table in TABLES else set()
        rows = [a.rows] if a.rows in labels else [s.strip() for s in a.rows.replace(";", ",").split(",") if s.strip()]
    try:
        out = run_table(a.table, rows=rows, workdir=a.workdir, num_seeds=a.num_seeds, executor=a.executor,
                        tiny=a.tiny, device_memory_gib=a.device_memory_gib, parallel=a.parallel,
                        check_only=a.check)
    except ConfigError as e:
        print(f"clj.tables: {e}", file=sys.stderr)
        return 2
    failed = [r["label"] for r in out.get("rows", []) if "clj" in r and not any(r["clj"])]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
