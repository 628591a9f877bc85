"""Statistics: a frozen snapshot of the core's counters."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from . import _core, _raw, _settings, _system
from ._phase import PhaseTotals, phase_totals


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
        if mode != 2:
            choice = "huge pages (forced)" if mode == 1 else "4 KiB pages (forced)"
        elif n_small < 2 or n_huge < 2:
            choice = "measuring"
        else:
            choice = "huge pages" if huge <= small else "4 KiB pages"
        rows.append(ThpRange(name, small, huge, n_small, n_huge, choice))
    return tuple(rows)


@dataclass(frozen=True)
class Stats:
    """What the cache has done and holds.

    hits/misses count cache-served requests (a hit reuses a resident region, a
    miss maps a new one); small_allocs counts requests below min_bytes sent to
    numpy's own allocator, small_frees the frees of such small arrays (passed
    back to numpy).  foreign_frees are frees of arrays of min_bytes or more
    that the cache did not allocate: made before the install (or while
    min_bytes was larger), passed to numpy.  invalid_frees: a second free of a
    region of ours, ignored.  bytes_* are gauges with their peaks: in_use is
    held by live arrays, cached is idle and resident (at most cap_bytes),
    mapped is both together.  evictions are idle regions unmapped to stay
    under the cap; uncached_frees are regions too large to cache at all.

    repurposed: misses served from idle memory of other classes instead of
    fresh memory (repurposed_bytes of it): carved out of one larger idle
    region, or gathered from several by moving their pages (mremap,
    gathered_pieces moved; fresh_tail_bytes: what idle memory could not
    cover).  populated_bytes: fresh np.empty regions faulted in at once,
    which the first-touch policy times (see thp_policy()).

    Address space: segments (mappings) hold the regions; bytes_reserved is
    their size, bytes_vacant the part with no memory behind it (given back,
    kept as address space for the next regions); map_areas estimates the
    memory areas (vm.max_map_count) the cache accounts for.
    unmap_failures counts munmap calls the kernel refused (at the map-count
    limit); unmap_pending segments are kept, counted, and retried by
    release().

    decayed_softened_bytes / decayed_released_bytes: idle regions softened
    (MADV_FREE) after decay_ms unused, and given back after twice that;
    decay_passes: walks of the idle regions; decay_thread: 1 while the
    background decay thread runs (only while idle regions are left).

    prefaulted_bytes / prefault_hits / prefault_idle_bytes: with
    background=1, regions the worker faulted ahead, requests they served,
    and those not used yet; worker_cpu_ns: the CPU time the worker spent
    (the work moved to another core, it did not vanish); worker_running.
    background_zeroed_bytes: idle regions the worker zeroed ahead for
    np.zeros; zeroed_hits: np.zeros served by one with no memset;
    zeroed_stale: such regions something wrote after they were zeroed (a
    stale pointer), found by the kernel's write tracking and memset instead;
    zero_ahead_cancels: requests that needed the region the worker was
    zeroing (it stops, and lets the class's next frees pass for a while).

    rss_bytes: the process's resident memory now (/proc/self/statm);
    idle_resident_bytes: the part of it that is the cache's idle regions
    (mincore), i.e. what the cache costs right now.

    secret_*: secret arrays live now (arrays, bytes,
    mapped_bytes with guard pages, locked_bytes), and events: allocs,
    wiped_arrays/bytes (freed and wiped), unprotected (strict=False arrays
    that lack a protection), failures (refused allocations).  Secret memory
    is never in the cache's counters.  phases: totals per phase name.
    small_allocs_by_size: the requests left to numpy's allocator (below
    min_bytes, or larger than the largest class), by size: {low: count} for
    the sizes from low to 2 * low - 1 bytes (low a power of two, or 0).

    raw_* (issue 24, under install()): Python's raw domain (bytes,
    tobytes(), bytearray, hashlib inputs).  raw_allocs / raw_bytes: its
    requests the cache served and their bytes (they are in hits/misses and
    the byte gauges too); raw_frees / raw_reallocs: frees and reallocs of
    such blocks; raw_moved_out: reallocs that moved a block to Python's own
    allocator (shrunk below min_bytes, or after uninstall()).  raw_domain:
    what the raw domain does now, in words.  libc_trims: malloc_trim(0)
    calls (release(), decay) while glibc keeps big blocks (libc=keep);
    libc: what zkalloc does to glibc now, in words.
    """

    hits: int
    misses: int
    hit_rate: float
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
    decay_thread: int
    prefaulted_bytes: int
    prefault_hits: int
    prefault_idle_bytes: int
    worker_cpu_ns: int
    worker_running: int
    background_zeroed_bytes: int
    zeroed_hits: int
    zeroed_stale: int
    zero_ahead_cancels: int
    secret_arrays: int
    secret_bytes: int
    secret_mapped_bytes: int
    secret_locked_bytes: int
    secret_allocs: int
    secret_wiped_arrays: int
    secret_wiped_bytes: int
    secret_unprotected: int
    secret_failures: int
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
    raw_allocs: int = 0      # issue 24
    raw_bytes: int = 0       # issue 24
    raw_frees: int = 0       # issue 24
    raw_reallocs: int = 0    # issue 24
    raw_moved_out: int = 0   # issue 24
    libc_trims: int = 0      # issue 24
    raw_domain: str = ""     # issue 24
    libc: str = ""           # issue 24

    def as_dict(self) -> dict[str, Any]:
        """Plain dict (classes as a list of dicts), ready for json.dumps."""
        return dataclasses.asdict(self)

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
        if self.raw_allocs or self.raw_frees:   # issue 24
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


def fmt_bytes(n: int) -> str:
    """Human-readable binary size: 512.0 MiB."""
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def size_range(low: int) -> str:
    """The sizes of one small_allocs_by_size bucket: from low to 2 * low - 1 bytes."""
    if low <= 1:
        return f"{low} B"
    return f"{fmt_bytes(low)}..{fmt_bytes(2 * low - 1)}"


def snapshot(installed: bool) -> Stats:
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
        thp=bool(settings["hugepages"]) and _system.thp_possible(),
        thp_policy=thp_policy(),
        rss_bytes=_system.rss_bytes(),
        idle_resident_bytes=_core.idle_resident(),
        installed=installed,
        classes=classes,
        phases=phase_totals(),
        small_allocs_by_size=small_by_size,
        raw_domain=_raw.raw_status(),   # issue 24
        libc=_raw.libc_status(),        # issue 24
    )
