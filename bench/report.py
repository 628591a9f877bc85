"""Render benchmark records: the rich table, a markdown table, the PNG chart.

``python -m bench.report RESULTS.json [--markdown] [--plot PNG]`` re-renders
a saved run without running anything.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from typing import Any

from zkalloc_np._verdict import SAME, Samples, verdict

from .patterns import PATTERNS, label

Record = dict[str, Any]


def _group_key(r: Record) -> tuple[int, int]:
    order = list(PATTERNS)
    return (order.index(r["pattern"]) if r["pattern"] in order else len(order), r["size"])


def groups(records: Iterable[Record]) -> list[tuple[str, int, dict[str, Record]]]:
    """(pattern, size, {allocator: record}) in the patterns' registry order."""
    by: dict[tuple[str, int], dict[str, Record]] = {}
    for r in sorted(records, key=_group_key):
        by.setdefault((r["pattern"], r["size"]), {})[r["allocator"]] = r
    return [(p, s, rows) for (p, s), rows in by.items()]


def size_label(pattern: str, size: int) -> str:
    """`size` in the unit of `pattern` (bytes when the pattern is unknown)."""
    return label(PATTERNS[pattern], size) if pattern in PATTERNS else str(size)


def ms(seconds: float) -> str:
    """Seconds as a short millisecond string."""
    v = seconds * 1e3
    return f"{v:.3g}" if v < 100 else f"{v:.0f}"


def mib(nbytes: float | None) -> str:
    """Bytes as whole MiB ("" when not measured)."""
    return "" if nbytes is None else f"{int(nbytes) >> 20} MiB"


def count(n: float | None) -> str:
    """A fault count, short: 12, 3.4k, 318k, 1.2M ("" when not measured)."""
    if n is None:
        return ""
    if n < 1000:
        return f"{n:.0f}"
    if n < 1e6:
        return f"{n / 1e3:.3g}k"
    return f"{n / 1e6:.3g}M"


def cold_warm_cells(r: Record) -> list[str]:
    """faults per warm round, cold ms, cold RSS, cold faults ("" where the
    record predates the cold round)."""
    return [count(r.get("minflt_per_round")), ms(r["cold_s"]) if "cold_s" in r else "",
            mib(r.get("cold_rss_bytes")), count(r.get("cold_minflt"))]


def speedup(rows: dict[str, Record], name: str) -> float | None:
    """default's median / this allocator's: > 1 means faster than numpy's default."""
    base = rows.get("default")
    return base["median_s"] / rows[name]["median_s"] if base else None


def pass_values(record: Record, key: str = "median_s") -> list[float]:
    """The record's per-pass values of `key` (its one value without them)."""
    return list(record.get("pass_" + key) or [record[key]])


def noisy(rows: dict[str, Record], name: str) -> bool:
    """Whether this cell's difference from numpy's default is within the
    noise: the shared rule (zkalloc_np._verdict) finds their pass ranges
    overlapping.  Never with a single pass on either side (no spread measured)."""
    if name == "default" or "default" not in rows:
        return False
    v = verdict(Samples(pass_values(rows["default"])), Samples(pass_values(rows[name])), min_runs=2)
    return v.word == SAME


def passes_label(records: Iterable[Record]) -> str:
    """How many passes the records' cells used: '3 passes', '1-3 passes'."""
    counts = sorted({int(r.get("passes", 1)) for r in records})
    if not counts:
        return "no passes"
    text = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    return f"{text} pass{'' if counts == [1] else 'es'}"


def flag_note(records: list[Record]) -> str:
    """The line every table and chart carries: passes, and what ~ means."""
    single = all(int(r.get("passes", 1)) == 1 for r in records)
    if single:
        return f"{passes_label(records)} per cell: no pass spread measured, so no ratio here is checked against noise"
    return f"{passes_label(records)} per cell; ~ marks a ratio whose passes overlap the default's " \
           "(within the noise)"


def _ratio(rows: dict[str, Record], name: str) -> str:
    up = speedup(rows, name)
    if up is None:
        return ""
    return f"{up:.2f}x" + (" ~" if noisy(rows, name) else "")


def vs_ideal(rows: dict[str, Record], name: str) -> float | None:
    """This allocator's median / the ideal's: 1.00 is the physical limit."""
    ideal = rows.get("ideal")
    return rows[name]["median_s"] / ideal["median_s"] if ideal else None


def rich_table(records: list[Record], allocators: list[str]) -> Any:
    """A rich Table: one row per allocator, grouped by pattern and size."""
    from rich.table import Table
    table = Table(title="median time per warm round (spread: min..max over all rounds); "
                        "cold: the first round in a fresh process", show_lines=False,
                  caption=flag_note(records))
    for col, justify in [("pattern", "left"), ("size", "right"), ("allocator", "left"), ("median ms", "right"),
                         ("min..max ms", "right"), ("vs default", "right"), ("/ ideal", "right"),
                         ("GB/s", "right"), ("peak RSS", "right"), ("faults/rnd", "right"),
                         ("cold ms", "right"), ("cold RSS", "right"), ("cold faults", "right"),
                         ("zk hits", "right")]:
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for pattern, size, rows in groups(records):
        first = True
        for name in allocators:
            r = rows.get(name)
            if r is None:
                continue
            ideal = vs_ideal(rows, name)
            table.add_row(
                pattern if first else "", size_label(pattern, size) if first else "", name,
                ms(r["median_s"]), f"{ms(r['min_s'])}..{ms(r['max_s'])}",
                _ratio(rows, name), f"{ideal:.2f}" if ideal is not None else "",
                f"{r['gb_per_s']:.1f}" if "gb_per_s" in r else "", mib(r["peak_rss_bytes"]),
                *cold_warm_cells(r), f"{r['hit_rate']:.0%}" if "hit_rate" in r else "", end_section=False)
            first = False
        table.add_section()
    return table


def markdown(records: list[Record], allocators: list[str]) -> str:
    """A compact markdown table: median ms per allocator (speedup over numpy's
    default in parentheses; GB/s for throughput patterns); then, where the
    records have a cold round, the cold and warm table (`cold_warm_markdown`)."""
    present = [a for a in allocators if any(r["allocator"] == a for r in records)]
    lines = ["| pattern | size | " + " | ".join(present) + " |", "|---|---|" + "---|" * len(present)]
    for pattern, size, rows in groups(records):
        cells = []
        for name in present:
            r = rows.get(name)
            if r is None:
                cells.append("–")
            elif "gb_per_s" in r:
                cells.append(f"{r['gb_per_s']:.1f} GB/s")
            else:
                ratio = _ratio(rows, name)
                cells.append(ms(r["median_s"]) + (f" ({ratio})" if ratio and name != "default" else ""))
        lines.append(f"| {pattern} | {size_label(pattern, size)} | " + " | ".join(cells) + " |")
    cold = cold_warm_markdown(records, present)
    return "\n".join(lines) + f"\n\n{flag_note(records)}." + ("\n\n" + cold if cold else "")


def cold_warm_markdown(records: list[Record], allocators: list[str]) -> str:
    """One row per (pattern, size, allocator) that has a cold round: cold and
    warm time, peak RSS after the cold round and at the end, minor faults of
    the cold round and per warm round ("" when no record has them)."""
    lines = ["| pattern | size | allocator | cold ms | warm ms | cold RSS | peak RSS | cold faults | faults/round |",
             "|---|---|---|---|---|---|---|---|---|"]
    for pattern, size, rows in groups(records):
        for name in allocators:
            r = rows.get(name)
            if r is None or "cold_s" not in r:
                continue
            lines.append(f"| {pattern} | {size_label(pattern, size)} | {name} | {ms(r['cold_s'])} | "
                         f"{ms(r['median_s'])} | {mib(r.get('cold_rss_bytes'))} | {mib(r['peak_rss_bytes'])} | "
                         f"{count(r.get('cold_minflt'))} | {count(r.get('minflt_per_round'))} |")
    return "\n".join(lines) if len(lines) > 2 else ""


#: The chart's colours: zkalloc strongest, its variants in warm hues, the
#: peers in cool ones, the ideal grey; anything else from tab10.
COLOURS = {
    "zkalloc": "#c40000", "zkalloc-global": "#ff7f0e", "zkalloc-phase": "#e7298a", "zkalloc-phase-track": "#f781bf",
    "zkalloc-phase-tracemalloc": "#fdb462", "zkalloc-lazy": "#8c510a",
    "zkalloc-lazy-nothp": "#bf812d", "zkalloc-nothp": "#f4a582", "glibc-tuned": "#1f78b4", "jemalloc": "#33a02c",
    "mimalloc": "#6a3d9a", "tcmalloc": "#17becf", "ideal": "#4d4d4d",
}


def plot(records: list[Record], allocators: list[str], path: str, title: str = "") -> None:
    """A PNG: per pattern and size, each allocator's speed relative to numpy's
    default (default time / its time), as bars that start at 1.0 on a log
    axis (right of 1 is faster), with value labels; a hatched, paler bar
    (and ~) where the passes overlap the default's (noisy()).  The
    title says how many passes the cells used and, in `title`, the machine."""
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("--plot needs matplotlib: pip install -e '.[bench]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    gs = [g for g in groups(records) if "default" in g[2]]
    present = [a for a in allocators if a != "default" and any(a in rows for _, _, rows in gs)]
    if not gs or not present:
        raise ValueError("nothing to plot: the plot needs the 'default' allocator and another one in the run")
    height = max(3.5, 0.11 * len(gs) * len(present) + 2.0)   # about 8 pt per bar: room for its label
    fig, ax = plt.subplots(figsize=(12, height))
    bar = 0.8 / len(present)
    fallback = plt.get_cmap("tab10")
    ratios: list[float] = []
    for i, name in enumerate(present):
        colour = COLOURS.get(name, fallback(i % 10))
        for k, (_, _, rows) in enumerate(gs):
            if name not in rows:
                continue
            y = k + (i - (len(present) - 1) / 2) * bar
            x = rows["default"]["median_s"] / rows[name]["median_s"]
            ratios.append(x)
            shaky = noisy(rows, name)
            ax.barh(y, x - 1.0, left=1.0, height=bar * 0.92, color=colour, alpha=0.45 if shaky else 1.0,
                    hatch="///" if shaky else None, edgecolor="black" if name == "zkalloc" else colour,
                    linewidth=0.8 if name == "zkalloc" else 0.0)
            ax.text(x * (1.03 if x >= 1 else 0.97), y, f"{x:.2f}" + ("~" if shaky else ""), va="center",
                    ha="left" if x >= 1 else "right", fontsize=6.5,
                    fontweight="bold" if name == "zkalloc" else "normal")
    ax.set_yticks(range(len(gs)), [f"{p} {size_label(p, s)}" for p, s, _ in gs])
    ax.invert_yaxis()
    ax.set_xscale("log")
    low, high = min(ratios + [1.0]), max(ratios + [1.0])
    ax.set_xlim(low / 1.6, high * 1.6)
    ax.axvline(1.0, color="black", linewidth=1.0)
    ax.set_xlabel("speed relative to numpy's default (default time / time, log scale): "
                  "right of 1 is faster, left is slower")
    from matplotlib.patches import Patch
    legend = [Patch(facecolor=COLOURS.get(n, fallback(i % 10)), edgecolor="black" if n == "zkalloc" else "none",
                    label=n) for i, n in enumerate(present)]
    legend.append(Patch(facecolor="white", edgecolor="grey", hatch="///", label="~ within the pass spread"))
    ax.legend(handles=legend, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
    note = flag_note(records).split("; ", 1)[-1]
    head = f"zkalloc-np bench, {passes_label(records)} per cell" + (f", {title}" if title else "")
    ax.set_title(f"{head}\n{note}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Re-render a saved run."""
    parser = argparse.ArgumentParser(prog="python -m bench.report", description=__doc__)
    parser.add_argument("results", help="a JSON file written by python -m bench --json")
    parser.add_argument("--markdown", action="store_true", help="print the compact markdown table")
    parser.add_argument("--plot", metavar="PNG", help="write the chart here")
    args = parser.parse_args(argv)
    with open(args.results) as f:
        data = json.load(f)
    records = data["records"]
    allocators = list(dict.fromkeys(r["allocator"] for r in records))
    if args.markdown:
        print(markdown(records, allocators))
    else:
        from rich.console import Console
        Console(width=None if sys.stdout.isatty() else 200).print(rich_table(records, allocators))
    if args.plot:
        info = data.get("machine", {})
        title = (f"{info.get('cpu', '?')}, {info.get('cores', '?')} cores, THP {info.get('thp_enabled', '?')}, "
                 f"numpy {info.get('numpy', '?')}") if info else ""
        plot(records, allocators, args.plot, title=title)
    return 0


if __name__ == "__main__":
    sys.exit(main())
