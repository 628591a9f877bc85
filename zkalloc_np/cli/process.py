"""One process supervisor and one record of what a process cost.

`Resources` is what every command reports about a process: wall, user and
system time, minor and major page faults, and peak RSS.  `run` measures its
own process with `read_own` (before and after, `since` gives the run's share);
`run`'s crash report measures a child from outside with `watch`, which waits
for it with ``os.wait4``; `compare` and the whole-program benchmark
(bench.wholeprog) start theirs with `supervise`, which also samples the
machine around the run (`sample_machine`, `load_during`).
"""
from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .._verdict import Load

#: Where `read_own` found the counters, as the reports name it.
FROM_PROC = "/proc/self/stat"
FROM_GETRUSAGE = "getrusage"
FROM_WAIT4 = "os.wait4 (the parent of the program's process)"


@dataclass(frozen=True)
class Resources:
    """What a process (or a stretch of one) cost.  ``peak_rss_bytes`` is the
    process's peak since it started (the kernel keeps no other)."""

    wall_s: float
    user_s: float
    system_s: float
    minor_faults: int
    major_faults: int
    peak_rss_bytes: int

    @property
    def cpu_s(self) -> float:
        """User plus system time: what a loaded machine changes least."""
        return self.user_s + self.system_s

    @classmethod
    def from_rusage(cls, usage: Any, wall_s: float) -> Resources:
        """From a ``resource.struct_rusage`` (getrusage, os.wait4)."""
        return cls(wall_s, usage.ru_utime, usage.ru_stime, usage.ru_minflt, usage.ru_majflt, usage.ru_maxrss * 1024)

    def since(self, earlier: Resources) -> Resources:
        """The cost between `earlier` and this reading of the same process."""
        return Resources(self.wall_s - earlier.wall_s, self.user_s - earlier.user_s,
                         self.system_s - earlier.system_s, self.minor_faults - earlier.minor_faults,
                         self.major_faults - earlier.major_faults, self.peak_rss_bytes)


def read_own() -> tuple[Resources, str]:
    """This process now (all threads): faults and CPU times from
    /proc/self/stat where readable, else getrusage; wall is time.perf_counter()
    (only differences mean anything); and where they came from."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    now = time.perf_counter()
    try:
        with open("/proc/self/stat", "rb") as f:
            text = f.read().decode()
        fields = text[text.rindex(")") + 2:].split()
        # fields[0] is field 3 (state): minflt=10, majflt=12, utime=14, stime=15
        ticks = os.sysconf("SC_CLK_TCK")
        return Resources(now, int(fields[11]) / ticks, int(fields[12]) / ticks, int(fields[7]), int(fields[9]),
                         peak), FROM_PROC
    except (OSError, ValueError, IndexError):
        return Resources.from_rusage(resource.getrusage(resource.RUSAGE_SELF), now), FROM_GETRUSAGE


@dataclass(frozen=True)
class Ended:
    """How a watched child ended, and what it cost."""

    exit_code: int | None        # None when killed by a signal
    signal: int | None
    timed_out: bool
    resources: Resources

    @property
    def ok(self) -> bool:
        """Exit 0, in time."""
        return self.exit_code == 0 and not self.timed_out

    @property
    def failure(self) -> str:
        """Why the child failed ('' when it did not)."""
        if self.timed_out:
            return "timed out"
        if self.signal is not None:
            return f"killed by signal {self.signal} ({signal_name(self.signal)})"
        if self.exit_code:
            return f"exit {self.exit_code}"
        return ""


def signal_name(sig: int) -> str:
    """SIGKILL for 9; 'signal 99' for a number without a name."""
    try:
        return signal.Signals(sig).name
    except ValueError:
        return f"signal {sig}"


def kill_group(pid: int) -> None:
    """SIGKILL the process group `pid` leads (a child started in its own session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def watch(pid: int, start: float, *, timeout: float | None = None,
          kill: Callable[[int], None] = kill_group, forward_signals: bool = False) -> Ended:
    """Wait for the child `pid`, started at time.perf_counter() `start`, and
    measure it with os.wait4.  After `timeout` seconds `kill(pid)` ends it and
    it counts as timed out.  An exception here (Ctrl-C) kills it too.

    forward_signals: like time(1), ignore SIGINT and SIGQUIT while waiting (the
    terminal sends them to the child too) and pass SIGTERM and SIGHUP on to
    the child; the handlers are put back after."""
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        kill(pid)

    saved: dict[int, Any] = {}
    if forward_signals:
        for ignored in (signal.SIGINT, signal.SIGQUIT):
            saved[ignored] = signal.signal(ignored, signal.SIG_IGN)
        for forwarded in (signal.SIGTERM, signal.SIGHUP):
            saved[forwarded] = signal.signal(forwarded, lambda received, _frame: os.kill(pid, received))
    timer = threading.Timer(timeout, expire) if timeout else None
    if timer is not None:
        timer.start()
    try:
        _, status, usage = os.wait4(pid, 0)   # retried after a forwarded signal (PEP 475)
    except BaseException:
        kill(pid)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        raise
    finally:
        if timer is not None:
            timer.cancel()
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    return Ended(exit_code=code if code >= 0 else None, signal=-code if code < 0 else None,
                 timed_out=expired.is_set(), resources=Resources.from_rusage(usage, wall))


@dataclass(frozen=True)
class MachineSample:
    """The whole machine's CPU counters (/proc/stat's first line, in clock
    ticks) and its 1-minute load average, at one moment."""

    busy: int
    steal: int
    total: int
    load_avg: float


def sample_machine() -> MachineSample | None:
    """The machine now (None where /proc/stat is unreadable)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        load_avg = os.getloadavg()[0]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)   # idle + iowait
    steal = fields[7] if len(fields) > 7 else 0
    total = sum(fields[:8])
    return MachineSample(busy=total - idle - steal, steal=steal, total=total, load_avg=load_avg)


def load_during(before: MachineSample | None, after: MachineSample | None, wall_s: float, own_cpu_s: float) -> Load:
    """How busy the rest of the machine was between two samples, during a
    run that took `wall_s` and used `own_cpu_s` of CPU itself."""
    cores = os.cpu_count() or 1
    if before is None or after is None or after.total <= before.total or wall_s <= 0:
        return Load(0.0, 0.0, 0.0, cores)
    busy_s = (after.busy - before.busy) / os.sysconf("SC_CLK_TCK")
    return Load(others_cores=max(0.0, (busy_s - own_cpu_s) / wall_s),
                steal_share=(after.steal - before.steal) / (after.total - before.total),
                load_avg=max(before.load_avg, after.load_avg), cores=cores)


@dataclass(frozen=True)
class Supervised:
    """A child watched to its end by `supervise`, and the machine sampled
    just before it started and just after it ended."""

    ended: Ended
    before: MachineSample | None
    after: MachineSample | None

    @property
    def load(self) -> Load:
        """How busy the rest of the machine was during the run."""
        spent = self.ended.resources
        return load_during(self.before, self.after, spent.wall_s, spent.cpu_s)


def supervise(argv: Sequence[str], *, timeout: float | None,
              started: Callable[[subprocess.Popen[bytes]], None] = lambda proc: None, **popen: Any) -> Supervised:
    """Run `argv` in a fresh process in its own session (``popen``: Popen's
    other arguments), call `started` with it (to read its pipes), and `watch`
    it to its end: killed with its process group after `timeout` seconds."""
    before = sample_machine()
    start = time.perf_counter()
    proc = subprocess.Popen(list(argv), start_new_session=True, **popen)
    try:
        started(proc)
    except BaseException:
        kill_group(proc.pid)
        proc.wait()
        raise
    try:
        ended = watch(proc.pid, start, timeout=timeout)
    finally:
        proc.returncode = -1   # reaped by watch: Popen must not wait for it again
    return Supervised(ended, before, sample_machine())
