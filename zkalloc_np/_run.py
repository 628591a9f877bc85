"""``python -m zkalloc_np run``: an unmodified program under the process-wide
install, and a report at exit of what the cache did and what page faults cost.

The program runs like ``python script.py`` or ``python -m module`` would run
it (runpy, ``sys.argv`` set, ``sys.path[0]`` the script's folder); its exit
code is kept and its exceptions propagate as usual.  The report goes to
stderr (and, with ``--json``, to a file) after the program ends, even when it
fails.

How the fault figures are made (all measured in this process):

- Faults are the process's minor/major fault counters, from /proc/self/stat
  where readable, getrusage otherwise, taken before and after the program.
- The cost of a fault is calibrated at exit: an 8 MiB anonymous mapping with
  4 KiB pages (MADV_NOHUGEPAGE) is filled twice; the first fill minus the
  second, divided by the faults the first one took, is the cost of one fault
  (entry, zeroing the page, mapping it, and the unmap).  "Time in page
  faults" is faults x that cost, capped at the system CPU time the program
  used (a huge-page fault costs more per fault, less per byte).
- "Without zkalloc" prices the cache's hits as fresh memory: one 4 KiB fault
  per page, at the calibrated cost (numpy's default handler asks for huge
  pages from 4 MiB up, but measured here its arrays still faulted in 4 KiB
  pages, so none are assumed).  It is a range.  The low end counts only hits
  in classes of 32 MiB and up: glibc always unmaps blocks that big on free,
  so numpy's default faults them afresh every time.  The high end counts every
  hit, which is what happens when smaller blocks are given back too (Dask's
  workers set MALLOC_TRIM_THRESHOLD_=65536; glibc trims per-thread arenas);
  in a plain single-threaded process glibc keeps most blocks under its mmap
  threshold (dynamic, up to 32 MiB) on its heap, and the truth is near the
  low end.
"""
from __future__ import annotations

import json
import mmap
import os
import resource
import runpy
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, TextIO

import numpy as np

from ._stats import Stats, fmt_bytes

PAGE = mmap.PAGESIZE
HUGE_PAGE = 2 << 20
GLIBC_MAX_MMAP_THRESHOLD = 32 << 20  # blocks this big are always unmapped on free by glibc
CALIBRATION_BYTES = 8 << 20


@dataclass(frozen=True)
class ProcessCounters:
    """Fault counters and CPU times of this process (all threads)."""

    minor_faults: int
    major_faults: int
    user_s: float
    system_s: float
    source: str


def read_counters() -> ProcessCounters:
    """From /proc/self/stat where readable, else getrusage(RUSAGE_SELF)."""
    try:
        with open("/proc/self/stat", "rb") as f:
            text = f.read().decode()
        fields = text[text.rindex(")") + 2:].split()
        # fields[0] is field 3 (state): minflt=10, majflt=12, utime=14, stime=15
        ticks = os.sysconf("SC_CLK_TCK")
        return ProcessCounters(int(fields[7]), int(fields[9]), int(fields[11]) / ticks,
                               int(fields[12]) / ticks, "/proc/self/stat")
    except (OSError, ValueError, IndexError):
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return ProcessCounters(usage.ru_minflt, usage.ru_majflt, usage.ru_utime, usage.ru_stime, "getrusage")


def _minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _first_touch(advice: int | None, nbytes: int = CALIBRATION_BYTES) -> tuple[float, int]:
    """(seconds the first fill took beyond a second fill, plus the unmap, and
    the faults the first fill took) over `nbytes` of a fresh anonymous mapping given `advice`; the bytes
    filled start on a 2 MiB boundary, so huge pages can back all of them."""
    region = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    try:
        if advice is not None:
            region.madvise(advice)
        whole = np.frombuffer(region, dtype=np.uint8)
        skip = -whole.ctypes.data % HUGE_PAGE
        array = whole[skip:skip + nbytes]
        faults = _minor_faults()
        start = time.perf_counter()
        array.fill(1)
        fresh = time.perf_counter() - start
        faults = _minor_faults() - faults
        start = time.perf_counter()
        array.fill(2)
        warm = time.perf_counter() - start
        del array, whole
    finally:
        start = time.perf_counter()
        region.close()            # unmapping populated pages is part of the cost
        unmap = time.perf_counter() - start
    return max(fresh - warm + unmap, 0.0), faults


@dataclass(frozen=True)
class FaultCost:
    """What first-touching fresh memory costs here, beyond writing resident memory."""

    per_fault_s: float   # one 4 KiB page fault (and its share of the unmap)
    per_byte_s: float    # the same per byte


def calibrate(repeats: int = 5) -> FaultCost:
    """Measure the cost of a 4 KiB fault now: the median of `repeats` trials
    of 8 MiB each (about 0.1 s in all; single trials are noisy on a busy machine)."""
    trials = [_first_touch(getattr(mmap, "MADV_NOHUGEPAGE", None)) for _ in range(repeats)]
    extra = statistics.median(t[0] for t in trials)
    faults = statistics.median(t[1] for t in trials)
    return FaultCost(extra / faults if faults else 0.0, extra / CALIBRATION_BYTES)


@dataclass(frozen=True)
class RunReport:
    """What ``run`` prints at exit; ``as_dict()`` is what ``--json`` writes."""

    command: list[str]
    exit_code: int
    wall_s: float
    user_s: float
    system_s: float
    hits: int
    misses: int
    hit_rate: float
    bytes_served_from_cache: int
    bytes_cached: int
    cap_bytes: int
    peak_bytes_in_use: int
    peak_bytes_cached: int
    evictions: int
    evicted_bytes: int
    minor_faults: int
    major_faults: int
    counters_source: str
    fault_cost_us: float
    fault_time_s: float
    faults_avoided_min: int
    time_avoided_min_s: float
    faults_avoided_max: int
    time_avoided_max_s: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        share = lambda s: f"{100 * s / self.wall_s:.1f}% of wall" if self.wall_s > 0 else "n/a"  # noqa: E731
        return "\n".join([
            f"zkalloc run: {' '.join(self.command)}: exit {self.exit_code}, {self.wall_s:.2f} s wall "
            f"({self.user_s:.2f} s user, {self.system_s:.2f} s system)",
            f"  cache: {self.hits} hits, {self.misses} misses (hit rate {self.hit_rate:.1%}), "
            f"{fmt_bytes(self.bytes_served_from_cache)} served from resident memory",
            f"         cached {fmt_bytes(self.bytes_cached)} of cap {fmt_bytes(self.cap_bytes)} "
            f"(peak {fmt_bytes(self.peak_bytes_cached)}), peak in use {fmt_bytes(self.peak_bytes_in_use)}, "
            f"{self.evictions} evictions ({fmt_bytes(self.evicted_bytes)})",
            f"  page faults: {self.minor_faults} minor, {self.major_faults} major ({self.counters_source}); "
            f"at {self.fault_cost_us:.2f} us per 4 KiB fault (calibrated here) about {self.fault_time_s:.3f} s, "
            f"{share(self.fault_time_s)}",
            f"  without zkalloc (estimate): at least {self.faults_avoided_min} more faults, about "
            f"{self.time_avoided_min_s:.3f} s ({share(self.time_avoided_min_s)}; hits of 32 MiB and up, "
            "which glibc always unmaps)",
            f"    at most {self.faults_avoided_max} more faults, about {self.time_avoided_max_s:.3f} s "
            f"({share(self.time_avoided_max_s)}; every hit fresh, as when smaller blocks are trimmed too)",
        ])


def _hit_bytes_by_class(before: Stats, after: Stats) -> dict[int, int]:
    """Bytes served by hits during the run, per class size."""
    earlier = {c.bytes: c.hits for c in before.classes}
    return {c.bytes: (c.hits - earlier.get(c.bytes, 0)) * c.bytes for c in after.classes}


def build_report(command: Sequence[str], exit_code: int, wall_s: float,
                 counters: tuple[ProcessCounters, ProcessCounters], stats: tuple[Stats, Stats],
                 cost: FaultCost) -> RunReport:
    """Combine the measurements into the report (pure, for testing)."""
    (c0, c1), (s0, s1) = counters, stats
    minor = c1.minor_faults - c0.minor_faults
    system_s = c1.system_s - c0.system_s
    served, served_big = 0, 0
    for size, nbytes in _hit_bytes_by_class(s0, s1).items():
        served += nbytes
        if size >= GLIBC_MAX_MMAP_THRESHOLD:
            served_big += nbytes
    hits, misses = s1.hits - s0.hits, s1.misses - s0.misses
    return RunReport(
        command=list(command), exit_code=exit_code, wall_s=wall_s,
        user_s=c1.user_s - c0.user_s, system_s=system_s,
        hits=hits, misses=misses, hit_rate=hits / (hits + misses) if hits + misses else 0.0,
        bytes_served_from_cache=served, bytes_cached=s1.bytes_cached, cap_bytes=s1.cap_bytes,
        peak_bytes_in_use=s1.peak_bytes_in_use, peak_bytes_cached=s1.peak_bytes_cached,
        evictions=s1.evictions - s0.evictions, evicted_bytes=s1.evicted_bytes - s0.evicted_bytes,
        minor_faults=minor, major_faults=c1.major_faults - c0.major_faults, counters_source=c1.source,
        fault_cost_us=cost.per_fault_s * 1e6, fault_time_s=min(minor * cost.per_fault_s, max(system_s, 0.0)),
        faults_avoided_min=served_big // PAGE, time_avoided_min_s=served_big * cost.per_byte_s,
        faults_avoided_max=served // PAGE, time_avoided_max_s=served * cost.per_byte_s,
    )


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    return exc.code if isinstance(exc.code, int) else 1


def run(target: str, args: Sequence[str], *, module: bool = False, json_path: str | None = None,
        stream: TextIO | None = None) -> int:
    """Run a script (or, with module=True, a module as ``-m``) under install().

    Returns 0 when the program ends normally; a SystemExit or any other
    exception from the program propagates after the report is written.
    """
    import zkalloc_np

    if not module and not os.path.isfile(target):
        raise FileNotFoundError(f"can't open file {target!r}: no such file")
    sys.argv = [target, *args]
    if not module:
        sys.path[0] = os.path.dirname(os.path.abspath(target))
    command = (["-m", target] if module else [target]) + list(args)
    stats0, counters0 = zkalloc_np.stats(), read_counters()
    start = time.perf_counter()
    exit_code = 1
    zkalloc_np.install()
    try:
        if module:
            runpy.run_module(target, run_name="__main__", alter_sys=True)
        else:
            runpy.run_path(target, run_name="__main__")
        exit_code = 0
    except SystemExit as exc:
        exit_code = _exit_code(exc)
        raise
    finally:
        wall = time.perf_counter() - start
        counters1, stats1 = read_counters(), zkalloc_np.stats()
        report = build_report(command, exit_code, wall, (counters0, counters1), (stats0, stats1), calibrate())
        out = stream if stream is not None else sys.stderr
        print(report, file=out, flush=True)
        if json_path is not None:
            with open(json_path, "w") as f:
                json.dump(report.as_dict(), f, indent=2)
    return 0
