"""The statistics table of docs/stats.md, made from the core's one list of
counters (cython/zk/zk_stats_list.h, exposed as zkalloc_np._core.STATS).

    python tools/stats_table.py            # print the table
    python tools/stats_table.py --write    # put it into docs/stats.md, between the markers
    python tools/stats_table.py --check    # exit 1 if docs/stats.md's table differs (tests)
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs" / "stats.md"
BEGIN = "<!-- stats-table: made by tools/stats_table.py from cython/zk/zk_stats_list.h; do not edit -->"
END = "<!-- /stats-table -->"
KINDS = {"counter": "counter", "gauge": "gauge", "peak": "peak of a gauge"}


def table() -> str:
    """The markdown table: one row per statistic, in the core's order."""
    from zkalloc_np import _core
    rows = ["| field | kind | what it counts |", "|---|---|---|"]
    rows += [f"| `{name}` | {KINDS[kind]} | {doc} |" for name, kind, doc in _core.STATS]
    return "\n".join(rows)


def replaced(text: str) -> str:
    """`text` with the part between the markers replaced by table()."""
    head, sep, rest = text.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        raise SystemExit(f"{DOC}: the markers {BEGIN!r} and {END!r} are missing")
    return f"{head}{BEGIN}\n{table()}\n{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="update docs/stats.md")
    mode.add_argument("--check", action="store_true", help="exit 1 if docs/stats.md is out of date")
    args = parser.parse_args(argv)
    if not (args.write or args.check):
        print(table())
        return 0
    text = DOC.read_text()
    if args.write:
        DOC.write_text(replaced(text))
        return 0
    if replaced(text) != text:
        print(f"{DOC} is out of date with the core's list of statistics: run python tools/stats_table.py --write",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
