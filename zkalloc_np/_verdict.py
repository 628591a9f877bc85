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
