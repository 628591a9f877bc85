"""Whole programs under every allocator: ``python -m bench --programs all``.

Each program of bench.programs runs in a fresh process per allocator and
pass, the allocator order reversed on every other pass, from an empty
temporary folder with its output discarded.  Measured from outside with
``os.wait4``: CPU seconds (user + system), wall seconds, minor and major
faults, and peak RSS (``ru_maxrss``, the largest process of the tree), by
the supervisor ``compare`` uses too (zkalloc_np.cli.process.supervise).  The machine's
load is sampled around every run: the 1-minute load average before and
after, and over the run, from /proc/stat, the cores the rest of the machine
kept busy (busy CPU time of the machine minus the program's own, over the
wall time) and the share of stolen time (process.load_during).

zkalloc runs as a user would run it: ``python -m zkalloc_np run --quiet
PROGRAM`` (install() before the program, libc=keep; ``run`` forks once and
waits, so its small supervising parent is counted too).
"""
from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

from zkalloc_np.cli import sanitizer as _sanitizer
from zkalloc_np.cli.process import supervise
from zkalloc_np._verdict import Verdict, scaled, within

from .programs import Program

ZKALLOC = "zkalloc-global"
#: install() inside the program's own process, before it runs (no supervising parent).
IN_PROCESS = "zkalloc-install"
#: The allocators a whole program runs under by default: numpy's default, the peers, and install().
ALLOCATORS = ("default", "glibc-tuned", "jemalloc", "mimalloc", "tcmalloc", IN_PROCESS, ZKALLOC)
#: Runs `python SCRIPT ARGS` or `python -m MODULE ARGS` (after the -c) as python would, after install().
_INSTALL_THEN_RUN = (
    "import os, runpy, sys, zkalloc_np\n"
    "zkalloc_np.install()\n"
    "if sys.argv[1] == '-m':\n"
    "    sys.argv = sys.argv[2:]\n"
    "    runpy.run_module(sys.argv[0], run_name='__main__', alter_sys=True)\n"
    "else:\n"
    "    sys.argv = sys.argv[1:]\n"
    "    sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))\n"
    "    runpy.run_path(sys.argv[0], run_name='__main__')\n")
#: What goes between ``python`` and the program, per allocator (the others: nothing).
#: zkalloc-global is the way a user runs it: ``python -m zkalloc_np run`` forks once and its
#: parent waits (and is counted); zkalloc-install calls install() in the program's own process.
PREFIX = {ZKALLOC: ("-m", "zkalloc_np", "run", "--quiet"), IN_PROCESS: ("-c", _INSTALL_THEN_RUN)}
#: Per-pass measures of a run, as a record names them (its median; ``pass_`` and the name: per pass),
#: and the field of process.Resources each is.
MEASURES = {"cpu_s": "cpu_s", "user_s": "user_s", "sys_s": "system_s", "wall_s": "wall_s",
            "minflt": "minor_faults", "majflt": "major_faults", "peak_rss_bytes": "peak_rss_bytes"}
LOAD = ("load_before", "load_after", "others_cores", "steal_share")

#: Issue 29's targets for install() on every program: (what, measure, bound from the records).
RSS_GOAL = 1.05          # peak RSS at most 1.05x numpy default's
FAULT_SHARE = 0.10       # minor faults at most glibc-tuned's + 10% of numpy default's
CPU_GOAL = 1.02          # CPU at most 1.02x the best of:
CPU_BASES = ("default", "glibc-tuned", "tcmalloc")


def command(program: Program, allocator: str) -> list[str]:
    """The command line of one run of `program` under `allocator`."""
    return [sys.executable, *PREFIX.get(allocator, ()), *program.argv]


def run_once(program: Program, allocator: str, env: dict[str, str], workdir: str) -> dict[str, Any]:
    """Run the program once in a fresh process (its own session, killed with
    its children after program.timeout_s); its measures, exit and load."""
    full_env = _sanitizer.child_environment(env)   # the parent's preload goes, a sanitizer runtime stays first
    with tempfile.TemporaryFile() as log:
        run = supervise(command(program, allocator), timeout=program.timeout_s, env=full_env, cwd=workdir,
                        stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        log.seek(max(0, log.seek(0, os.SEEK_END) - 2000))
        tail = [line for line in log.read().decode(errors="replace").splitlines() if line.strip()]
    ended, spent, load = run.ended, run.ended.resources, run.load
    return {"exit": ended.exit_code if ended.signal is None else -ended.signal, "failure": ended.failure,
            "timed_out": ended.timed_out, "last_line": tail[-1] if tail else "",
            **{key: getattr(spent, field) for key, field in MEASURES.items()},
            "load_before": run.before.load_avg if run.before else 0.0,
            "load_after": run.after.load_avg if run.after else 0.0,
            "others_cores": load.others_cores, "steal_share": load.steal_share}


def combine(program: str, allocator: str, runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One record from the runs of one (program, allocator): every measure per
    pass (``pass_<measure>``) and its median.  A run killed or timed out is
    not measured: it is counted in ``failed`` with why.  A run that exited
    non-zero (a failing test) is measured, and its status kept."""
    done = [r for r in runs if not r["timed_out"] and r["exit"] >= 0]
    record: dict[str, Any] = {"program": program, "allocator": allocator, "passes": len(done),
                              "pass_exit": [r["exit"] for r in done],
                              "failed": [r["failure"] + (f": {r['last_line']}" if r["last_line"] else "")
                                         for r in runs if r not in done]}
    for key in (*MEASURES, *LOAD):
        record["pass_" + key] = [r[key] for r in done]
        if done:
            record[key] = statistics.median(record["pass_" + key])
    bad = [r["last_line"] for r in done if r["exit"] != 0]
    if bad:
        record["last_line"] = bad[-1]
    return record


def run(programs: Sequence[Program], allocators: Sequence[str], envs: dict[str, dict[str, str]], passes: int,
        progress: Callable[[str], None] = lambda line: None) -> list[dict[str, Any]]:
    """Every program under every allocator, `passes` times, the allocator
    order reversed on every other pass; one record per (program, allocator)."""
    records = []
    with tempfile.TemporaryDirectory(prefix="zkalloc-wholeprog-") as workdir:
        for program in programs:
            runs: dict[str, list[dict[str, Any]]] = {a: [] for a in allocators}
            for p in range(passes):
                for name in allocators if p % 2 == 0 else allocators[::-1]:
                    r = run_once(program, name, envs[name], workdir)
                    runs[name].append(r)
                    progress(f"{program.name} {name} pass {p + 1}/{passes}: {r['cpu_s']:.1f} s CPU, "
                             f"{r['wall_s']:.1f} s wall, exit {r['exit']}, load {r['load_before']:.1f}")
            records += [combine(program.name, a, runs[a]) for a in allocators]
    return records


# ---- targets and tables ----------------------------------------------------------------------

def by_program(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, dict[str, Any]]]:
    """{program: {allocator: record}}, in the records' order."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for r in records:
        out.setdefault(r["program"], {})[r["allocator"]] = r
    return out


def targets(rows: dict[str, dict[str, Any]], zkalloc: str = ZKALLOC) -> list[tuple[str, Verdict, str]]:
    """Issue 29's targets for install() (allocator `zkalloc`) on one program's
    records: (what, verdict, the medians' ratio to the bound), each verdict by
    the shared rule (zkalloc_np._verdict.within) over the passes."""
    zk = rows.get(zkalloc)
    if zk is None or not zk["passes"]:
        return []
    out: list[tuple[str, Verdict, str]] = []
    base = rows.get("default")
    if base and base["passes"]:
        out.append((f"peak RSS <= {RSS_GOAL:.2f}x numpy default's",
                    within(zk["pass_peak_rss_bytes"], scaled(base["pass_peak_rss_bytes"], RSS_GOAL), "peak_rss_bytes"),
                    f"{zk['peak_rss_bytes'] / base['peak_rss_bytes']:.2f}x default's"))
        tuned = rows.get("glibc-tuned")
        if tuned and tuned["passes"]:
            bound = [t + FAULT_SHARE * d for t, d in zip(tuned["pass_minflt"], base["pass_minflt"])]
            limit = tuned["minflt"] + FAULT_SHARE * base["minflt"]
            out.append((f"minor faults <= glibc-tuned's + {FAULT_SHARE:.0%} of numpy default's",
                        within(zk["pass_minflt"], bound, "minflt"), f"{zk['minflt'] / limit:.2f}x the bound"))
    bases = {b: rows[b] for b in CPU_BASES if b in rows and rows[b]["passes"]}
    if bases:
        best = min(bases, key=lambda b: bases[b]["cpu_s"])
        out.append((f"CPU <= {CPU_GOAL:.2f}x the best of {', '.join(bases)} ({best})",
                    within(zk["pass_cpu_s"], scaled(bases[best]["pass_cpu_s"], CPU_GOAL), "cpu_s"),
                    f"{zk['cpu_s'] / bases[best]['cpu_s']:.2f}x {best}'s"))
    return out


def _spread(values: Sequence[float], fmt: Callable[[float], str]) -> str:
    """median (min–max) over the passes, or the one value."""
    if not values:
        return "–"
    mid, low, high = fmt(statistics.median(values)), fmt(min(values)), fmt(max(values))
    return mid if low == high else f"{mid} ({low}–{high})"


def _secs(v: float) -> str:
    return f"{v:.1f}" if v >= 10 else f"{v:.2f}"


def _count(v: float) -> str:
    return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.0f}k" if v >= 1e4 else f"{v:.0f}"


def _mib(v: float) -> str:
    return f"{int(v) >> 20}"


def _exits(r: dict[str, Any]) -> str:
    codes = sorted(set(r["pass_exit"]))
    return ",".join(str(c) for c in codes) + (f"; {len(r['failed'])} failed" if r["failed"] else "")


def markdown(records: Sequence[dict[str, Any]]) -> str:
    """One row per (program, allocator): CPU s, wall s, minor faults, peak RSS,
    median (min–max) over the passes, the exit statuses and the load; then per
    program the targets of install() as met / MISSED / noise."""
    lines = ["| program | allocator | CPU s (user+sys) | wall s | minor faults | peak RSS MiB | exit | "
             "load (others' cores) |",
             "|---|---|---|---|---|---|---|---|"]
    grouped = by_program(records)
    for program, rows in grouped.items():
        first = True
        for name, r in rows.items():
            lines.append(f"| {program if first else ''} | {name} | {_spread(r['pass_cpu_s'], _secs)} | "
                         f"{_spread(r['pass_wall_s'], _secs)} | {_spread(r['pass_minflt'], _count)} | "
                         f"{_spread(r['pass_peak_rss_bytes'], _mib)} | {_exits(r)} | "
                         f"{_spread(r['pass_load_before'], lambda v: f'{v:.1f}')} "
                         f"({_spread(r['pass_others_cores'], lambda v: f'{v:.1f}')}) |")
            first = False
    lines += ["", "| program | install() target | verdict | measured |", "|---|---|---|---|"]
    for program, rows in grouped.items():
        for zk in (IN_PROCESS, ZKALLOC):
            for what, v, ratio in targets(rows, zk):
                lines.append(f"| {program} | {zk}: {what} | {v.word} | {ratio}: {v.reason} |")
    return "\n".join(lines)


def summary(records: Sequence[dict[str, Any]], before: Sequence[dict[str, Any]] = ()) -> str:
    """The docs' tables: per program and allocator, CPU s, wall s, minor faults
    and peak RSS, median (min–max) over the passes, with install()'s row of
    `before` (an earlier run) beneath its own; then per program install()'s
    three targets, verdict and ratio."""
    lines = ["| program | allocator | CPU s (user+sys) | wall s | minor faults | peak RSS MiB |",
             "|---|---|---|---|---|---|"]
    grouped, earlier = by_program(records), by_program(before)
    for program, rows in grouped.items():
        first = True
        listed = [(name, r) for name, r in rows.items()]
        old = earlier.get(program, {}).get(ZKALLOC)
        if old is not None and old != rows.get(ZKALLOC):   # the same run twice: no before row
            listed.append((f"{ZKALLOC}, before", old))
        for name, r in listed:
            lines.append(f"| {program if first else ''} | {name} | {_spread(r['pass_cpu_s'], _secs)} | "
                         f"{_spread(r['pass_wall_s'], _secs)} | {_spread(r['pass_minflt'], _count)} | "
                         f"{_spread(r['pass_peak_rss_bytes'], _mib)} |")
            first = False
    lines += ["", f"| program | zkalloc | peak RSS <= {RSS_GOAL:.2f}x numpy default's | minor faults <= "
              f"glibc-tuned's + {FAULT_SHARE:.0%} of numpy default's | CPU <= {CPU_GOAL:.2f}x the best of "
              f"{', '.join(CPU_BASES)} |", "|---|---|---|---|---|"]
    for program, rows in grouped.items():
        for zk in (IN_PROCESS, ZKALLOC):
            found = targets(rows, zk)
            if found:
                lines.append(f"| {program} | {zk} | " + " | ".join(f"{v.word}, {ratio}" for _, v, ratio in found)
                             + " |")
    return "\n".join(lines)
