"""The one rule that says whether a measured difference is more than noise.

Used by ``python -m zkalloc_np compare`` (faster / slower than numpy's
default) and by the benchmarks (``bench``: a target met, missed, or missed
by less than the noise; the ``~`` of its tables).  Pure functions over
samples: one value per run (or per pass) of each side.

The rule: two sets of samples differ only when their min-max ranges do not
overlap.  Two equally fast programs look separated by chance with
probability 2 / C(2n, n) for n runs each: 1 in 10 at n = 3, 1 in 35 at 4,
1 in 126 at 5.  A target ("this at most `goal` times that") is the same
rule against the bound's samples (`goal` times each of the other side's):
met when the median is within the median bound, missed when every sample is
above every bound, otherwise missed within the noise.

Which measure decides (wall time, CPU time, faults) is the caller's
choice: `Samples` carries all three, `verdict()` takes the measure by
name, so a caller that knows the machine was loaded can judge CPU time
instead of wall time and say so in the reason.
"""
from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

FASTER = "faster"
SLOWER = "slower"
SAME = "no difference within the noise"
TOO_FEW = "too few runs to tell"

MET = "met"
MISSED = "MISSED"
NOISE = "noise"

#: A verdict between two allocators needs at least this many samples on each side.
MIN_RUNS = 3
#: The measures a `Samples` carries, by the name `verdict()` takes.
MEASURES = ("wall_s", "cpu_s", "minor_faults")


@dataclass(frozen=True)
class Samples:
    """One allocator's runs: wall seconds, CPU seconds (user + system) and
    minor faults, one value per run (the last two may be empty)."""

    wall_s: Sequence[float]
    cpu_s: Sequence[float] = ()
    minor_faults: Sequence[float] = ()

    def of(self, measure: str) -> Sequence[float]:
        """The samples of one measure (one of MEASURES)."""
        if measure not in MEASURES:
            raise ValueError(f"unknown measure {measure!r}; one of {', '.join(MEASURES)}")
        values: Sequence[float] = getattr(self, measure)
        return values


@dataclass(frozen=True)
class Verdict:
    """What the rule decided, on which measure, and why (one sentence)."""

    word: str
    measure: str
    reason: str


def _span(values: Sequence[float]) -> str:
    return f"{min(values):.4g}-{max(values):.4g}"


def separated(low: Sequence[float], high: Sequence[float]) -> bool:
    """Whether every value of `low` is below every value of `high`."""
    return bool(low) and bool(high) and max(low) < min(high)


def verdict(baseline: Samples, other: Samples, measure: str = "wall_s", min_runs: int = MIN_RUNS) -> Verdict:
    """`other` against `baseline` on `measure` (smaller is better): FASTER
    when the ranges do not overlap in its favour, SLOWER the other way round,
    otherwise SAME; TOO_FEW with fewer than `min_runs` samples on a side."""
    base, mine = baseline.of(measure), other.of(measure)
    if len(base) < min_runs or len(mine) < min_runs:
        return Verdict(TOO_FEW, measure, f"{len(mine)} and {len(base)} samples of {measure}, "
                                         f"at least {min_runs} each needed")
    ranges = f"{measure} {_span(mine)} against {_span(base)}"
    if separated(mine, base):
        return Verdict(FASTER, measure, f"{ranges}: the ranges do not overlap")
    if separated(base, mine):
        return Verdict(SLOWER, measure, f"{ranges}: the ranges do not overlap")
    return Verdict(SAME, measure, f"{ranges}: the ranges overlap")


def within(measured: Sequence[float], bound: Sequence[float], measure: str = "",
           medians: tuple[float, float] | None = None) -> Verdict:
    """A target "measured <= bound": MET when the median of `measured` is at
    most the median of `bound`; MISSED when every measured value is above
    every bound (the ranges do not overlap); NOISE otherwise (missed by less
    than the samples spread).  `bound` holds one bound per sample of the
    other side (for instance 1.05 times each of numpy default's peaks).
    `medians`, where given, are the two values compared for MET instead of
    the samples' medians (a record's own summary of its passes)."""
    if not measured or not bound:
        raise ValueError("within() needs at least one measured value and one bound")
    mid, limit = medians if medians is not None else (statistics.median(measured), statistics.median(bound))
    detail = f"{mid:.4g} against at most {limit:.4g} (ranges {_span(measured)} and {_span(bound)})"
    if mid <= limit:
        return Verdict(MET, measure, detail)
    if separated(bound, measured):
        return Verdict(MISSED, measure, detail + ": the ranges do not overlap")
    return Verdict(NOISE, measure, detail + ": missed within the spread")


def scaled(values: Sequence[float], goal: float) -> list[float]:
    """`goal` times each value: the bounds of a target "at most goal x"."""
    return [goal * v for v in values]


# ---- a loaded machine -----------------------------------------------------------------------------

#: The machine counts as loaded during a set of runs when the rest of it kept
#: at least this many cores busy on average during one of them (other
#: processes, measured from /proc/stat less the run's own CPU time) ...
LOADED_OTHERS_CORES = 0.5
#: ... or the hypervisor stole at least this share of the machine's CPU time.
LOADED_STEAL_SHARE = 0.05
#: On a loaded machine wall time is not trusted, and CPU time (user + system)
#: moves too (10-15% here with two CPU-bound neighbours on two cores): CPU time
#: then decides only when every run of the side that used less stays below
#: every run of the other after being raised by this share.
LOADED_CPU_MARGIN = 0.15
#: Said instead of a verdict when the machine was too busy to tell.
WITHHELD = "no verdict: the machine was busy"


@dataclass(frozen=True)
class Load:
    """How busy the rest of the machine was during a set of runs: the most
    cores other processes kept busy during any one run, the largest share of
    CPU time stolen by the hypervisor, and the highest 1-minute load average
    seen, beside the machine's cores."""

    others_cores: float
    steal_share: float
    load_avg: float
    cores: int

    @property
    def loaded(self) -> bool:
        """Busy enough that wall times are not to be trusted."""
        return self.others_cores >= LOADED_OTHERS_CORES or self.steal_share >= LOADED_STEAL_SHARE

    def describe(self) -> str:
        """One phrase: how loaded, with the numbers."""
        return (f"{'loaded' if self.loaded else 'idle'}: other processes kept up to {self.others_cores:.1f} of "
                f"{self.cores} cores busy, {self.steal_share:.0%} of CPU time stolen, load average up to "
                f"{self.load_avg:.1f}")

    @classmethod
    def worst(cls, loads: Sequence[Load]) -> Load | None:
        """The busiest of each measure over several runs (None for none)."""
        if not loads:
            return None
        return cls(max(x.others_cores for x in loads), max(x.steal_share for x in loads),
                   max(x.load_avg for x in loads), max(x.cores for x in loads))


def raised(values: Sequence[float], share: float) -> list[float]:
    """Each value `share` higher: what a loaded machine could have made of it."""
    return [v * (1 + share) for v in values]


def judge(baseline: Samples, other: Samples, load: Load | None = None, min_runs: int = MIN_RUNS) -> Verdict:
    """compare's verdict: wall time, CPU time and page faults together, and
    the machine's load.

    Idle machine (or load unknown): wall time decides, as `verdict`; the
    reason adds what CPU time and minor faults say.  Loaded machine: wall
    time is not trusted; CPU time decides when its ranges stay apart after
    raising the lower side's by LOADED_CPU_MARGIN, and the verdict is
    WITHHELD otherwise, with the reason (the load, and what wall time, CPU time and
    faults said)."""
    wall = verdict(baseline, other, "wall_s", min_runs)
    if wall.word == TOO_FEW:
        return wall
    extra = [verdict(baseline, other, m, min_runs) for m in ("cpu_s", "minor_faults")
             if len(baseline.of(m)) >= min_runs and len(other.of(m)) >= min_runs]
    said = "; ".join(f"{v.measure}: {v.word}" for v in (wall, *extra))
    if load is None or not load.loaded:
        where = load.describe() if load is not None else "load not measured"
        return Verdict(wall.word, "wall_s", f"{wall.reason} ({said}; machine {where})")
    cpu_base, cpu_mine = baseline.of("cpu_s"), other.of("cpu_s")
    if len(cpu_base) < min_runs or len(cpu_mine) < min_runs:
        return Verdict(WITHHELD, "wall_s", f"machine {load.describe()}, and no CPU times to judge by ({said})")
    detail = (f"judged by CPU time (user+sys), {_span(cpu_mine)} s against {_span(cpu_base)} s, with a "
              f"{LOADED_CPU_MARGIN:.0%} margin, since the machine was {load.describe()} ({said})")
    if separated(raised(cpu_mine, LOADED_CPU_MARGIN), cpu_base):
        return Verdict(FASTER, "cpu_s", detail)
    if separated(raised(cpu_base, LOADED_CPU_MARGIN), cpu_mine):
        return Verdict(SLOWER, "cpu_s", detail)
    if wall.word == SAME and all(v.word == SAME for v in extra):
        return Verdict(SAME, "cpu_s", detail)
    return Verdict(WITHHELD, "cpu_s", detail + ": the difference is within what the load can make")
