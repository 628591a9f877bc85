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

Every Python process the program starts is covered too (the
ZKALLOC_SUBPROCESS switch, zkalloc_np.cli.children): the cache's counters in
the report are their sum, and the report says how many processes that is.
Each process counts its own: the cache's hits and misses per size
class, the bytes it served from resident memory, the requests it left to
numpy's allocator (by size); the page faults (/proc/self/stat, or
getrusage), CPU times and peak RSS reported are the program's process's.
It does not say what the run would have cost without zkalloc: numpy's
default allocator keeps many blocks on glibc's heap, so the faults a hit
avoided cannot be counted from inside one run.  ``python -m zkalloc_np
compare`` measures that, by running the program both ways.

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
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from types import TracebackType
from typing import Any, TextIO

from .. import _core, _peak
from .._peak import PeakReport
from .._phase import phase_names
from .._stats import Stats, fmt_bytes, size_range
from . import children as _children
from .activity import CacheActivity, add, cache_activity
from .children import Children
from .process import FROM_WAIT4, Resources, read_own, signal_name, watch
from .timeline import DEFAULT_INTERVAL, Timeline, plot, progress

#: Per-class rows printed (the JSON has every class).
REPORT_CLASSES = 12


@dataclass(frozen=True)
class Processes:
    """The processes of a run: the program's own, and the others it started
    that zkalloc was installed in (ZKALLOC_SUBPROCESS, zkalloc_np.cli.children)."""

    covered: int = 1          # the program's process and every child that reported
    not_covered: int = 0      # children in which zkalloc was installed that never reported
    children_user_s: float = 0.0
    children_system_s: float = 0.0


@dataclass(frozen=True)
class RunReport:
    """What ``run`` prints at exit; ``as_dict()`` is what ``--json`` writes.
    ``resources`` is measured in the program's process; ``cache`` is what the
    cache did there, added up with what every covered child reported."""

    command: list[str]
    exit_code: int
    resources: Resources
    counters_source: str
    cache: CacheActivity
    processes: Processes = field(default_factory=Processes)
    peak: PeakReport | None = None   # run --peak: what was live at the peak

    def as_dict(self) -> dict[str, Any]:
        """Plain dict, ready for json.dumps."""
        d = asdict(self)
        d["cache"] = self.cache.as_dict()
        return d

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

    def _process_line(self) -> list[str]:
        p = self.processes
        if p.covered == 1 and not p.not_covered:
            return []
        line = (f"  processes: {p.covered} covered (the program's and {p.covered - 1} it started, "
                f"{p.children_user_s:.2f} s user and {p.children_system_s:.2f} s system in those); cache counters "
                "are their sum")
        if p.not_covered:
            line += (f"; {p.not_covered} more had zkalloc installed but never reported (killed, ended by os._exit, "
                     "or still running)")
        return [line]

    def _lines(self) -> list[str]:
        r, c = self.resources, self.cache
        lines = [
            f"zkalloc run: {' '.join(self.command)}: exit {self.exit_code}, {r.wall_s:.2f} s wall "
            f"({r.user_s:.2f} s user, {r.system_s:.2f} s system)",
            *self._process_line(),
            f"  cache: {c.hits} hits, {c.misses} misses (hit rate {c.hit_rate:.1%}); "
            f"{fmt_bytes(c.bytes_served_from_cache)} served from resident memory; the misses took "
            f"{fmt_bytes(c.bytes_newly_mapped)} of fresh memory and {fmt_bytes(c.bytes_repurposed)} of idle memory "
            f"of other sizes",
            f"         cached {fmt_bytes(c.bytes_cached)} of cap {fmt_bytes(c.cap_bytes)} "
            f"(peak {fmt_bytes(c.peak_bytes_cached)}), peak in use {fmt_bytes(c.peak_bytes_in_use)}, "
            f"peak mapped {fmt_bytes(c.peak_bytes_mapped)}, {c.evictions} evictions ({fmt_bytes(c.evicted_bytes)})",
            f"  process: {r.minor_faults} minor and {r.major_faults} major page faults "
            f"({self.counters_source}), peak RSS {fmt_bytes(r.peak_rss_bytes)}",
        ]
        if c.budget_refusals:
            budget = (f"the process budget ({fmt_bytes(c.budget_bytes)}, ZKALLOC_BUDGET / configure(budget=...))"
                      if c.budget_bytes else "a phase's budget")
            lines.append(f"  budget: {c.budget_refusals} request(s) refused by {budget}: numpy raised MemoryError "
                         "for each")
        if c.calloc_fresh or c.calloc_memset or c.calloc_discard:
            lines.append(f"  np.zeros: {c.calloc_fresh} fresh (already zero), {c.calloc_memset} memset, "
                         f"{c.calloc_discard} discarded (MADV_DONTNEED)")
        if c.classes:
            lines.append(f"  {'class':>12} {'hits':>8} {'misses':>7} {'served':>12} {'missed':>12}")
            shown = sorted(c.classes, key=lambda k: k.bytes_served + k.bytes_missed, reverse=True)
            for k in sorted(shown[:REPORT_CLASSES], key=lambda k: k.bytes):
                lines.append(f"  {fmt_bytes(k.bytes):>12} {k.hits:>8} {k.misses:>7} {fmt_bytes(k.bytes_served):>12} "
                             f"{fmt_bytes(k.bytes_missed):>12}")
            if len(shown) > REPORT_CLASSES:
                lines.append(f"  ... {len(shown) - REPORT_CLASSES} more classes (all of them in --json)")
        if c.small_allocs:
            top = sorted(c.small_allocs_by_size.items(), key=lambda kv: kv[1], reverse=True)[:4]
            sizes = ", ".join(f"{n} of {size_range(low)}" for low, n in top)
            lines.append(f"  left to numpy: {c.small_allocs} requests below min_bytes ({fmt_bytes(c.min_bytes)}), "
                         f"most often {sizes}")
        if c.foreign_frees:
            lines.append(f"  {c.foreign_frees} frees of arrays from before the install, passed to numpy")
        if self.exit_code == 0:   # a program that failed here would fail under compare too
            lines.append("  does zkalloc make this program faster? measure it: "
                         f"python -m zkalloc_np compare {shlex.join(self.command)}")
        return lines


def build_report(command: Sequence[str], exit_code: int, resources: Resources, source: str,
                 stats: tuple[Stats, Stats], budget_bytes: int = 0, children: Children | None = None) -> RunReport:
    """Combine the measurements into the report (pure, for testing):
    `resources` is the program's process over the run, `stats` the cache's
    snapshots before and after, `children` what the other processes reported."""
    own = cache_activity(stats[0], stats[1], budget_bytes)
    if children is None:
        return RunReport(list(command), exit_code, resources, source, own)
    return RunReport(list(command), exit_code, resources, source, add([own, children.cache]),
                     Processes(1 + children.covered, children.not_covered, children.user_s, children.system_s))


@dataclass(frozen=True)
class CrashReport:
    """What ``run`` reports when the program was killed by a signal: only what
    its parent measured from outside (os.wait4).  The cache's counters lived
    in the program's memory and died with it (``cache`` is None in the JSON)."""

    command: list[str]
    signal: int
    signal_name: str
    resources: Resources
    counters_source: str = FROM_WAIT4
    exit_code: int | None = None
    cache: None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain dict, ready for json.dumps."""
        return asdict(self)

    def __str__(self) -> str:
        r = self.resources
        return "\n".join([
            f"zkalloc run: {' '.join(self.command)}: killed by signal {self.signal} ({self.signal_name}) after "
            f"{r.wall_s:.2f} s wall ({r.user_s:.2f} s user, {r.system_s:.2f} s system)",
            f"  process: {r.minor_faults} minor and {r.major_faults} major page faults, peak RSS "
            f"{fmt_bytes(r.peak_rss_bytes)} (measured from outside the program, by os.wait4)",
            "  cache: no counters: they were in the program's memory and died with it",
        ])


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


def _supervise(command: Sequence[str], json_path: str | None, out: TextIO, quiet: bool, folder: str) -> None:
    """Fork.  The child returns at once and runs the program.  The parent waits
    for it (`process.watch`, forwarding signals as time(1) does) and never
    returns: it exits with the child's status, after a `CrashReport` when the
    child was killed by a signal."""
    sys.stdout.flush()
    sys.stderr.flush()
    start = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        return
    ended = watch(pid, start, kill=lambda child: os.kill(child, signal.SIGKILL), forward_signals=True)
    shutil.rmtree(folder, ignore_errors=True)   # the child's, left behind when it was killed
    if ended.signal is None:
        os._exit(ended.exit_code or 0)
    report = CrashReport(command=list(command), signal=ended.signal, signal_name=signal_name(ended.signal),
                         resources=ended.resources)
    try:
        if not quiet:
            print(report, file=out, flush=True)
        if json_path is not None:
            _write_json(report, json_path, out)
    finally:
        _die_by(ended.signal)


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


def check_json_path(path: str, option: str = "--json") -> str | None:
    """Why `option`'s file cannot be written to `path` (a short message), or None."""
    if os.path.isdir(path):
        return f"{option} {path}: is a directory"
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return f"{option} {path}: the folder {folder} does not exist"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"{option} {path}: the folder {folder} is not writable"
    if os.path.exists(path) and not os.access(path, os.W_OK):
        return f"{option} {path}: the file is not writable"
    return None


def _write_json(report: RunReport | CrashReport, path: str, err: TextIO) -> None:
    try:
        with open(path, "w") as f:
            json.dump(report.as_dict(), f, indent=2)
    except OSError as exc:   # checked before the run; the folder may have gone since
        print(f"python -m zkalloc_np run: could not write --json {path}: {exc.strerror or exc}", file=err)


def _write_timeline(timeline: Timeline, json_path: str | None, plot_path: str | None, err: TextIO) -> None:
    try:
        if json_path is not None:
            timeline.write(json_path)
        if plot_path is not None:
            plot(timeline.as_dict(), plot_path)
    except OSError as exc:   # checked before the run; the folder may have gone since
        print(f"python -m zkalloc_np run: could not write the timeline: {exc}", file=err)


def run(target: str, args: Sequence[str], *, module: bool = False, json_path: str | None = None,
        stream: TextIO | None = None, quiet: bool = False, supervise: bool = False, peak: bool = False,
        timeline_path: str | None = None, plot_path: str | None = None,
        interval: float = DEFAULT_INTERVAL) -> int:
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
    timeline_path, plot_path: sample the program's memory every `interval`
    seconds, with its phases, into a JSON file and/or a picture (cli/timeline.py).
    """
    import zkalloc_np
    from .._log import log_activity
    from .._settings import current

    if not module and not os.path.isfile(target):
        raise FileNotFoundError(f"can't open file {target!r}: no such file")
    command = (["-m", target] if module else [target]) + list(args)
    out = stream if stream is not None else sys.stderr
    folder = tempfile.mkdtemp(prefix="zkalloc-run-")   # the other processes' reports (children.py)
    if supervise:
        _supervise(command, json_path, out, quiet, folder)
    sys.argv = [target, *args]
    if not module:
        sys.path[0] = os.path.dirname(os.path.abspath(target))
    stats0, (own0, source) = zkalloc_np.stats(), read_own()
    exit_code = 1
    if peak:
        _core.track_process(True)
    zkalloc_np.install()
    switch = os.environ.get(_children.SWITCH)
    _children.watch_forks(folder)
    timeline = None
    if timeline_path is not None or plot_path is not None:
        timeline = Timeline(interval, command)
        timeline.start()
        progress(timeline, lambda line: print(f"zkalloc run: {line}", file=out, flush=True))
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
        if timeline is not None:
            timeline.stop()
            _write_timeline(timeline, timeline_path, plot_path, out)
        own1, _ = read_own()
        stats1 = zkalloc_np.stats()
        _children.stop(switch)
        children = _children.collect(folder, exclude_pid=os.getpid())
        shutil.rmtree(folder, ignore_errors=True)
        report = build_report(command, exit_code, own1.since(own0), source, (stats0, stats1), current()["budget"],
                              children)
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
