"""What made the peak: allocation sites and the reports built from the
core's peak snapshots (cython/zk/zk_peak.c).

A snapshot lists every region in use at one moment: the phase that
allocated it (by serial), its bytes, its class and, for tracked requests,
its allocation site.  A site is the innermost Python frame outside numpy and
zkalloc_np at the allocation (the line of the prover that called np.zeros,
np.concatenate, a ufunc...).  The core records it in C, inside the
allocation, by reading the thread's frames without running Python
(cython/zkpy/zk_py.c: a number for each (code object, line), kept in the
region's descriptor); it is turned into 'file:line' only here, when a
report is read.  A request made without the main interpreter's GIL (numpy
releases it in a few resizes; a subinterpreter; a C thread) has site 0,
'(unknown)': the report counts those bytes (unknown_site_bytes).
"""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import _core
from ._format import fmt_bytes

#: Frames in these folders are not a site: the site is the caller's line.
_SKIP = tuple(os.path.dirname(path) + os.sep for path in (np.__file__, __file__))
_core.site_skip_files(_SKIP)

UNKNOWN = "(unknown)"   # the name of site 0: not recorded, or not readable where it was made


def site_name(site: int) -> str:
    """'file:line' of a site number (site 0 is '(unknown)')."""
    where = _core.site_where(site)
    return UNKNOWN if where is None else f"{where[0]}:{where[1]}"


@dataclass(frozen=True)
class SiteBytes:
    """Bytes live at a peak that were allocated at one site."""

    site: str
    bytes: int
    arrays: int


@dataclass(frozen=True)
class PeakReport:
    """What was live at a peak.

    bytes: the watched live bytes when the snapshot was taken (a phase's own
    requested bytes; for the process, its bytes in use); it is at least
    16/17 of the true peak, which is peak_bytes (snapshots are taken only
    when live bytes grow by 1/16, which keeps them cheap).  by_site: the own
    bytes per allocation site, largest first (sites are recorded with
    track=True, or under ``run --peak``; otherwise one '(unknown)' row);
    by_class: own bytes per region class (class bytes -> bytes);
    outside_bytes: bytes live in the cache then that were not the phase's
    (arrays from before it, from other threads' phases, from inner phases);
    by_phase: those live bytes per phase name ('' for none);
    unlisted_bytes: regions the snapshot had no memory to list;
    snapshots / snapshot_seconds: how many snapshots were taken (the one
    kept and those it replaced) and the time they took: what recording the
    peak cost.  unknown_site_bytes: the own bytes of the '(unknown)' row:
    allocated untracked, or where no site can be read (without the GIL, in
    a subinterpreter, or on a Python whose frames zkalloc cannot read).
    """

    bytes: int
    peak_bytes: int
    by_site: tuple[SiteBytes, ...]
    by_class: dict[int, int] = field(default_factory=dict)
    outside_bytes: int = 0
    by_phase: dict[str, int] = field(default_factory=dict)
    unlisted_bytes: int = 0
    snapshots: int = 0
    snapshot_seconds: float = 0.0
    unknown_site_bytes: int = 0

    def lines(self, top: int = 5) -> list[str]:
        """A readable summary: the total, the top sites, the classes."""
        out = [f"peak {fmt_bytes(self.peak_bytes)}; at the snapshot {fmt_bytes(self.bytes)} live"
               + (f", plus {fmt_bytes(self.outside_bytes)} from outside" if self.outside_bytes else "")]
        for s in self.by_site[:top]:
            out.append(f"  {fmt_bytes(s.bytes):>10} in {s.arrays:>4} array(s) from {_short(s.site)}")
        if len(self.by_site) > top:
            rest = sum(s.bytes for s in self.by_site[top:])
            out.append(f"  {fmt_bytes(rest):>10} from {len(self.by_site) - top} other site(s)")
        if self.unknown_site_bytes and not _core.SITES_READ_FRAMES:
            out.append("  (no site is recorded on this Python: zkalloc reads the frames of CPython 3.10 to 3.13)")
        elif self.unknown_site_bytes and len(self.by_site) > 1:
            out.append(f"  {fmt_bytes(self.unknown_site_bytes):>10} of it at an unknown site (allocated untracked, "
                       "without the GIL or in a subinterpreter)")
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())


def _short(site: str) -> str:
    """A site's path relative to the working directory when it is below it."""
    cwd = os.getcwd() + os.sep
    return site[len(cwd):] if site.startswith(cwd) else site


def report(snapshot: tuple[dict[str, int], list[tuple[int, int, int, int]]], own: int | None,
           peak_bytes: int, phase_names: dict[int, str] | None = None) -> PeakReport:
    """A PeakReport from _core.scope_peak() / process_peak(): own is the
    phase's serial (None: every entry is the process's own)."""
    info, entries = snapshot
    names = phase_names or {}
    sites: Counter[int] = Counter()
    arrays: Counter[int] = Counter()
    classes: Counter[int] = Counter()
    phases: Counter[str] = Counter()
    outside = 0
    for scope, nbytes, site, cls in entries:
        if own is not None and scope != own:
            outside += nbytes
            phases[names.get(scope, "") if scope else ""] += nbytes
            continue
        sites[site] += nbytes
        arrays[site] += 1
        classes[_core.class_bytes(cls)] += nbytes
        if own is None:
            phases[names.get(scope, "") if scope else ""] += nbytes
    # Sites by name: two code objects on one line (a lambda and its function) are one row.
    named: Counter[str] = Counter()
    named_arrays: Counter[str] = Counter()
    for s, b in sites.items():
        named[site_name(s)] += b
        named_arrays[site_name(s)] += arrays[s]
    by_site = tuple(SiteBytes(name, b, named_arrays[name]) for name, b in named.most_common())
    return PeakReport(bytes=int(info["live"]), peak_bytes=max(peak_bytes, int(info["live"])), by_site=by_site,
                      by_class=dict(sorted(classes.items(), reverse=True)), unknown_site_bytes=named[UNKNOWN],
                      outside_bytes=outside,
                      by_phase=dict(phases.most_common()), unlisted_bytes=int(info["unlisted_bytes"]),
                      snapshots=int(info["snapshots"]), snapshot_seconds=info["snapshot_ns"] / 1e9)


def top_sites_text(snapshot: Any, own: int, top: int = 3) -> str:
    """'8.0 MiB from f.py:12, ...' of a snapshot's own entries ('' if none)."""
    rep = report(snapshot, own, 0)
    named = [s for s in rep.by_site if s.site != UNKNOWN]
    return ", ".join(f"{fmt_bytes(s.bytes)} from {s.site}" for s in named[:top])
