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

The verdict against numpy's default is zkalloc_np._verdict.judge: wall
time, CPU time and faults, and the machine's load sampled around each run
(`process.supervise`).  The program's output is not shown unless asked
(``--show-output``); the table fits 100 columns.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from .. import _verdict
from .._verdict import FASTER, SAME, SLOWER, TOO_FEW, WITHHELD, Load, Samples, judge  # noqa: F401  (verdict words)
from . import peers, sanitizer
from .children import SWITCH
from .process import Ended, Resources, supervise

BASELINE = "default"
ZKALLOC = "zkalloc"
#: Every allocator compare knows, in the order it runs them.
ALLOCATORS: tuple[str, ...] = (BASELINE, ZKALLOC, *peers.PEERS)

FAILED = "failed"
NOT_RUN = "not run"
#: The lines of a run's stderr kept (shown when it fails, the last one in the report).
TAIL_LINES = 4
#: The verdict rule in words (the table's footnote and the JSON).
VERDICT_RULE = (f"faster/slower when the min-max ranges of wall time do not overlap (at least {_verdict.MIN_RUNS} "
                f"good runs each); when other processes kept >= {_verdict.LOADED_OTHERS_CORES} core busy or "
                f">= {_verdict.LOADED_STEAL_SHARE:.0%} of CPU time was stolen, CPU time (user+sys) decides instead, "
                f"apart by a {_verdict.LOADED_CPU_MARGIN:.0%} margin, and the verdict is withheld when it is not")


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
    load: Load | None = None                # how busy the rest of the machine was during the run

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
    cpu_s: Spread | None = None    # user + system
    reason: str = ""               # why the verdict (measures, ranges, the machine's load)
    processes: int = 1             # zkalloc: the processes covered (the program's and its Python children)


def samples(records: Sequence[RunRecord]) -> Samples:
    """The verdict's samples of some runs: wall, CPU (user+sys) and minor faults."""
    return Samples([r.resources.wall_s for r in records], [r.resources.cpu_s for r in records],
                   [r.resources.minor_faults for r in records])


def machine_load(records: Sequence[RunRecord]) -> Load | None:
    """The busiest the machine was during any of the runs (None: not measured)."""
    return Load.worst([r.load for r in records if r.load is not None])


def summarize(records: Sequence[RunRecord], allocators: Sequence[str]) -> dict[str, Summary]:
    """Per allocator: spreads of the good runs, and the verdict against the
    baseline (zkalloc_np._verdict.judge: wall, CPU and faults, and the
    machine's load during the runs) (pure)."""
    good = {a: [r for r in records if r.allocator == a and r.ok] for a in allocators}
    base_runs = good.get(BASELINE, [])
    load = machine_load(records)
    out: dict[str, Summary] = {}
    for name in allocators:
        ok = good[name]
        bad = [r for r in records if r.allocator == name and not r.ok]
        wall = Spread.of([r.resources.wall_s for r in ok])
        base = Spread.of([r.resources.wall_s for r in base_runs])
        reason = ""
        if not ok and not bad:
            decided = NOT_RUN
        elif not ok:
            decided = FAILED
        elif name == BASELINE:
            decided = "(baseline)"
        elif not base_runs:
            decided = "no baseline: every default run failed"
        else:
            judged = judge(samples(base_runs), samples(ok), load)
            decided, reason = judged.word, judged.reason
        zk = [r.zkalloc for r in ok if r.zkalloc is not None]
        out[name] = Summary(
            allocator=name, runs_ok=len(ok), runs_failed=len(bad), failures=[r.failure for r in bad],
            wall_s=wall, user_s=Spread.of([r.resources.user_s for r in ok]),
            system_s=Spread.of([r.resources.system_s for r in ok]),
            minor_faults=Spread.of([r.resources.minor_faults for r in ok]),
            major_faults=Spread.of([r.resources.major_faults for r in ok]),
            peak_rss_bytes=Spread.of([r.resources.peak_rss_bytes for r in ok]),
            speedup=base.median / wall.median if base and wall and wall.median > 0 else None,
            verdict=decided,
            hit_rate=Spread.of([z["hit_rate"] for z in zk]) if zk else None,
            bytes_served_from_cache=Spread.of([z["bytes_served_from_cache"] for z in zk]) if zk else None,
            cpu_s=Spread.of([r.resources.cpu_s for r in ok]), reason=reason,
            processes=max((z.get("processes", 1) for z in zk), default=1),
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
    """Read the child's stderr as it comes, keeping its last lines, and copy
    it to `sink` (None: shown nowhere)."""
    for line in iter(source.readline, b""):
        if sink is not None:
            with contextlib.suppress(OSError, ValueError):
                sink.write(line)
                sink.flush()
        if line.strip():
            tail.append(line)
    source.close()


def run_once(program: Program, allocator: str, env: dict[str, str], round_: int, *,
             timeout: float | None, show_output: bool, workdir: str) -> RunRecord:
    """Run the program once in a fresh process (its own process group),
    measured by `process.supervise`; killed with its children after `timeout` s.
    Its output is shown only with `show_output` (stderr as it comes); the
    last line of its stderr is kept either way."""
    stats_json = os.path.join(workdir, f"zkalloc-{allocator}-{round_}.json")
    full_env = sanitizer.child_environment(env)   # the parent's preload goes, a sanitizer runtime stays first
    full_env.pop(SWITCH, None)   # a switch set here must not reach the baseline or a peer (run sets its own)
    tail: deque[bytes] = deque(maxlen=TAIL_LINES)
    sink = (getattr(sys.stderr, "buffer", None) or _TextSink(sys.stderr)) if show_output else None
    relays: list[threading.Thread] = []

    def relay(proc: subprocess.Popen[bytes]) -> None:
        relays.append(threading.Thread(target=_relay, args=(proc.stderr, sink, tail), daemon=True))
        relays[0].start()

    run = supervise(child_command(program, allocator, stats_json), timeout=timeout, started=relay, env=full_env,
                    stdin=subprocess.DEVNULL, stdout=None if show_output else subprocess.DEVNULL,
                    stderr=subprocess.PIPE)
    ended = run.ended
    relays[0].join(timeout=5)   # a grandchild may hold the pipe open; its lines then come later
    zk = None
    if allocator == ZKALLOC and os.path.exists(stats_json):
        with open(stats_json) as f:
            report = json.load(f)
        if report.get("cache"):   # not after a death by signal: the cache's counters died with the child
            zk = {k: report["cache"][k] for k in ("hits", "misses", "hit_rate", "bytes_served_from_cache",
                                                  "bytes_newly_mapped")}
            zk["processes"] = report["processes"]["covered"]
    last = tail[-1].decode(errors="replace").strip() if tail else ""
    if not show_output and not ended.ok and tail:   # a failure's own words, though its output is not shown
        print("".join(line.decode(errors="replace") for line in tail), end="", file=sys.stderr, flush=True)
    return RunRecord(allocator=allocator, round=round_, ok=ended.ok, exit_code=ended.exit_code, signal=ended.signal,
                     timed_out=ended.timed_out, resources=ended.resources, zkalloc=zk, stderr_tail=last, load=run.load)


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
        d["verdict_rule"] = VERDICT_RULE
        d["load"] = dataclasses.asdict(load) if (load := machine_load(self.records)) is not None else None
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
            show_output: bool = False, progress: Callable[[str], None] = lambda line: None,
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
                              show_output=show_output, workdir=workdir)
            earlier = [r for r in records if r.allocator == name]
            records.append(record)
            what = f"{record.resources.wall_s:.2f} s" if record.ok else f"FAILED ({record.failure})"
            progress(f"run {n}/{len(order)}: {name} ({round_ + 1} of {runs}): {what}")
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

#: The table's width at most (it fits a 100-column terminal).
WIDTH = 100
COLUMNS = ("allocator", "runs", "wall s", "CPU s (user+sys)", "minor faults", "RSS MiB", "speedup", "verdict")
#: The verdict's word in the table (the reason follows below it).
SHORT = {SAME: "same", TOO_FEW: "too few", WITHHELD: "withheld", "(baseline)": "baseline",
         "no baseline: every default run failed": "no baseline"}


def _spread(s: Spread | None, fmt: Callable[[float], str]) -> str:
    if s is None:
        return "-"
    return fmt(s.median) if fmt(s.low) == fmt(s.high) else f"{fmt(s.median)} ({fmt(s.low)}-{fmt(s.high)})"


def _count(v: float) -> str:
    return f"{v / 1000:.0f}k" if v >= 10_000 else f"{v:.0f}"


def _mib(n: float) -> str:
    return f"{n / 2**20:.0f}"


def rows(c: Comparison) -> list[list[str]]:
    """The table's cells: medians with (min-max) spreads."""
    out = []
    for name in c.allocators:
        s = c.summary[name]
        out.append([name, f"{s.runs_ok}/{s.runs_ok + s.runs_failed}", _spread(s.wall_s, lambda v: f"{v:.2f}"),
                    _spread(s.cpu_s, lambda v: f"{v:.2f}"), _spread(s.minor_faults, _count),
                    _mib(s.peak_rss_bytes.median) if s.peak_rss_bytes else "-",
                    f"{s.speedup:.2f}x" if s.speedup is not None and name != BASELINE else "",
                    SHORT.get(s.verdict, s.verdict)])
    return out


def table(cells: Sequence[Sequence[str]]) -> list[str]:
    """Plain columns, numbers right-aligned."""
    grid = [list(COLUMNS), *cells]
    widths = [max(len(r[i]) for r in grid) for i in range(len(COLUMNS))]
    left = (0, len(COLUMNS) - 1)
    return ["  ".join(v.ljust(w) if i in left else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))).rstrip()
            for r in grid]


def _wrapped(text: str, indent: str = "  ") -> list[str]:
    import textwrap
    return textwrap.wrap(text, WIDTH, subsequent_indent=indent, break_on_hyphens=False)


def render(c: Comparison, out: TextIO) -> None:
    """The table (at most WIDTH columns), each verdict's reason, the
    failures and the machine; when compare stopped early, only why."""
    from .._system import describe
    if c.stopped is not None:
        print(f"{' '.join(c.command)}: {c.stopped}.", file=out)
        print(f"Its output is above. Check that the command runs as it is (python {shlex.join(c.command)}), "
              "then compare again.", file=out)
        return
    lines = _wrapped(f"{' '.join(c.command)}: {c.runs_per_allocator} run(s) per allocator, alternating; "
                     "median (min-max) over the good runs of each", "")
    lines += table(rows(c))
    for name in c.allocators:
        s = c.summary[name]
        if s.hit_rate is not None and s.bytes_served_from_cache is not None:
            covered = f", over {s.processes} processes" if s.processes > 1 else ""
            lines += _wrapped(f"{name}: hit rate {s.hit_rate.median:.1%}, "
                              f"{_mib(s.bytes_served_from_cache.median)} MiB served from the cache{covered}")
        if s.reason:
            lines += _wrapped(f"{name}: {s.verdict}: {s.reason}")
        if s.failures:
            last = next((r.stderr_tail for r in reversed(c.records) if r.allocator == name and not r.ok
                         and r.stderr_tail), "")
            lines += _wrapped(f"{name}: {s.runs_failed} failed run(s), not timed: {', '.join(s.failures)}"
                              + (f"; last line of stderr: {last}" if last else ""))
        if name in c.dropped:
            lines += _wrapped(f"{name}: {c.dropped[name]}")
    for name, why in c.skipped.items():
        lines += _wrapped(f"{name}: skipped, {why}")
    lines += _wrapped(f"verdict: against numpy's default; {VERDICT_RULE}")
    lines += _wrapped(f"machine: {describe(c.machine)}")
    print("\n".join(lines), file=out)
