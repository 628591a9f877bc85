"""python -m bench: patterns x allocators, each in a fresh subprocess.

Runs every (pattern, size) under every allocator in `--passes` rotations
(allocator order alternates each pass) and reports the median of the
per-pass medians, with ratios to numpy's default and to the ideal.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

import numpy as np

from .allocators import ALLOCATORS
from .patterns import PATTERNS


def _run_worker(allocator: str, pattern: str, size: int, rounds: int, warmup: int) -> dict:
    cmd = [sys.executable, "-m", "bench.worker", "--allocator", allocator, "--pattern", pattern,
           "--size", str(size), "--rounds", str(rounds), "--warmup", str(warmup)]
    env = dict(os.environ, **ALLOCATORS[allocator].env)
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"{allocator}/{pattern}/{size} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _machine() -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    from zkalloc_np._system import thp_mode
    return {"cpu": cpu, "cores": os.cpu_count(), "thp_enabled": thp_mode("enabled"),
            "thp_defrag": thp_mode("defrag"), "numpy": np.__version__, "python": platform.python_version()}


def _combine(passes: list[dict]) -> dict:
    record = dict(passes[0])
    record["median_s"] = statistics.median(p["median_s"] for p in passes)
    record["min_s"] = min(p["min_s"] for p in passes)
    record["max_s"] = max(p["max_s"] for p in passes)
    record["peak_rss_bytes"] = max(p["peak_rss_bytes"] for p in passes)
    record["passes"] = len(passes)
    return record


def _fmt_size(size: int) -> str:
    return f"{size >> 20} MiB" if size >= 1 << 20 else f"{size} B"


def _table(records: list[dict], allocators: list[str]) -> str:
    lines = []
    keys = sorted({(r["pattern"], r["size"]) for r in records})
    for pattern, size in keys:
        row = {r["allocator"]: r for r in records if (r["pattern"], r["size"]) == (pattern, size)}
        base, ideal = row.get("default"), row.get("ideal")
        lines.append(f"{pattern} {_fmt_size(size)}")
        for name in allocators:
            r = row.get(name)
            if r is None:
                continue
            vs_default = f"{base['median_s'] / r['median_s']:6.2f}x faster than default" if base else ""
            vs_ideal = f"{r['median_s'] / ideal['median_s']:5.2f}x the ideal's time" if ideal else ""
            hit = f"  hit rate {r['hit_rate']:.0%}" if "hit_rate" in r else ""
            lines.append(f"  {name:<15} {r['median_s'] * 1e3:9.3f} ms  {vs_default}  {vs_ideal}"
                         f"  rss {r['peak_rss_bytes'] >> 20} MiB{hit}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--only", choices=sorted(PATTERNS), action="append", help="pattern(s) to run")
    parser.add_argument("--allocators", default=",".join(ALLOCATORS),
                        help=f"comma-separated subset of {','.join(ALLOCATORS)}")
    parser.add_argument("--sizes", help="comma-separated sizes in MiB (default: each pattern's own)")
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds per pass (default 20)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default 3)")
    parser.add_argument("--passes", type=int, default=3, help="rotations over the allocators (default 3)")
    parser.add_argument("--quick", action="store_true", help="a few seconds: small sizes, few rounds")
    parser.add_argument("--json", metavar="PATH", help="write every record and the machine info here")
    args = parser.parse_args(argv)

    allocators = [a.strip() for a in args.allocators.split(",") if a.strip()]
    unknown = [a for a in allocators if a not in ALLOCATORS]
    if unknown:
        parser.error(f"unknown allocator(s) {', '.join(unknown)}; known: {', '.join(ALLOCATORS)}")
    if args.quick:
        args.rounds, args.warmup, args.passes = 3, 1, 1
    patterns = args.only or sorted(PATTERNS)
    records = []
    for pattern in patterns:
        sizes = [int(s) << 20 for s in args.sizes.split(",")] if args.sizes else PATTERNS[pattern].SIZES
        if args.quick:
            sizes = sizes[:1]
        has_ideal = getattr(PATTERNS[pattern], "HAS_IDEAL", True)
        names = [a for a in allocators if has_ideal or not ALLOCATORS[a].ideal]
        for size in sizes:
            runs = {a: [] for a in names}
            for p in range(args.passes):
                order = names if p % 2 == 0 else names[::-1]
                for name in order:
                    print(f"  {pattern} {_fmt_size(size)}: {name} (pass {p + 1}/{args.passes})",
                          file=sys.stderr, flush=True)
                    runs[name].append(_run_worker(name, pattern, size, args.rounds, args.warmup))
            records += [_combine(runs[a]) for a in names]
    print(_table(records, allocators))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": _machine(), "records": records}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
