"""The statistics tables of the docs, made from the core's lists: the
process's (cython/zk/zk_stats_list.h, exposed as zkalloc_np._core.STATS)
in docs/stats.md, and a phase's (cython/zk/zk_scope_stats_list.h,
_core.SCOPE_STATS) in docs/phases.md.

    python tools/stats_table.py            # print the tables
    python tools/stats_table.py --write    # put them into the docs, between the markers
    python tools/stats_table.py --check    # exit 1 if a docs table differs (tests)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import NamedTuple

DOCS = Path(__file__).resolve().parent.parent / "docs"
KINDS = {"counter": "counter", "gauge": "gauge", "peak": "peak of a gauge", "record": "recorded"}


class Table(NamedTuple):
    doc: Path
    begin: str
    end: str
    source: str   # the attribute of zkalloc_np._core


TABLES = (
    Table(DOCS / "stats.md",
          "<!-- stats-table: made by tools/stats_table.py from cython/zk/zk_stats_list.h; do not edit -->",
          "<!-- /stats-table -->", "STATS"),
    Table(DOCS / "phases.md",
          "<!-- phase-stats-table: made by tools/stats_table.py from cython/zk/zk_scope_stats_list.h; do not edit -->",
          "<!-- /phase-stats-table -->", "SCOPE_STATS"),
)


def table(spec: Table) -> str:
    """The markdown table: one row per statistic, in the core's order."""
    from zkalloc_np import _core
    rows = ["| field | kind | what it counts |", "|---|---|---|"]
    rows += [f"| `{name}` | {KINDS[kind]} | {doc} |" for name, kind, doc in getattr(_core, spec.source)]
    return "\n".join(rows)


def replaced(spec: Table, text: str) -> str:
    """`text` with the part between the markers replaced by table()."""
    head, sep, rest = text.partition(spec.begin)
    _, sep2, tail = rest.partition(spec.end)
    if not sep or not sep2:
        raise SystemExit(f"{spec.doc}: the markers {spec.begin!r} and {spec.end!r} are missing")
    return f"{head}{spec.begin}\n{table(spec)}\n{spec.end}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="update the docs")
    mode.add_argument("--check", action="store_true", help="exit 1 if a docs table is out of date")
    args = parser.parse_args(argv)
    status = 0
    for spec in TABLES:
        if not (args.write or args.check):
            print(f"{spec.doc.name}:\n{table(spec)}\n")
            continue
        text = spec.doc.read_text()
        if args.write:
            spec.doc.write_text(replaced(spec, text))
        elif replaced(spec, text) != text:
            print(f"{spec.doc} is out of date with the core's list of statistics: run python tools/stats_table.py "
                  "--write", file=sys.stderr)
            status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
