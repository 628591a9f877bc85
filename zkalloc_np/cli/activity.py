"""What the cache did in one process between two snapshots (`CacheActivity`),
and the sum over the processes of a run (`add`).  ``run`` reports it for the
program's process; every other covered process of the run writes its own
(zkalloc_np.cli.children), and ``run`` adds them up."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from .._stats import Stats


@dataclass(frozen=True)
class ClassReport:
    """One size class: requests served resident (hits) and requests that
    needed a new region (misses), and the bytes of each."""

    bytes: int
    hits: int
    misses: int
    bytes_served: int
    bytes_missed: int


@dataclass(frozen=True)
class CacheActivity:
    """The cache's counters over a stretch of one process (or summed over
    processes: then the peaks and gauges are sums of each process's own).

    bytes_newly_mapped is what the misses took from fresh memory: their
    class bytes less the idle memory of other classes that was repurposed
    for them (bytes_repurposed).  budget_refusals: requests refused because
    the process's budget (budget_bytes, 0 = none) or a phase's would be
    exceeded; numpy raised MemoryError for each."""

    hits: int = 0
    misses: int = 0
    bytes_served_from_cache: int = 0
    bytes_newly_mapped: int = 0
    bytes_repurposed: int = 0
    bytes_cached: int = 0
    peak_bytes_in_use: int = 0
    peak_bytes_cached: int = 0
    peak_bytes_mapped: int = 0
    evictions: int = 0
    evicted_bytes: int = 0
    small_allocs: int = 0
    small_frees: int = 0
    foreign_frees: int = 0
    calloc_fresh: int = 0
    calloc_memset: int = 0
    calloc_discard: int = 0
    budget_refusals: int = 0
    map_failures: int = 0
    cap_bytes: int = 0
    min_bytes: int = 0
    budget_bytes: int = 0
    classes: list[ClassReport] = field(default_factory=list)
    small_allocs_by_size: dict[int, int] = field(default_factory=dict)

    @property
    def hit_rate(self) -> float:
        """hits / (hits + misses); 0 when there was no request."""
        return self.hits / (self.hits + self.misses) if self.hits + self.misses else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (hit_rate included), ready for json.dumps."""
        return {**asdict(self), "hit_rate": self.hit_rate}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CacheActivity:
        """Back from as_dict() (JSON turns the size keys into strings)."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in d.items() if k in names}
        values["classes"] = [ClassReport(**c) for c in d.get("classes", [])]
        values["small_allocs_by_size"] = {int(k): v for k, v in d.get("small_allocs_by_size", {}).items()}
        return cls(**values)


#: Fields that are settings, the same in every process: not added up.
_SETTINGS = ("cap_bytes", "min_bytes", "budget_bytes")


def _gain(after: int, before: int) -> int:
    """A counter's growth (a reset in between: what it counted since)."""
    return after - before if after >= before else after


def _classes(before: Stats, after: Stats) -> list[ClassReport]:
    earlier = {c.bytes: c for c in before.classes}
    out = []
    for c in after.classes:
        old = earlier.get(c.bytes)
        hits = _gain(c.hits, old.hits if old else 0)
        misses = _gain(c.misses, old.misses if old else 0)
        if hits or misses:
            out.append(ClassReport(c.bytes, hits, misses, hits * c.bytes, misses * c.bytes))
    return out


def cache_activity(before: Stats, after: Stats, budget_bytes: int = 0) -> CacheActivity:
    """What the cache did between two snapshots of one process (pure)."""
    classes = _classes(before, after)
    repurposed = _gain(after.repurposed_bytes, before.repurposed_bytes)
    missed = sum(c.bytes_missed for c in classes)
    small = {low: _gain(n, before.small_allocs_by_size.get(low, 0)) for low, n in after.small_allocs_by_size.items()}
    return CacheActivity(
        hits=_gain(after.hits, before.hits), misses=_gain(after.misses, before.misses),
        bytes_served_from_cache=sum(c.bytes_served for c in classes),
        bytes_newly_mapped=max(0, missed - repurposed), bytes_repurposed=repurposed,
        bytes_cached=after.bytes_cached, peak_bytes_in_use=after.peak_bytes_in_use,
        peak_bytes_cached=after.peak_bytes_cached, peak_bytes_mapped=after.peak_bytes_mapped,
        evictions=_gain(after.evictions, before.evictions),
        evicted_bytes=_gain(after.evicted_bytes, before.evicted_bytes),
        small_allocs=_gain(after.small_allocs, before.small_allocs),
        small_frees=_gain(after.small_frees, before.small_frees),
        foreign_frees=_gain(after.foreign_frees, before.foreign_frees),
        calloc_fresh=_gain(after.calloc_fresh, before.calloc_fresh),
        calloc_memset=_gain(after.calloc_memset, before.calloc_memset),
        calloc_discard=_gain(after.calloc_discard, before.calloc_discard),
        budget_refusals=_gain(after.budget_refusals, before.budget_refusals),
        map_failures=_gain(after.map_failures, before.map_failures),
        cap_bytes=after.cap_bytes, min_bytes=after.min_bytes, budget_bytes=budget_bytes,
        classes=classes, small_allocs_by_size={low: n for low, n in sorted(small.items()) if n},
    )


def add(activities: Iterable[CacheActivity]) -> CacheActivity:
    """The sum over processes; the settings are the first one's."""
    items = list(activities)
    if not items:
        return CacheActivity()
    totals: dict[str, Any] = {}
    for f in fields(CacheActivity):
        if f.name in _SETTINGS:
            totals[f.name] = getattr(items[0], f.name)
        elif f.name not in ("classes", "small_allocs_by_size"):
            totals[f.name] = sum(getattr(a, f.name) for a in items)
    by_class: dict[int, list[int]] = {}
    small: dict[int, int] = {}
    for a in items:
        for c in a.classes:
            row = by_class.setdefault(c.bytes, [0, 0])
            row[0] += c.hits
            row[1] += c.misses
        for low, n in a.small_allocs_by_size.items():
            small[low] = small.get(low, 0) + n
    totals["classes"] = [ClassReport(size, h, m, h * size, m * size) for size, (h, m) in sorted(by_class.items())]
    totals["small_allocs_by_size"] = dict(sorted(small.items()))
    return CacheActivity(**totals)
