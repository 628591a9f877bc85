"""The tables in README.md and docs/ that quote the committed benchmark results.

Each such table sits between two markers that name the results file it comes
from and the table's kind::

    <!-- results: bench/results/full.json front -->
    | ... |
    <!-- /results -->

``python tools/results_tables.py`` rewrites every marked table from its
results file; ``--check`` only says which differ (tests/test_docs_numbers.py
runs the same check, so a table that no longer matches its results fails the
suite).  Kinds:

- ``front``: the README's table, a few patterns where zkalloc helps and where
  it does not, with time, faults per round and peak RSS (FRONT_ROWS);
- ``warm``: the warm-round table of docs/benchmarks.md, every pattern and
  allocator (bench.report.markdown, without the cold/warm part);
- ``cold``: its cold/warm table of the real-prover shapes (COLD_PATTERNS);
- ``coverage``: the buffers numpy's handler does not see (np.fft's scratch,
  the bytes a prover hashes) under ``install()`` against the peers
  (COVERAGE_ROWS), cold and warm, with faults and peak RSS;
- ``peak``: what recording each phase's peak costs (PEAK_ROWS): installed(),
  a phase per round, with track=True, and tracemalloc alone;
- ``libc``: peak RSS of every pattern in the file under numpy's default and
  install() with libc=keep and libc=leave, each pass's, and keep/leave
  (what chose libc's default), with the idle pattern's RSS while idle;
- ``beforeafter``: every pattern's zkalloc rows before issues 29 and 32
  (PATTERNS_BEFORE) and after, time and peak RSS relative to numpy's
  default of the same run;
- ``wholeprog``: the whole programs (bench/results/wholeprog.json) under every
  allocator, CPU, wall, faults and peak RSS with their spread over the passes,
  install()'s row before the do-no-harm policies beneath (WHOLEPROG_BEFORE),
  and install()'s targets per program.

The ``zkalloc-bg`` column (the background worker) is left out: the worker
is no longer part of the product.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))   # bench/ renders the tables: the same renderer as its --markdown

from bench import report  # noqa: E402

#: Files whose marked tables are checked.
DOCUMENTS = ("README.md", "docs/benchmarks.md", "docs/supported.md", "docs/coverage.md",
             "docs/when-it-does-not-fit.md")
#: Allocators no longer in the product, left out of every table.
RETIRED = ("zkalloc-bg",)
#: The README's rows: (pattern, size label) where zkalloc helps, and where it does not.
FRONT_ROWS = (("fill", "512 MiB"), ("fft_rounds", "32 MiB"), ("msm_buckets", "6 MiB"), ("ntt_prover", "2^18"),
              ("stark_prove", "2^16"), ("galois_ntt", "2^20"), ("small", "8 KiB"), ("phase_burst", "6 MiB"),
              ("grow", "512 MiB"))
#: The coverage table's rows, and its allocators (install() is zkalloc-global).
COVERAGE_ROWS = (("fft_numpy", "2^20"), ("fft_numpy", "2^22"), ("merkle_bytes", "2^20"), ("merkle_bytes", "2^23"))
COVERAGE_ALLOCATORS = (("default", "numpy default"), ("glibc-tuned", "glibc tuned"), ("tcmalloc", "tcmalloc"),
                       ("zkalloc-global", "zkalloc install()"))
#: The peak-cost table's patterns and allocators.
PEAK_ROWS = (("ntt_prover", "2^18"), ("ntt_prover", "2^20"), ("stark_prove", "2^14"), ("stark_prove", "2^16"))
PEAK_ALLOCATORS = ("zkalloc", "zkalloc-phase", "zkalloc-phase-track", "zkalloc-phase-tracemalloc")
#: The real-prover shapes of the cold/warm table.
COLD_PATTERNS = ("stark_prove", "grow", "idle")

MARKER = re.compile(r"(<!-- results: (?P<path>\S+) (?P<kind>\w+) -->\n)(?P<body>.*?)(<!-- /results -->)", re.S)


def load(path: str) -> list[dict[str, Any]]:
    """The records of a results file (relative to the checkout), retired allocators left out."""
    with open(ROOT / path) as f:
        records = json.load(f)["records"]
    return [r for r in records if r["allocator"] not in RETIRED]


def allocators(records: list[dict[str, Any]]) -> list[str]:
    """The allocators of the records, in the bench's order (bench.allocators.ALLOCATORS)."""
    from bench.allocators import ALLOCATORS
    order = list(ALLOCATORS)
    present = dict.fromkeys(r["allocator"] for r in records)
    return sorted(present, key=lambda a: order.index(a) if a in order else len(order))


def cell(records: list[dict[str, Any]], pattern: str, size: str) -> dict[str, dict[str, Any]]:
    """{allocator: record} of one (pattern, size label)."""
    for p, s, rows in report.groups(records):
        if p == pattern and report.size_label(p, s) == size:
            return rows
    raise KeyError(f"no {pattern} {size} in the results")


def front(records: list[dict[str, Any]]) -> str:
    """The README's table: numpy's default, zkalloc and tcmalloc per warm round,
    and the faults and peak RSS of the default against zkalloc's."""
    lines = ["| pattern | size | numpy default ms | zkalloc ms (vs default) | tcmalloc ms | "
             "faults per round, default → zkalloc | peak RSS, default → zkalloc |",
             "|---|---|---|---|---|---|---|"]
    for pattern, size in FRONT_ROWS:
        rows = cell(records, pattern, size)
        base, zk = rows["default"], rows["zkalloc"]
        ratio = report._ratio(rows, "zkalloc")
        tc = rows.get("tcmalloc")
        lines.append(f"| {pattern} | {size} | {report.ms(base['median_s'])} | {report.ms(zk['median_s'])} ({ratio}) | "
                     f"{report.ms(tc['median_s']) if tc else '–'} | "
                     f"{report.count(base['minflt_per_round'])} → {report.count(zk['minflt_per_round'])} | "
                     f"{report.mib(base['peak_rss_bytes'])} → {report.mib(zk['peak_rss_bytes'])} |")
    return "\n".join(lines)


def warm(records: list[dict[str, Any]]) -> str:
    """docs/benchmarks.md's table of every pattern: bench.report's markdown, warm part."""
    text = report.markdown([{k: v for k, v in r.items() if "cold" not in k} for r in records], allocators(records))
    return text.strip()


def cold(records: list[dict[str, Any]]) -> str:
    """docs/benchmarks.md's cold/warm table of the real-prover shapes."""
    shapes = [r for r in records if r["pattern"] in COLD_PATTERNS]
    return report.cold_warm_markdown(shapes, allocators(shapes))


def coverage(records: list[dict[str, Any]]) -> str:
    """Per row and allocator: warm ms, faults per warm round, cold ms, peak RSS."""
    head = " | ".join(name for _, name in COVERAGE_ALLOCATORS)
    lines = [f"| pattern | size | {head} |", "|---|---|" + "---|" * len(COVERAGE_ALLOCATORS)]
    for pattern, size in COVERAGE_ROWS:
        rows = cell(records, pattern, size)
        cells = []
        for alloc, _ in COVERAGE_ALLOCATORS:
            r = rows.get(alloc)
            cells.append("–" if r is None else
                         f"{report.ms(r['median_s'])} ms, {report.count(r['minflt_per_round'])} faults; "
                         f"cold {report.ms(r['cold_s'])}; {report.mib(r['peak_rss_bytes'])}")
        lines.append(f"| {pattern} | {size} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def peak(records: list[dict[str, Any]]) -> str:
    """Per row: warm ms and peak RSS under each PEAK_ALLOCATORS, ratios to
    installed(), and the share of a round the peak snapshots took."""
    lines = ["| pattern | size | " + " | ".join(PEAK_ALLOCATORS) + " | snapshots, share of a round |",
             "|---|---|" + "---|" * (len(PEAK_ALLOCATORS) + 1)]
    for pattern, size in PEAK_ROWS:
        rows = cell(records, pattern, size)
        base = rows["zkalloc"]
        cells = []
        for alloc in PEAK_ALLOCATORS:
            r = rows[alloc]
            cells.append(f"{report.ms(r['median_s'])} ms ({r['median_s'] / base['median_s']:.2f}x), "
                         f"{report.mib(r['peak_rss_bytes'])} ({r['peak_rss_bytes'] / base['peak_rss_bytes']:.2f}x)")
        phase = rows["zkalloc-phase"]
        share = phase.get("peak_snapshot_s_per_round", 0.0) / phase["median_s"]
        lines.append(f"| {pattern} | {size} | " + " | ".join(cells) + f" | {share:.2%} |")
    return "\n".join(lines)


#: The libc table's allocators: numpy's default, install() with libc=keep and libc=leave.
LIBC_ALLOCATORS = ("default", "zkalloc-global", "zkalloc-global-leave")


def _mib_range(values: list[float]) -> str:
    low, high = int(min(values)) >> 20, int(max(values)) >> 20
    return f"{low}" if low == high else f"{low}–{high}"


def libc(records: list[dict[str, Any]]) -> str:
    """Per (pattern, size): peak RSS in MiB, the passes' range, under each
    LIBC_ALLOCATORS, and keep/leave of the medians."""
    lines = ["| pattern | size | numpy default, MiB | install() libc=keep | install() libc=leave | keep/leave |",
             "|---|---|---|---|---|---|"]
    for pattern, size, rows in report.groups(records):
        if not all(a in rows for a in LIBC_ALLOCATORS):
            continue
        keep, leave = rows["zkalloc-global"], rows["zkalloc-global-leave"]
        cells = [_mib_range(rows[a]["pass_peak_rss_bytes"]) for a in LIBC_ALLOCATORS]
        lines.append(f"| {pattern} | {report.size_label(pattern, size)} | " + " | ".join(cells) +
                     f" | {keep['peak_rss_bytes'] / leave['peak_rss_bytes']:.3f} |")
        if "pass_idle_rss_bytes" in keep:
            cells = [_mib_range(rows[a]["pass_idle_rss_bytes"]) for a in LIBC_ALLOCATORS]
            lines.append(f"| {pattern}, RSS while idle | {report.size_label(pattern, size)} | " + " | ".join(cells) +
                         f" | {keep['idle_rss_bytes'] / leave['idle_rss_bytes']:.3f} |")
    return "\n".join(lines)


#: The whole-programs run of the code before the policies of issue 29 (its install() row sits under each program's).
WHOLEPROG_BEFORE = "bench/results/wholeprog-before.json"


def wholeprog(records: list[dict[str, Any]]) -> str:
    """The whole programs (bench.wholeprog.summary): every allocator's CPU,
    wall, faults and peak RSS with their spread, install()'s row from
    WHOLEPROG_BEFORE beneath, and install()'s targets."""
    from bench import wholeprog as programs
    before = load(WHOLEPROG_BEFORE) if (ROOT / WHOLEPROG_BEFORE).exists() else []
    return programs.summary(records, before)


#: The patterns run on the code before issues 29 and 32 (047312e), on the machine of the run after them.
PATTERNS_BEFORE = "bench/results/patterns-before.json"
BEFORE_AFTER_ALLOCATORS = ("zkalloc", "zkalloc-global")


def _spread_ratio(passes: list[float], base: float) -> str:
    """The median's ratio to `base`, with the passes' range."""
    ratios = sorted(v / base for v in passes)
    mid = ratios[len(ratios) // 2]
    return f"{mid:.2f}x" if len(ratios) < 2 else f"{mid:.2f}x ({ratios[0]:.2f}–{ratios[-1]:.2f})"


def beforeafter(records: list[dict[str, Any]]) -> str:
    """Each pattern's zkalloc rows before (PATTERNS_BEFORE) and after: warm
    time and peak RSS as ratios to numpy's default of the same run (so
    the two runs' machine states cancel), with the passes' range."""
    before = {(p, s): rows for p, s, rows in report.groups(load(PATTERNS_BEFORE))}
    lines = ["| pattern | size | allocator | time / default's, before | after | peak RSS / default's, before | "
             "after |", "|---|---|---|---|---|---|---|"]
    for pattern, size, rows in report.groups(records):
        old = before.get((pattern, size), {})
        for name in BEFORE_AFTER_ALLOCATORS:
            if name not in rows or name not in old or "default" not in rows or "default" not in old:
                continue
            new_r, old_r, new_d, old_d = rows[name], old[name], rows["default"], old["default"]
            lines.append(f"| {pattern} | {report.size_label(pattern, size)} | {name} | "
                         f"{_spread_ratio(old_r['pass_median_s'], old_d['median_s'])} | "
                         f"{_spread_ratio(new_r['pass_median_s'], new_d['median_s'])} | "
                         f"{_spread_ratio(old_r['pass_peak_rss_bytes'], old_d['peak_rss_bytes'])} | "
                         f"{_spread_ratio(new_r['pass_peak_rss_bytes'], new_d['peak_rss_bytes'])} |")
    return "\n".join(lines)


KINDS: dict[str, Callable[[list[dict[str, Any]]], str]] = {"front": front, "warm": warm, "cold": cold,
                                                           "coverage": coverage, "peak": peak, "libc": libc,
                                                           "wholeprog": wholeprog, "beforeafter": beforeafter}


def render(text: str) -> str:
    """`text` with every marked table regenerated from its results file."""
    def one(m: re.Match[str]) -> str:
        kind = m["kind"]
        if kind not in KINDS:
            raise ValueError(f"unknown results table kind {kind!r} (one of {', '.join(KINDS)})")
        return f"{m.group(1)}{KINDS[kind](load(m['path']))}\n{m.group(5)}"
    return MARKER.sub(one, text)


def tables(text: str) -> list[tuple[str, str, str]]:
    """(results path, kind, committed table) of every marked table in `text`."""
    return [(m["path"], m["kind"], m["body"].strip()) for m in MARKER.finditer(text)]


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or with --check, compare) every marked table of DOCUMENTS."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a table differs")
    args = parser.parse_args(argv)
    stale = []
    for name in DOCUMENTS:
        path = ROOT / name
        if not path.exists():
            continue
        text = path.read_text()
        new = render(text)
        if new != text:
            stale.append(name)
            if not args.check:
                path.write_text(new)
    verb = "differ from their results" if args.check else "rewritten"
    print(f"{', '.join(stale)}: {verb}" if stale else "every results table matches its results file")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
