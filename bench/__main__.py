"""python -m bench: prover allocation patterns x allocators, each in a fresh subprocess.

Runs every (pattern, size) under every allocator in `--passes` rotations
(the allocator order alternates each pass) and reports the median of the
per-pass medians, with ratios to numpy's default and to the ideal (the same
pattern written with preallocated buffers).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from zkalloc_np.cli import sanitizer as _sanitizer
from zkalloc_np._system import describe, machine

from . import report, wholeprog
from .allocators import ALLOCATORS, resolve, runs_by_default
from .patterns import PATTERNS, Pattern, contention, label, parse_size
from .programs import PROGRAMS

QUICK = {"rounds": 3, "warmup": 1, "passes": 2, "max_seconds": 0.2}
#: --quick's smoke set (without --only): one small size of each, two passes so every cell has a spread.
QUICK_PATTERNS = ("fft_rounds", "msm_buckets", "phase_burst")
#: The cold-round and fault fields of a worker's record, and how the passes
#: combine: the median for times and fault counts, the maximum for peak RSS
#: (as for peak_rss_bytes).  Each also keeps its per-pass list (pass_<key>).
COLD_WARM: dict[str, Callable[[list[float]], float]] = {
    "cold_s": statistics.median, "cold_minflt": statistics.median, "cold_rss_bytes": max,
    "minflt_per_round": statistics.median, "peak_rss_bytes": max,
    "idle_rss_bytes": max, "after_idle_s": statistics.median}
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORKER_TIMEOUT_S = 300   # plus 20 x --max-seconds: a worker that hangs is reported, not waited on


def _run_worker(allocator: str, env: dict[str, str], pattern: str, size: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, "-m", "bench.worker", "--allocator", allocator, "--pattern", pattern,
           "--size", str(size), "--rounds", str(args.rounds), "--warmup", str(args.warmup),
           "--min-rounds", str(min(args.min_rounds, args.rounds)), "--max-seconds", str(args.max_seconds)]
    full_env = _sanitizer.child_environment(env)   # the parent's preload goes, a sanitizer runtime stays first
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    full_env["PYTHONPATH"] = root + (os.pathsep + full_env["PYTHONPATH"] if full_env.get("PYTHONPATH") else "")
    limit = WORKER_TIMEOUT_S + 20 * args.max_seconds
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=full_env, check=False, timeout=limit)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{allocator}/{pattern}/{size} did not finish in {limit:.0f} s") from None
    if out.returncode != 0:
        raise RuntimeError(f"{allocator}/{pattern}/{size} failed (exit {out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def machine_info() -> dict[str, Any]:
    """What a measurement ran on (zkalloc_np._system.machine: CPU model,
    cores, memory, kernel, THP mode, numpy and Python), and galois's version."""
    from importlib.metadata import PackageNotFoundError, version

    info = machine()
    try:
        info["galois"] = version("galois")
    except PackageNotFoundError:
        info["galois"] = None
    return info


def _save(args: argparse.Namespace, data: dict[str, Any], markdown: Callable[[], str]) -> None:
    """--json: `data`; --markdown: the table `markdown` makes (each where asked)."""
    if args.json:
        with open(args.json, "w") as f:
            json.dump(data, f, indent=1)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(markdown() + "\n")


def combine(passes: list[dict], pattern: Pattern | None = None) -> dict:
    """One record from the passes of one (allocator, pattern, size)."""
    record = dict(passes[0])
    record["median_s"] = statistics.median(p["median_s"] for p in passes)
    record["pass_median_s"] = [p["median_s"] for p in passes]
    record["min_s"] = min(p["min_s"] for p in passes)
    record["max_s"] = max(p["max_s"] for p in passes)
    record["rounds"] = sum(p["rounds"] for p in passes)
    record["passes"] = len(passes)
    for key, pick in COLD_WARM.items():   # absent in records of older workers
        if all(key in p for p in passes):
            record["pass_" + key] = [p[key] for p in passes]
            record[key] = pick(record["pass_" + key])
    if "hit_rate" in record:
        hits, misses = sum(p["zk_hits"] for p in passes), sum(p["zk_misses"] for p in passes)
        record["zk_hits"], record["zk_misses"] = hits, misses
        record["hit_rate"] = hits / (hits + misses) if hits + misses else 0.0
    if pattern is not None and pattern.bytes_per_round is not None:
        record["gb_per_s"] = pattern.bytes_per_round(record["size"]) / record["median_s"] / 1e9
    return record


def _sizes(name: str, args: argparse.Namespace) -> list[int]:
    pattern = PATTERNS[name]
    if args.sizes:
        return [parse_size(pattern, s) for s in args.sizes.split(",") if s.strip()]
    sizes = list(pattern.sizes)
    if name == "contention" and args.threads:
        sizes = contention.sizes_up_to(args.threads)
    if args.quick:
        sizes = [pattern.quick_size if pattern.quick_size is not None else sizes[0]]
    return sizes


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", action="append", metavar="PATTERN",
                   help=f"pattern(s) to run, repeatable or comma-separated: {', '.join(PATTERNS)}")
    p.add_argument("--allocators", metavar="A,B",
                   help=f"comma-separated subset of {','.join(ALLOCATORS)} (default: all that are installed; "
                        "zkalloc-lazy only on np.zeros patterns, zkalloc-nothp only on first_touch)")
    p.add_argument("--sizes", help="comma-separated sizes in each pattern's unit: MiB for byte sizes, "
                                   "log2 points for NTTs, window bits for msm_windows, threads for contention")
    p.add_argument("--threads", type=int, help="contention: up to this many threads (default: the core count)")
    p.add_argument("--rounds", type=int, default=20, help="most timed rounds per worker (default 20)")
    p.add_argument("--min-rounds", type=int, default=3, help="fewest timed rounds per worker (default 3)")
    p.add_argument("--max-seconds", type=float, default=2.0,
                   help="cut the timed rounds to about this many seconds per worker (default 2)")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds first (default 3, at least 1)")
    p.add_argument("--passes", type=int, default=3, help="rotations over the allocators (default 3)")
    p.add_argument("--quick", action="store_true",
                   help=f"a smoke run (about 15 s on 2 cores): {', '.join(QUICK_PATTERNS)} (unless --only) at their "
                        "first size, 3 rounds, 2 passes")
    p.add_argument("--json", metavar="PATH", help="write every record and the machine info here")
    p.add_argument("--plot", metavar="PNG", help="write a chart of speed relative to numpy's default here")
    p.add_argument("--markdown", metavar="PATH", help="write the compact markdown table here")
    p.add_argument("--list", action="store_true", help="list patterns and allocators, then exit")
    p.add_argument("--programs", metavar="P,Q",
                   help="run whole programs instead of the patterns: 'all' or a comma-separated subset of "
                        f"{','.join(PROGRAMS)} (bench/programs.py), each in fresh processes under "
                        f"{','.join(wholeprog.ALLOCATORS)} (or --allocators), --passes times")
    return p


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[list[str], list[str]]:
    patterns = ([p.strip() for group in (args.only or []) for p in group.split(",") if p.strip()]
                or list(QUICK_PATTERNS if args.quick else PATTERNS))
    bad = [p for p in patterns if p not in PATTERNS]
    if bad:
        parser.error(f"unknown pattern(s) {', '.join(bad)}; known: {', '.join(PATTERNS)}")
    names = [a.strip() for a in (args.allocators or "").split(",") if a.strip()] or list(ALLOCATORS)
    bad = [a for a in names if a not in ALLOCATORS]
    if bad:
        parser.error(f"unknown allocator(s) {', '.join(bad)}; known: {', '.join(ALLOCATORS)}")
    for opt in ("rounds", "passes", "min_rounds", "threads"):
        value = getattr(args, opt)
        if value is not None and value < 1:
            parser.error(f"--{opt.replace('_', '-')} must be at least 1")
    if args.warmup < 0 or args.max_seconds <= 0:
        parser.error("--warmup must be >= 0 and --max-seconds > 0")
    if args.plot and importlib.util.find_spec("matplotlib") is None:
        parser.error("--plot needs matplotlib: pip install -e '.[bench]'")
    if args.quick:
        for k, v in QUICK.items():
            setattr(args, k, min(getattr(args, k), v))
    try:
        for p in patterns:
            _sizes(p, args)
    except ValueError as e:
        parser.error(f"--sizes: {e}")
    return patterns, names


def main(argv: list[str] | None = None) -> int:
    """Run the plan (patterns x sizes x allocators x passes), print the table,
    write the JSON / markdown / chart asked for; 1 if any worker failed."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.programs:
        return _programs(parser, args)
    patterns, names = _check_args(parser, args)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    out = Console() if sys.stdout.isatty() else Console(width=200)
    err = Console(stderr=True)
    envs, skipped = resolve(names)
    if args.list:
        for name, p in PATTERNS.items():
            why = p.unavailable()
            out.print(f"pattern {name}: sizes {', '.join(label(p, s) for s in p.sizes)}"
                      + (f"  [tags: {', '.join(sorted(p.tags))}]" if p.tags else "")
                      + (f"  [skipped: {why}]" if why else ""))
        for name, a in ALLOCATORS.items():
            out.print(f"allocator {name}: {a.description}" + (f"  [skipped: {skipped[name]}]" if name in skipped else ""))
        return 0
    for name, why in skipped.items():
        err.print(f"[yellow]skipping allocator {name}: {why}[/yellow]")
    skipped_patterns = {p: why for p in patterns if (why := PATTERNS[p].unavailable())}
    for name, why in skipped_patterns.items():
        err.print(f"[yellow]skipping pattern {name}: {why}[/yellow]")
    explicit = args.allocators is not None
    plan = []   # (pattern, size, [allocators])
    for pattern in patterns:
        if pattern in skipped_patterns:
            continue
        module = PATTERNS[pattern]
        active = [a for a in names if a in envs and (module.has_ideal or not ALLOCATORS[a].ideal)
                  and (explicit or runs_by_default(a, module))]
        passes = min(args.passes, module.max_passes or args.passes)
        plan += [(pattern, size, active, passes) for size in _sizes(pattern, args)]
    total = sum(len(a) * n for _, _, a, n in plan)
    records, failures = [], []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as progress:
        task = progress.add_task("bench", total=total)
        for pattern, size, active, passes in plan:
            runs: dict[str, list[dict]] = {a: [] for a in active}
            for p in range(passes):
                for name in active if p % 2 == 0 else active[::-1]:
                    progress.update(task, description=f"{pattern} {label(PATTERNS[pattern], size)} {name} "
                                                      f"(pass {p + 1}/{passes})")
                    try:
                        runs[name].append(_run_worker(name, envs[name], pattern, size, args))
                    except RuntimeError as e:
                        failures.append(str(e))
                        err.print(f"[red]{e}[/red]")
                    progress.advance(task)
            records += [combine(runs[a], PATTERNS[pattern]) for a in active if runs[a]]
            if not err.is_terminal:   # a log line per group where no bar is drawn
                err.print(f"{pattern} {label(PATTERNS[pattern], size)}: {len(active)} allocators, {passes} pass(es) done")
    info = machine_info()
    out.print(report.rich_table(records, names))
    out.print(f"machine: {describe(info)}")
    _save(args, {"machine": info, "options": {k: v for k, v in vars(args).items() if k != "list"},
                 "skipped": {**skipped, **skipped_patterns}, "failures": failures, "records": records},
          lambda: report.markdown(records, names))
    if args.plot and records:
        report.plot(records, names, args.plot,
                    title=f"{info['cpu']}, {info['cores']} cores, THP {info['thp_enabled']}, numpy {info['numpy']}")
    return 1 if failures else 0


def _programs(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """--programs: the whole programs under every allocator; the table, the
    targets, the load; --json / --markdown as for the patterns."""
    chosen = list(PROGRAMS) if args.programs == "all" else [p.strip() for p in args.programs.split(",") if p.strip()]
    bad = [p for p in chosen if p not in PROGRAMS]
    if bad:
        parser.error(f"unknown program(s) {', '.join(bad)}; known: {', '.join(PROGRAMS)}")
    names = [a.strip() for a in (args.allocators or "").split(",") if a.strip()] or list(wholeprog.ALLOCATORS)
    known = wholeprog.ALLOCATORS
    bad = [a for a in names if a not in known]
    if bad:
        parser.error(f"unknown allocator(s) for whole programs {', '.join(bad)}; known: {', '.join(known)}")
    if args.passes < 1:
        parser.error("--passes must be at least 1")
    envs, skipped = resolve([n for n in names if n in ALLOCATORS])
    envs.update({n: {} for n in names if n not in ALLOCATORS})   # zkalloc-install: no environment
    for name, why in skipped.items():
        print(f"skipping allocator {name}: {why}", file=sys.stderr)
    programs = [PROGRAMS[p] for p in chosen]
    skipped_programs = {p.name: why for p in programs if (why := p.unavailable())}
    for name, why in skipped_programs.items():
        print(f"skipping program {name}: {why}", file=sys.stderr)
    active = [a for a in names if a in envs]
    load_before = os.getloadavg()
    started = time.perf_counter()
    records = wholeprog.run([p for p in programs if p.name not in skipped_programs], active, envs, args.passes,
                            progress=lambda line: print(line, file=sys.stderr, flush=True))
    info = {**machine_info(), "load_before": load_before, "load_after": os.getloadavg(),
            "seconds": time.perf_counter() - started}
    table = wholeprog.markdown(records)
    print(table)
    print(f"machine: {describe(info)}; load average {load_before[0]:.1f} before, {info['load_after'][0]:.1f} after")
    failures = [f"{r['program']}/{r['allocator']}: {why}" for r in records for why in r["failed"]]
    _save(args, {"kind": "wholeprog", "machine": info,
                 "options": {"programs": chosen, "allocators": active, "passes": args.passes},
                 "commands": {p.name: {a: [arg.replace(ROOT + os.sep, "") for arg in wholeprog.command(p, a)[1:]]
                                       for a in active} for p in programs},
                 "skipped": {**skipped, **skipped_programs}, "failures": failures, "records": records},
          lambda: table)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
