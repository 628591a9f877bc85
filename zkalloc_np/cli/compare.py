"""``python -m zkalloc_np compare``: does zkalloc help this program?  Measured.

The unmodified program runs in fresh processes, ``runs`` times under each
allocator, the allocators alternating (the order reversed on every other
round) so that all of them see the same machine:

- ``default``: numpy's default allocator, the program as it is;
- ``zkalloc``: the process-wide install, as ``python -m zkalloc_np run``;
- ``glibc-tuned``, ``tcmalloc``, ``jemalloc``, ``mimalloc``: the peers of
  zkalloc_np.cli.peers (environment variables or LD_PRELOAD), where installed.

Each child is timed from outside: wall time around it, and its user and
system time, minor and major faults and peak RSS from os.wait4().  A run
that exits non-zero, is killed or times out is recorded as failed, with its
exit code and the last line of its stderr, and is not timed.  The zkalloc
child writes its cache counters to a temporary JSON file at exit (``run
--quiet --json``).

Failures that would only repeat are not repeated: when the baseline's first
run fails, or the baseline fails the same way twice (the same exit status
and the same last line of stderr), compare stops there, since there is
nothing to compare against.  Another allocator that fails the same way twice
is not run again; the others carry on.

The verdict against numpy's default comes from the spreads (see verdict()).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from .. import _verdict
from .._verdict import FASTER, SAME, SLOWER, TOO_FEW  # noqa: F401  (compare's verdict words)
from . import peers, sanitizer
from .process import Ended, Resources, watch

BASELINE = "default"
ZKALLOC = "zkalloc"
#: Every allocator compare knows, in the order it runs them.
ALLOCATORS: tuple[str, ...] = (BASELINE, ZKALLOC, *peers.PEERS)
#: A verdict needs at least this many good runs on each side.
MIN_RUNS_FOR_VERDICT = _verdict.MIN_RUNS

FAILED = "failed"
NOT_RUN = "not run"


def verdict(baseline: Sequence[float], other: Sequence[float], min_runs: int = MIN_RUNS_FOR_VERDICT) -> str:
    """Faster, slower, or no difference, from the min-max spreads of wall
    times: the shared rule of zkalloc_np._verdict (the ranges must not overlap),
    TOO_FEW with fewer than `min_runs` runs on either side."""
    return _verdict.verdict(_verdict.Samples(baseline), _verdict.Samples(other), min_runs=min_runs).word


@dataclass(frozen=True)
class Program:
    """What to run: a script path or a module name, and its arguments."""

    target: str
    args: tuple[str, ...]
    module: bool = False

    def argv(self) -> list[str]:
        """The program as Python's command line gives it."""
        return (["-m", self.target] if self.module else [self.target]) + list(self.args)


@dataclass(frozen=True)
class RunRecord:
    """One run of the program under one allocator."""

    allocator: str
    round: int
    ok: bool
    exit_code: int | None          # None when killed by a signal
    signal: int | None
    timed_out: bool
    resources: Resources
    zkalloc: dict[str, Any] | None = None   # hits, misses, hit_rate, bytes_served_from_cache (zkalloc runs)
    stderr_tail: str = ""                   # the last non-empty line the run wrote to stderr

    @property
    def failure_key(self) -> tuple[str, str]:
        """What makes two failures the same: the failure and the last line of stderr."""
        return self.failure, self.stderr_tail

    @property
    def failure(self) -> str:
        """Why the run failed ('' when it did not)."""
        return Ended(self.exit_code, self.signal, self.timed_out, self.resources).failure


@dataclass(frozen=True)
class Spread:
    """Median and min-max of one measure over the good runs."""

    median: float
    low: float
    high: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread | None:
        return cls(statistics.median(values), min(values), max(values)) if values else None


@dataclass(frozen=True)
class Summary:
    """One allocator over all its runs."""

    allocator: str
    runs_ok: int
    runs_failed: int
    failures: list[str]
    wall_s: Spread | None
    user_s: Spread | None
    system_s: Spread | None
    minor_faults: Spread | None
    major_faults: Spread | None
    peak_rss_bytes: Spread | None
    speedup: float | None          # default's median wall / this one's
    verdict: str                   # against numpy's default
    hit_rate: Spread | None = None
    bytes_served_from_cache: Spread | None = None


def summarize(records: Sequence[RunRecord], allocators: Sequence[str]) -> dict[str, Summary]:
    """Per allocator: spreads of the good runs, and the verdict against the baseline (pure)."""
    good = {a: [r for r in records if r.allocator == a and r.ok] for a in allocators}
    base_walls = [r.resources.wall_s for r in good.get(BASELINE, [])]
    out: dict[str, Summary] = {}
    for name in allocators:
        ok = good[name]
        bad = [r for r in records if r.allocator == name and not r.ok]
        walls = [r.resources.wall_s for r in ok]
        wall = Spread.of(walls)
        base = Spread.of(base_walls)
        if not ok and not bad:
            decided = NOT_RUN
        elif not ok:
            decided = FAILED
        elif name == BASELINE:
            decided = "(baseline)"
        elif not base_walls:
            decided = "no baseline: every default run failed"
        else:
            decided = verdict(base_walls, walls)
        zk = [r.zkalloc for r in ok if r.zkalloc is not None]
        out[name] = Summary(
            allocator=name, runs_ok=len(ok), runs_failed=len(bad), failures=[r.failure for r in bad],
            wall_s=wall, user_s=Spread.of([r.resources.user_s for r in ok]), system_s=Spread.of([r.resources.system_s for r in ok]),
            minor_faults=Spread.of([r.resources.minor_faults for r in ok]),
            major_faults=Spread.of([r.resources.major_faults for r in ok]),
            peak_rss_bytes=Spread.of([r.resources.peak_rss_bytes for r in ok]),
            speedup=base.median / wall.median if base and wall and wall.median > 0 else None,
            verdict=decided,
            hit_rate=Spread.of([z["hit_rate"] for z in zk]) if zk else None,
            bytes_served_from_cache=Spread.of([z["bytes_served_from_cache"] for z in zk]) if zk else None,
        )
    return out


def plan(allocators: Sequence[str], runs: int) -> list[tuple[int, str]]:
    """(round, allocator) in run order: every allocator once per round, the
    order reversed on every other round."""
    order: list[tuple[int, str]] = []
    for i in range(runs):
        order += [(i, a) for a in (allocators if i % 2 == 0 else list(reversed(allocators)))]
    return order


def resolve(names: Sequence[str], cache: dict[str, str] | None = None) -> tuple[dict[str, dict[str, str]], dict[str, str]]:
    """The environment each allocator's child needs, and the ones skipped
    (a missing library, with the apt-get line that installs it)."""
    found, skipped = peers.environments({n: peers.PEERS[n] for n in names if n in peers.PEERS}, cache)
    return {n: found.get(n, {}) for n in names if n not in skipped}, skipped


def child_command(program: Program, allocator: str, stats_json: str) -> list[str]:
    """The command line of one run: the program as it is, or under ``run``."""
    if allocator == ZKALLOC:
        return [sys.executable, "-m", "zkalloc_np", "run", "--quiet", "--json", stats_json, *program.argv()]
    return [sys.executable, *program.argv()]


def _relay(source: Any, sink: Any, tail: deque[bytes]) -> None:
    """Copy the child's stderr to ours as it comes, keeping its last lines."""
    for line in iter(source.readline, b""):
        with contextlib.suppress(OSError, ValueError):
            sink.write(line)
            sink.flush()
        if line.strip():
            tail.append(line)
    source.close()


def run_once(program: Program, allocator: str, env: dict[str, str], round_: int, *,
             timeout: float | None, discard_output: bool, workdir: str) -> RunRecord:
    """Run the program once in a fresh process (its own process group),
    measured by `process.watch`; killed with its children after `timeout` s.
    Its stderr is passed on as it comes, and its last line kept."""
    stats_json = os.path.join(workdir, f"zkalloc-{allocator}-{round_}.json")
    full_env = sanitizer.child_environment(env)   # the parent's preload goes, a sanitizer runtime stays first
    cmd = child_command(program, allocator, stats_json)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=full_env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL if discard_output else None, stderr=subprocess.PIPE,
                            start_new_session=True)
    tail: deque[bytes] = deque(maxlen=4)
    sink = getattr(sys.stderr, "buffer", None)
    relay = threading.Thread(target=_relay, args=(proc.stderr, sink if sink is not None else _TextSink(sys.stderr),
                                                  tail), daemon=True)
    relay.start()
    try:
        ended = watch(proc.pid, start, timeout=timeout)
    finally:
        proc.returncode = -1   # reaped by watch: Popen must not wait for it again
    relay.join(timeout=5)   # a grandchild may hold the pipe open; its lines then come later
    zk = None
    if allocator == ZKALLOC and os.path.exists(stats_json):
        with open(stats_json) as f:
            report = json.load(f)
        if report.get("cache"):   # not after a death by signal: the cache's counters died with the child
            zk = {k: report["cache"][k] for k in ("hits", "misses", "hit_rate", "bytes_served_from_cache",
                                                  "bytes_newly_mapped")}
            zk["processes"] = report["processes"]["covered"]
    last = tail[-1].decode(errors="replace").strip() if tail else ""
    return RunRecord(allocator=allocator, round=round_, ok=ended.ok, exit_code=ended.exit_code, signal=ended.signal,
                     timed_out=ended.timed_out, resources=ended.resources, zkalloc=zk, stderr_tail=last)


class _TextSink:
    """A bytes writer over a text stream (a stderr replaced by one without .buffer)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, data: bytes) -> None:
        self.stream.write(data.decode(errors="replace"))

    def flush(self) -> None:
        self.stream.flush()


@contextlib.contextmanager
def _workdir() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="zkalloc-compare-") as d:
        yield d


@dataclass(frozen=True)
class Comparison:
    """Everything compare measured; ``as_dict()`` is what ``--json`` writes."""

    command: list[str]
    runs_per_allocator: int
    timeout_s: float | None
    allocators: list[str]
    skipped: dict[str, str]
    machine: dict[str, Any]
    records: list[RunRecord]
    summary: dict[str, Summary]
    stopped: str | None = None                                # why compare stopped early (the baseline failed)
    dropped: dict[str, str] = dataclasses.field(default_factory=dict)   # allocator -> why it was not run again

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["verdict_rule"] = (f"faster/slower: the min-max ranges of wall time do not overlap, with at least "
                             f"{MIN_RUNS_FOR_VERDICT} good runs each; otherwise no difference within the noise")
        return d

    def exit_code(self) -> int:
        """0 when every run succeeded; else the first failed run's exit code
        (1 when it was killed or timed out)."""
        for r in self.records:
            if not r.ok:
                return r.exit_code if r.exit_code else 1
        return 0


def _failure_text(record: RunRecord) -> str:
    return record.failure + (f": {record.stderr_tail}" if record.stderr_tail else "")


def compare(program: Program, allocators: Sequence[str], runs: int, *, timeout: float | None = None,
            discard_output: bool = False, progress: Callable[[str], None] = lambda line: None,
            cache: dict[str, str] | None = None,
            resolved: tuple[dict[str, dict[str, str]], dict[str, str]] | None = None) -> Comparison:
    """Run the program `runs` times under each allocator (skipping missing
    peers; `resolved` is what resolve() returned, when the caller asked it
    already) and summarize.  `progress` gets one line per run.

    Stops when the baseline's first run fails, or the baseline fails the same
    way twice (`RunRecord.failure_key`); another allocator that fails the same
    way twice is not run again."""
    from .._system import machine
    envs, skipped = resolved if resolved is not None else resolve(allocators, cache)
    active = [a for a in allocators if a in envs]
    order = plan(active, runs)
    records: list[RunRecord] = []
    dropped: dict[str, str] = {}
    stopped: str | None = None
    with _workdir() as workdir:
        for n, (round_, name) in enumerate(order, 1):
            if name in dropped:
                continue
            record = run_once(program, name, envs[name], round_, timeout=timeout,
                              discard_output=discard_output, workdir=workdir)
            earlier = [r for r in records if r.allocator == name]
            records.append(record)
            what = f"{record.resources.wall_s:.2f} s" if record.ok else f"FAILED ({record.failure})"
            progress(f"run {n}/{len(order)}: {name}, round {round_ + 1}/{runs}: {what}")
            if record.ok:
                continue
            twice = any(not r.ok and r.failure_key == record.failure_key for r in earlier)
            if name == BASELINE and (not earlier or twice):
                which = "its first run" if not earlier else "the same way twice"
                stopped = (f"numpy's default (the baseline) failed {which}, {_failure_text(record)}; "
                           "nothing to compare against, so compare stopped there")
                break
            if twice:
                dropped[name] = f"not run again after failing the same way twice ({_failure_text(record)})"
    return Comparison(command=program.argv(), runs_per_allocator=runs, timeout_s=timeout, allocators=active,
                      skipped=skipped, machine=machine(), records=records, summary=summarize(records, active),
                      stopped=stopped, dropped=dropped)


# ---- output ------------------------------------------------------------------

COLUMNS = ("allocator", "runs ok", "wall s", "user s", "sys s", "minor faults", "major faults", "peak RSS MiB",
           "vs default", "verdict", "zkalloc hit rate, served")


def _spread(s: Spread | None, fmt: Callable[[float], str]) -> str:
    if s is None:
        return "-"
    return fmt(s.median) if fmt(s.low) == fmt(s.high) else f"{fmt(s.median)} ({fmt(s.low)}-{fmt(s.high)})"


def _count(v: float) -> str:
    return f"{v / 1000:.1f}k" if v >= 10_000 else f"{v:.0f}"


def _mib(n: float) -> str:
    return f"{n / 2**20:.0f}"


def rows(c: Comparison) -> list[list[str]]:
    """The table's cells: medians with (min-max) spreads."""
    out = []
    for name in c.allocators:
        s = c.summary[name]
        runs = f"{s.runs_ok}/{s.runs_ok + s.runs_failed}"
        zk = ""
        if s.hit_rate is not None and s.bytes_served_from_cache is not None:
            zk = f"{s.hit_rate.median:.1%}, {_mib(s.bytes_served_from_cache.median)} MiB"
        out.append([name, runs, _spread(s.wall_s, lambda v: f"{v:.2f}"), _spread(s.user_s, lambda v: f"{v:.2f}"),
                    _spread(s.system_s, lambda v: f"{v:.2f}"), _spread(s.minor_faults, _count),
                    _spread(s.major_faults, _count), _spread(s.peak_rss_bytes, _mib),
                    f"{s.speedup:.2f}x" if s.speedup is not None and name != BASELINE else "",
                    s.verdict, zk])
    return out


def render(c: Comparison, out: TextIO) -> None:
    """The table (rich where installed, plain columns otherwise), the
    failures and the machine; when compare stopped early, only why."""
    from .._system import describe
    if c.stopped is not None:
        print(f"{' '.join(c.command)}: {c.stopped}.", file=out)
        print(f"Its output is above. Check that the command runs as it is (python {shlex.join(c.command)}), "
              "then compare again.", file=out)
        return
    print(f"{' '.join(c.command)}: {c.runs_per_allocator} run(s) per allocator, alternating; "
          "median (min-max) over the good runs of each allocator", file=out)
    cells = rows(c)
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(r[i]) for r in [list(COLUMNS), *cells]) for i in range(len(COLUMNS))]
        for r in [list(COLUMNS), *cells]:
            print("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip(), file=out)
    else:
        table = Table()
        for col in COLUMNS:
            table.add_column(col, justify="left" if col in (COLUMNS[0], COLUMNS[-2], COLUMNS[-1]) else "right",
                             no_wrap=col != COLUMNS[-2])
        for r in cells:
            table.add_row(*r)
        console = Console(file=out, width=None if out.isatty() else 240)
        console.print(table)
    for name in c.allocators:
        s = c.summary[name]
        if s.failures:
            last = next((r.stderr_tail for r in reversed(c.records) if r.allocator == name and not r.ok
                         and r.stderr_tail), "")
            print(f"{name}: {s.runs_failed} failed run(s), not timed: {', '.join(s.failures)}"
                  + (f"; last line of stderr: {last}" if last else ""), file=out)
        if name in c.dropped:
            print(f"{name}: {c.dropped[name]}", file=out)
    for name, why in c.skipped.items():
        print(f"{name}: skipped, {why}", file=out)
    print(f"verdict: against numpy's default; faster/slower only when the min-max ranges of wall time do not "
          f"overlap (at least {MIN_RUNS_FOR_VERDICT} good runs each)", file=out)
    print(f"machine: {describe(c.machine)}", file=out)
