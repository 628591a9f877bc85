"""Statistics: a frozen snapshot of the core's counters."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from . import _core, _raw, _settings, _system
from ._format import fmt_bytes, size_range
from ._phase import PhaseTotals, phase_totals

__all__ = ["ClassStats", "Stats", "ThpRange", "fmt_bytes", "size_range", "snapshot", "thp_policy"]


@dataclass(frozen=True)
class ClassStats:
    """One size class: its size, hits and misses, regions in use and cached."""

    bytes: int
    hits: int
    misses: int
    in_use: int
    cached: int


@dataclass(frozen=True)
class ThpRange:
    """What the first-touch policy measured for fresh regions of one size
    range: nanoseconds per MiB to fault them in, on 4 KiB and on huge pages
    (a moving average), the samples behind each, and the choice it makes
    now ("measuring" until each way has 2 samples)."""

    range: str
    ns_per_mib_small: int
    ns_per_mib_huge: int
    samples_small: int
    samples_huge: int
    choice: str


_THP_RANGES = ("2-16 MiB", "16-128 MiB", ">= 128 MiB")


def thp_policy() -> tuple[ThpRange, ...]:
    """The first-touch policy's measurements, per size range."""
    rows = []
    mode = _settings.current()["hugepages"]
    for name, (small, huge, n_small, n_huge) in zip(_THP_RANGES, _core.thp_snapshot()):
        if mode != "auto":
            choice = "huge pages (forced)" if mode == "on" else "4 KiB pages (forced)"
        elif n_small < 2 or n_huge < 2:
            choice = "measuring"
        else:
            choice = "huge pages" if huge <= small else "4 KiB pages"
        rows.append(ThpRange(name, small, huge, n_small, n_huge, choice))
    return tuple(rows)


@dataclass(frozen=True)
class Stats:
    """What the cache has done and holds.

    The fields from hits to secret_failures are the core's counters and
    gauges, in the core's order (cython/zk/zk_stats_list.h, which also says
    what each one means; docs/stats.md has the same table, and a test holds
    both to it).  Then what the Python layer adds:

    hit_rate: hits / (hits + misses).  cap_bytes, min_bytes: the settings.
    thp: whether huge pages may be used; thp_policy: what the first-touch
    policy measured.  installed: whether install() (process-wide) is in
    effect.  rss_bytes: the process's resident memory now
    (/proc/self/statm); idle_resident_bytes: the part of it that is the
    cache's idle regions (mincore), i.e. what the cache costs right now.
    classes: per size class with any activity.  phases: totals per phase
    name.  small_allocs_by_size: the requests left to numpy's allocator, by
    size: {low: count} for the sizes from low to 2 * low - 1 bytes.
    raw_domain, libc: what install() does to Python's raw domain and to
    glibc now, in words.
    """

    hits: int
    misses: int
    small_allocs: int
    small_frees: int
    foreign_frees: int
    invalid_frees: int
    bytes_in_use: int
    peak_bytes_in_use: int
    bytes_cached: int
    peak_bytes_cached: int
    bytes_mapped: int
    peak_bytes_mapped: int
    evictions: int
    evicted_bytes: int
    uncached_frees: int
    map_failures: int
    budget_refusals: int
    calloc_fresh: int
    calloc_memset: int
    calloc_discard: int
    zero_samples: int
    realloc_same: int
    realloc_remap: int
    realloc_copy: int
    softened_bytes: int
    released_bytes: int
    repurposed: int
    repurposed_bytes: int
    carved: int
    gathered: int
    gathered_pieces: int
    fresh_tail_bytes: int
    slack_dropped_bytes: int
    populated_bytes: int
    segments: int
    bytes_reserved: int
    bytes_vacant: int
    map_areas: int
    unmap_failures: int
    unmap_pending: int
    decayed_softened_bytes: int
    decayed_released_bytes: int
    decay_passes: int
    decay_pressure_passes: int
    decay_high_water_passes: int
    decay_thread: int
    secret_arrays: int
    secret_bytes: int
    secret_mapped_bytes: int
    secret_locked_bytes: int
    secret_allocs: int
    secret_wiped_arrays: int
    secret_wiped_bytes: int
    secret_unprotected: int
    secret_failures: int
    raw_allocs: int
    raw_bytes: int
    raw_frees: int
    raw_reallocs: int
    raw_moved_out: int
    libc_trims: int
    hit_rate: float
    cap_bytes: int
    min_bytes: int
    thp: bool
    installed: bool
    thp_policy: tuple[ThpRange, ...]
    rss_bytes: int
    idle_resident_bytes: int
    classes: tuple[ClassStats, ...]
    phases: dict[str, PhaseTotals] = dataclasses.field(default_factory=dict)
    small_allocs_by_size: dict[int, int] = dataclasses.field(default_factory=dict)
    raw_domain: str = ""
    libc: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (classes as a list of dicts), ready for json.dumps."""
        return dataclasses.asdict(self)

    def __repr__(self) -> str:
        return (f"<Stats {self.hits} hits, {self.misses} misses ({self.hit_rate:.1%}), in use "
                f"{fmt_bytes(self.bytes_in_use)}, cached {fmt_bytes(self.bytes_cached)}, install "
                f"{'on' if self.installed else 'off'}; str() or print() for the report>")

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:
        """IPython shows the report (str), not the dataclass's every field."""
        p.text(repr(self) if cycle else str(self))

    def __str__(self) -> str:
        lines = [
            f"zkalloc: {self.hits} hits, {self.misses} misses (hit rate {self.hit_rate:.1%}), "
            f"{self.small_allocs} small requests left to numpy",
            f"  in use {fmt_bytes(self.bytes_in_use)} (peak {fmt_bytes(self.peak_bytes_in_use)}), "
            f"cached {fmt_bytes(self.bytes_cached)} of cap {fmt_bytes(self.cap_bytes)} "
            f"(peak {fmt_bytes(self.peak_bytes_cached)}), mapped {fmt_bytes(self.bytes_mapped)}",
            f"  repurposed {self.repurposed} misses from idle memory of other sizes "
            f"({fmt_bytes(self.repurposed_bytes)}: {self.carved} carved, {self.gathered} gathered), "
            f"{self.segments} segments ({fmt_bytes(self.bytes_reserved)} reserved, "
            f"{fmt_bytes(self.bytes_vacant)} vacant)",
            f"  process RSS {fmt_bytes(self.rss_bytes)}, of which the cache's idle regions "
            f"{fmt_bytes(self.idle_resident_bytes)}; decayed: {fmt_bytes(self.decayed_softened_bytes)} "
            f"softened, {fmt_bytes(self.decayed_released_bytes)} given back",
            f"  evictions {self.evictions} ({fmt_bytes(self.evicted_bytes)}), "
            f"too large to cache {self.uncached_frees}, huge pages {'on' if self.thp else 'off'}, "
            f"process-wide install {'on' if self.installed else 'off'}",
        ]
        if self.budget_refusals:
            from ._log import budget_refusal_text
            lines.append(f"  budget: {budget_refusal_text(self.budget_refusals)}")
        if self.raw_allocs or self.raw_frees:
            lines.append(f"  Python raw domain: {self.raw_allocs} blocks served ({fmt_bytes(self.raw_bytes)}), "
                         f"{self.raw_frees} freed, {self.raw_reallocs} reallocs ({self.raw_moved_out} moved out)")
        if self.secret_allocs or self.secret_arrays:
            lines.append(f"  secret: {self.secret_arrays} arrays live ({fmt_bytes(self.secret_bytes)}, "
                         f"{fmt_bytes(self.secret_locked_bytes)} locked), {self.secret_wiped_arrays} wiped, "
                         f"{self.secret_unprotected} unprotected, {self.secret_failures} refused")
        for name, totals in self.phases.items():
            lines.append(f"  phase {name!r}: {totals.phases} runs, {totals.arrays} arrays, "
                         f"{fmt_bytes(totals.bytes_allocated)} allocated, peak {fmt_bytes(totals.peak_bytes)}, "
                         f"{totals.misses} misses, {totals.escaped_arrays} escaped")
        for c in self.classes:
            lines.append(f"  class {fmt_bytes(c.bytes):>10}: {c.hits} hits, {c.misses} misses, "
                         f"{c.in_use} in use, {c.cached} cached")
        return "\n".join(lines)


def snapshot(*, phases: bool = True) -> Stats:
    """The Stats of now.  phases=False leaves `phases` empty and takes no
    lock of this package: what a signal handler may call (the thread it
    interrupted may hold one)."""
    raw = _core.stats_snapshot()
    classes = tuple(ClassStats(*row) for row in raw.pop("classes") if any(row[1:]))
    by_log2 = raw.pop("small_by_log2")
    small_by_size = {(1 << b >> 1): int(n) for b, n in enumerate(by_log2) if n}
    requests = raw["hits"] + raw["misses"]
    settings = _settings.current()
    return Stats(
        **raw,
        hit_rate=raw["hits"] / requests if requests else 0.0,
        cap_bytes=settings["cache_bytes"],
        min_bytes=settings["min_bytes"],
        thp=settings["hugepages"] != "off" and _system.thp_possible(),
        thp_policy=thp_policy(),
        rss_bytes=_system.rss_bytes(),
        idle_resident_bytes=_core.idle_resident(),
        installed=_core.default_points_at_zkalloc(),
        classes=classes,
        phases=phase_totals() if phases else {},
        small_allocs_by_size=small_by_size,
        raw_domain=_raw.raw_status(),
        libc=_raw.libc_status(),
    )
