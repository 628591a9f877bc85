"""``python -m zkalloc_np run``: an unmodified program under the process-wide
install, and a report at exit of what the cache did, as measured.

The program runs like ``python script.py`` or ``python -m module`` would run
it (runpy, ``sys.argv`` set, ``sys.path[0]`` the script's folder); its exit
code is kept.  An exception it does not catch is printed as Python prints it,
with the program's own frames only (none of runpy's or this package's), and
the exit status is 1, as under ``python script.py``.  The report goes to
stderr (and, with ``--json``, to a file) after the program ends, even when it
fails.

A program killed by a signal (``os.abort()``, a segfault, ``kill -9``, the
OOM killer) takes its cache counters with it.  So the command line's ``run``
forks first (``supervise=True``): the program runs in the child, and the
parent, which only waits, reports what it can still measure from outside
with ``os.wait4``: the signal, wall, user and system time, page faults and
peak RSS (`CrashReport`).  It then dies by the same signal, so the exit
status is the program's.

Everything in the report is counted in this process: the cache's hits and
misses per size class, the bytes it served from resident memory, the
requests it left to numpy's allocator (by size), the process's page faults
(/proc/self/stat, or getrusage) and CPU times, and its peak RSS.  It does not
say what the run would have cost without zkalloc: numpy's default allocator
keeps many blocks on glibc's heap, so the faults a hit avoided cannot be
counted from inside one run.  ``python -m zkalloc_np compare`` measures that,
by running the program both ways.

``run --peak`` also records, for every request the cache serves, where it was
allocated, and snapshots what is live whenever the cache's bytes in use grow
by 1/16: the report then says what made the peak (sites, sizes, phases).
"""
from __future__ import annotations

import json
import os
import resource
import runpy
import shlex
import signal
import sys
import time
from collections.abc import Sequence
from types import TracebackType
from dataclasses import asdict, dataclass, field, replace
from typing import Any, TextIO

from . import _core, _peak
from ._peak import PeakReport
from ._phase import phase_names
from ._stats import Stats, fmt_bytes, size_range

#: Per-class rows printed (the JSON has every class).
REPORT_CLASSES = 12


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


@dataclass(frozen=True)
class ClassReport:
    """One size class during the run: requests served resident (hits) and
    new mappings (misses), and the bytes of each."""

    bytes: int
    hits: int
    misses: int
    bytes_served: int
    bytes_mapped: int


@dataclass(frozen=True)
class RunReport:
    """What ``run`` prints at exit; ``as_dict()`` is what ``--json`` writes.
    Every field is measured in the run's process."""

    command: list[str]
    exit_code: int
    wall_s: float
    user_s: float
    system_s: float
    minor_faults: int
    major_faults: int
    counters_source: str
    peak_rss_bytes: int
    hits: int
    misses: int
    hit_rate: float
    bytes_served_from_cache: int
    bytes_mapped_by_misses: int
    bytes_cached: int
    cap_bytes: int
    min_bytes: int
    peak_bytes_in_use: int
    peak_bytes_cached: int
    evictions: int
    evicted_bytes: int
    small_allocs: int
    small_frees: int
    foreign_frees: int
    calloc_fresh: int
    calloc_memset: int
    calloc_discard: int
    classes: list[ClassReport] = field(default_factory=list)
    small_allocs_by_size: dict[int, int] = field(default_factory=dict)
    peak: PeakReport | None = None   # run --peak: what was live at the peak

    def as_dict(self) -> dict[str, Any]:
        """Plain dict, ready for json.dumps."""
        return asdict(self)

    def __str__(self) -> str:
        return "\n".join(self._lines() + (self._peak_lines() if self.peak is not None else []))

    def _peak_lines(self) -> list[str]:
        assert self.peak is not None
        summary = self.peak.lines(top=8)
        lines = ["  what made the peak (run --peak): " + summary[0]] + ["  " + line for line in summary[1:]]
        phases = {name or "(no phase)": n for name, n in self.peak.by_phase.items()}
        if len(phases) > 1 or "(no phase)" not in phases:
            lines.append("    by phase: " + ", ".join(f"{name} {fmt_bytes(n)}" for name, n in phases.items()))
        top = sorted(self.peak.by_class.items(), key=lambda kv: kv[1], reverse=True)[:4]
        lines.append("    largest sizes: " + ", ".join(f"{fmt_bytes(n)} in {fmt_bytes(c)} regions" for c, n in top))
        return lines

    def _lines(self) -> list[str]:
        lines = [
            f"zkalloc run: {' '.join(self.command)}: exit {self.exit_code}, {self.wall_s:.2f} s wall "
            f"({self.user_s:.2f} s user, {self.system_s:.2f} s system)",
            f"  cache: {self.hits} hits, {self.misses} misses (hit rate {self.hit_rate:.1%}); "
            f"{fmt_bytes(self.bytes_served_from_cache)} served from resident memory, "
            f"{fmt_bytes(self.bytes_mapped_by_misses)} newly mapped",
            f"         cached {fmt_bytes(self.bytes_cached)} of cap {fmt_bytes(self.cap_bytes)} "
            f"(peak {fmt_bytes(self.peak_bytes_cached)}), peak in use {fmt_bytes(self.peak_bytes_in_use)}, "
            f"{self.evictions} evictions ({fmt_bytes(self.evicted_bytes)})",
            f"  process: {self.minor_faults} minor and {self.major_faults} major page faults "
            f"({self.counters_source}), peak RSS {fmt_bytes(self.peak_rss_bytes)}",
        ]
        if self.calloc_fresh or self.calloc_memset or self.calloc_discard:
            lines.append(f"  np.zeros: {self.calloc_fresh} fresh (already zero), {self.calloc_memset} memset, "
                         f"{self.calloc_discard} discarded (MADV_DONTNEED)")
        if self.classes:
            lines.append(f"  {'class':>12} {'hits':>8} {'misses':>7} {'served':>12} {'mapped':>12}")
            shown = sorted(self.classes, key=lambda c: c.bytes_served + c.bytes_mapped, reverse=True)
            for c in sorted(shown[:REPORT_CLASSES], key=lambda c: c.bytes):
                lines.append(f"  {fmt_bytes(c.bytes):>12} {c.hits:>8} {c.misses:>7} {fmt_bytes(c.bytes_served):>12} "
                             f"{fmt_bytes(c.bytes_mapped):>12}")
            if len(shown) > REPORT_CLASSES:
                lines.append(f"  ... {len(shown) - REPORT_CLASSES} more classes (all of them in --json)")
        if self.small_allocs:
            top = sorted(self.small_allocs_by_size.items(), key=lambda kv: kv[1], reverse=True)[:4]
            sizes = ", ".join(f"{n} of {size_range(low)}" for low, n in top)
            lines.append(f"  left to numpy: {self.small_allocs} requests below min_bytes ({fmt_bytes(self.min_bytes)}), "
                         f"most often {sizes}")
        if self.foreign_frees:
            lines.append(f"  {self.foreign_frees} frees of arrays from before the install, passed to numpy")
        if self.exit_code == 0:   # a program that failed here would fail under compare too
            lines.append("  does zkalloc make this program faster? measure it: "
                         f"python -m zkalloc_np compare {shlex.join(self.command)}")
        return lines


def _gain(after: int, before: int) -> int:
    return after - before if after >= before else after


def _classes(before: Stats, after: Stats) -> list[ClassReport]:
    """Per size class: hits and misses during the run, and their bytes."""
    earlier = {c.bytes: c for c in before.classes}
    out = []
    for c in after.classes:
        old = earlier.get(c.bytes)
        hits = _gain(c.hits, old.hits if old else 0)
        misses = _gain(c.misses, old.misses if old else 0)
        if hits or misses:
            out.append(ClassReport(c.bytes, hits, misses, hits * c.bytes, misses * c.bytes))
    return out


def build_report(command: Sequence[str], exit_code: int, wall_s: float,
                 counters: tuple[ProcessCounters, ProcessCounters], stats: tuple[Stats, Stats],
                 peak_rss_bytes: int = 0) -> RunReport:
    """Combine the measurements into the report (pure, for testing)."""
    (c0, c1), (s0, s1) = counters, stats
    classes = _classes(s0, s1)
    hits, misses = _gain(s1.hits, s0.hits), _gain(s1.misses, s0.misses)
    small_by_size = {low: _gain(n, s0.small_allocs_by_size.get(low, 0)) for low, n in s1.small_allocs_by_size.items()}
    return RunReport(
        command=list(command), exit_code=exit_code, wall_s=wall_s,
        user_s=c1.user_s - c0.user_s, system_s=c1.system_s - c0.system_s,
        minor_faults=c1.minor_faults - c0.minor_faults, major_faults=c1.major_faults - c0.major_faults,
        counters_source=c1.source, peak_rss_bytes=peak_rss_bytes,
        hits=hits, misses=misses, hit_rate=hits / (hits + misses) if hits + misses else 0.0,
        bytes_served_from_cache=sum(c.bytes_served for c in classes),
        bytes_mapped_by_misses=sum(c.bytes_mapped for c in classes),
        bytes_cached=s1.bytes_cached, cap_bytes=s1.cap_bytes, min_bytes=s1.min_bytes,
        peak_bytes_in_use=s1.peak_bytes_in_use, peak_bytes_cached=s1.peak_bytes_cached,
        evictions=_gain(s1.evictions, s0.evictions), evicted_bytes=_gain(s1.evicted_bytes, s0.evicted_bytes),
        small_allocs=_gain(s1.small_allocs, s0.small_allocs), small_frees=_gain(s1.small_frees, s0.small_frees),
        foreign_frees=_gain(s1.foreign_frees, s0.foreign_frees),
        calloc_fresh=_gain(s1.calloc_fresh, s0.calloc_fresh), calloc_memset=_gain(s1.calloc_memset, s0.calloc_memset),
        calloc_discard=_gain(s1.calloc_discard, s0.calloc_discard),
        classes=classes, small_allocs_by_size={low: n for low, n in sorted(small_by_size.items()) if n},
    )


@dataclass(frozen=True)
class CrashReport:
    """What ``run`` reports when the program was killed by a signal: only what
    its parent measured from outside (os.wait4).  The cache's counters lived
    in the program's memory and died with it (``cache`` is None in the JSON)."""

    command: list[str]
    signal: int
    signal_name: str
    wall_s: float
    user_s: float
    system_s: float
    minor_faults: int
    major_faults: int
    peak_rss_bytes: int
    counters_source: str = "os.wait4 (the parent of the program's process)"
    exit_code: int | None = None
    cache: None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain dict, ready for json.dumps."""
        return asdict(self)

    def __str__(self) -> str:
        return "\n".join([
            f"zkalloc run: {' '.join(self.command)}: killed by signal {self.signal} ({self.signal_name}) after "
            f"{self.wall_s:.2f} s wall ({self.user_s:.2f} s user, {self.system_s:.2f} s system)",
            f"  process: {self.minor_faults} minor and {self.major_faults} major page faults, peak RSS "
            f"{fmt_bytes(self.peak_rss_bytes)} (measured from outside the program, by os.wait4)",
            "  cache: no counters: they were in the program's memory and died with it",
        ])


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def _die_by(sig: int) -> None:
    """End this process by signal `sig`, as the program's did (no second core dump)."""
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    except (ValueError, OSError):
        pass
    try:
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    except (OSError, ValueError):
        pass
    os._exit(128 + sig)


def _supervise(command: Sequence[str], json_path: str | None, out: TextIO, quiet: bool) -> None:
    """Fork.  The child returns at once and runs the program.  The parent waits
    for it and never returns: it exits with the child's status, after a
    `CrashReport` when the child was killed by a signal.  Like time(1), the
    parent ignores SIGINT and SIGQUIT (the terminal sends them to the child
    too) and passes SIGTERM and SIGHUP on to the child."""
    sys.stdout.flush()
    sys.stderr.flush()
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        return
    for ignored in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(ignored, signal.SIG_IGN)
    for forwarded in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(forwarded, lambda received, _frame: os.kill(pid, received))
    _, status, usage = os.wait4(pid, 0)   # retried after a forwarded signal (PEP 475)
    if not os.WIFSIGNALED(status):
        os._exit(os.waitstatus_to_exitcode(status))
    sig = os.WTERMSIG(status)
    report = CrashReport(command=list(command), signal=sig, signal_name=_signal_name(sig),
                         wall_s=time.perf_counter() - start, user_s=usage.ru_utime, system_s=usage.ru_stime,
                         minor_faults=usage.ru_minflt, major_faults=usage.ru_majflt,
                         peak_rss_bytes=usage.ru_maxrss * 1024)
    try:
        if not quiet:
            print(report, file=out, flush=True)
        if json_path is not None:
            _write_json(report, json_path, out)
    finally:
        _die_by(sig)


_RUN_FILE = os.path.abspath(__file__)


def _is_machinery(filename: str) -> bool:
    """A frame of the machinery that starts the program: this module, runpy, importlib."""
    if filename.startswith(("<frozen runpy", "<frozen importlib")):
        return True
    path = os.path.abspath(filename)
    return path == _RUN_FILE or (os.path.basename(path) == "runpy.py" and path == os.path.abspath(runpy.__file__))


def user_traceback(tb: TracebackType | None) -> TracebackType | None:
    """`tb` without its leading frames of run's machinery (this module, runpy,
    importlib): what ``python script.py`` would have shown."""
    while tb is not None and _is_machinery(tb.tb_frame.f_code.co_filename):
        tb = tb.tb_next
    return tb


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    return exc.code if isinstance(exc.code, int) else 1


def check_json_path(path: str) -> str | None:
    """Why a report cannot be written to `path` (a short message), or None."""
    if os.path.isdir(path):
        return f"--json {path}: is a directory"
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return f"--json {path}: the folder {folder} does not exist"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"--json {path}: the folder {folder} is not writable"
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return f"--json {path}: the file is not writable"
    return None


def _write_json(report: RunReport | CrashReport, path: str, err: TextIO) -> None:
    try:
        with open(path, "w") as f:
            json.dump(report.as_dict(), f, indent=2)
    except OSError as exc:   # checked before the run; the folder may have gone since
        print(f"python -m zkalloc_np run: could not write --json {path}: {exc.strerror or exc}", file=err)


def run(target: str, args: Sequence[str], *, module: bool = False, json_path: str | None = None,
        stream: TextIO | None = None, quiet: bool = False, supervise: bool = False, peak: bool = False) -> int:
    """Run a script (or, with module=True, a module as ``-m``) under install().

    Returns the program's exit status: 0 when it ends normally, 1 after an
    exception it did not catch (printed, as Python prints it, with the
    program's frames only), 130 after KeyboardInterrupt.  A SystemExit from
    the program propagates after the report is written.
    quiet: no report on `stream` (stderr), only the JSON file.
    supervise: fork first, so that a program killed by a signal still gets a
    report of what its parent measured (see `CrashReport`); the command line
    sets it.  The parent never returns.
    peak: record allocation sites and what was live at the peak (run --peak).
    """
    import zkalloc_np
    from ._log import log_activity

    if not module and not os.path.isfile(target):
        raise FileNotFoundError(f"can't open file {target!r}: no such file")
    command = (["-m", target] if module else [target]) + list(args)
    out = stream if stream is not None else sys.stderr
    if supervise:
        _supervise(command, json_path, out, quiet)
    sys.argv = [target, *args]
    if not module:
        sys.path[0] = os.path.dirname(os.path.abspath(target))
    stats0, counters0 = zkalloc_np.stats(), read_counters()
    start = time.perf_counter()
    exit_code = 1
    if peak:
        _core.track_process(True)
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
    except BaseException as exc:   # the program's own: its traceback, as python script.py shows it
        tb = user_traceback(exc.__traceback__)
        sys.excepthook(type(exc), exc.with_traceback(tb), tb)
        exit_code = 130 if isinstance(exc, KeyboardInterrupt) else 1
    finally:
        wall = time.perf_counter() - start
        counters1, stats1 = read_counters(), zkalloc_np.stats()
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        report = build_report(command, exit_code, wall, (counters0, counters1), (stats0, stats1), peak_rss)
        if peak:
            _core.track_process(False)
            report = replace(report, peak=_peak.report(_core.process_peak(), None, stats1.peak_bytes_in_use,
                                                       phase_names()))
        if not quiet:
            print(report, file=out, flush=True)
        if json_path is not None:
            _write_json(report, json_path, out)
        log_activity("run")
    return exit_code
