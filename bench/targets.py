"""Check a saved run against the speed targets of the benchmark issues
(and issue 12's time, RSS and fault targets on the prover-shaped patterns,
and issue 13's: a phase per round costs no time or RSS over installed()).

``python -m bench.targets RESULTS.json`` prints one line per target and
comparison: the ratio measured and whether it is met.  Ratios within one
run only; nothing here changes a measurement.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .allocators import PEERS
from .report import groups, noise, size_label

ZK = ("zkalloc", "zkalloc-global")


def _t(rows: dict[str, Any], name: str) -> float | None:
    return rows[name]["median_s"] if name in rows else None


#: The patterns shaped like real provers (issue 12), checked cold and warm.
PROVER_PATTERNS = ("stark_prove", "grow")
#: Who zkalloc's time is compared with there: the best of these.
TIME_BASES = ("default", *PEERS)
#: Fault counts below this (1 MiB of 4 KiB pages) compare as equal.
FAULT_FLOOR = 256


def _verdict(ratio: float, goal: float, spread: float) -> str:
    return "met" if ratio >= goal else "noise" if ratio * spread >= goal else "MISSED"


def check_prover(where: str, pattern: str, zk: str, rows: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Issue 12's targets for `zk` on one (pattern, size) of `PROVER_PATTERNS`:
    cold and warm time at most 1.0x the best of `TIME_BASES`, peak RSS (after
    the cold round and at the end) at most 1.10x numpy default's, and on
    stark_prove minor faults (cold round, per warm round) no more than
    glibc-tuned's.  Records without the cold fields are skipped."""
    out: list[tuple[str, str, str]] = []
    me = rows[zk]

    def add(what: str, ratio: float, goal: float, other: str, key: str, detail: str) -> None:
        spread = max(noise(me, key), noise(rows[other], key))
        out.append((f"{where} {zk} {what}", _verdict(ratio, goal, spread), detail + f" (pass spread {spread:.2f})"))
    for key, phase in (("cold_s", "cold"), ("median_s", "warm")):
        bases = {b: rows[b][key] for b in TIME_BASES if b in rows and key in rows[b]}
        if key in me and bases:
            best = min(bases, key=lambda b: bases[b])
            r = me[key] / bases[best]
            add(f"{phase} time <= 1.0x best of default and peers ({best})", 1.0 / r, 1.0, best, key,
                f"{r:.2f}x {best}'s time")
    if "default" in rows:
        for key, phase in (("cold_rss_bytes", "cold"), ("peak_rss_bytes", "warm")):
            if key in me and key in rows["default"]:
                r = me[key] / rows["default"][key]
                add(f"{phase} peak RSS <= 1.10x default's", 1.10 / r, 1.0, "default", key, f"{r:.2f}x default's")
    if pattern == "stark_prove" and "glibc-tuned" in rows:
        for key, phase in (("cold_minflt", "cold round"), ("minflt_per_round", "per warm round")):
            if key in me and key in rows["glibc-tuned"]:
                mine, theirs = me[key], rows["glibc-tuned"][key]
                add(f"minor faults {phase} <= glibc-tuned's", max(theirs, FAULT_FLOOR) / max(mine, FAULT_FLOOR),
                    1.0, "glibc-tuned", key, f"{mine:.0f} against {theirs:.0f}")
    return out


def check_idle(where: str, zk: str, rows: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The footprint issue's targets on `idle`: RSS while idle within 1.05x
    of numpy default's, and the first round after the pause within 1.10x of
    a warm round (both zkalloc's)."""
    me, out = rows[zk], []
    if "idle_rss_bytes" in me and "default" in rows and "idle_rss_bytes" in rows["default"]:
        r = me["idle_rss_bytes"] / rows["default"]["idle_rss_bytes"]
        out.append((f"{where} {zk} RSS while idle within 1.05x of default's",
                    "met" if r <= 1.05 else "MISSED",
                    f"{r:.2f}x ({me['idle_rss_bytes'] >> 20} MiB vs {rows['default']['idle_rss_bytes'] >> 20} MiB)"))
    if "after_idle_s" in me:
        r = me["after_idle_s"] / me["median_s"]
        spread = noise(me)
        out.append((f"{where} {zk} first round after idle within 1.10x of a warm round",
                    _verdict(1.10 / r, 1.0, spread), f"{r:.2f}x (pass spread {spread:.2f})"))
    return out


def check_phase(where: str, rows: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Issue 13's targets: each round in a phase (zkalloc-phase) costs no
    time or memory over the same rounds under installed() (zkalloc): time
    within 1.05x, peak RSS within 1.10x."""
    if "zkalloc-phase" not in rows or "zkalloc" not in rows:
        return []
    me, base = rows["zkalloc-phase"], rows["zkalloc"]
    out: list[tuple[str, str, str]] = []
    for key, what, goal in (("median_s", "time", 1.05), ("peak_rss_bytes", "peak RSS", 1.10)):
        if key in me and key in base and me[key] > 0:
            r = me[key] / base[key]
            spread = max(noise(me, key), noise(base, key))
            out.append((f"{where} zkalloc-phase {what} <= {goal:.2f}x zkalloc's", _verdict(goal / r, 1.0, spread),
                        f"{r:.2f}x zkalloc's (pass spread {spread:.2f})"))
    return out


#: Issue 26: recording each phase's peak, left on, within these of installed() (time, peak RSS),
#: and the snapshots' own time within this share of a round; on the prover-shaped patterns.
PEAK_GOALS = {"median_s": 1.02, "peak_rss_bytes": 1.01}
PEAK_SNAPSHOT_SHARE = 0.02
PEAK_PATTERNS = ("stark_prove", "ntt_prover")


def check_peak(where: str, pattern: str, rows: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Issue 26's targets: a phase per round (peak recording on, track=False)
    against installed(), and what the snapshots themselves took."""
    if pattern not in PEAK_PATTERNS or "zkalloc-phase" not in rows or "zkalloc" not in rows:
        return []
    me, base = rows["zkalloc-phase"], rows["zkalloc"]
    out: list[tuple[str, str, str]] = []
    for key, goal in PEAK_GOALS.items():
        r = me[key] / base[key]
        spread = max(noise(me, key), noise(base, key))
        out.append((f"{where} peak recorded: {key} <= {goal:.2f}x installed()'s", _verdict(goal / r, 1.0, spread),
                    f"{r:.3f}x (pass spread {spread:.2f})"))
    share = me.get("peak_snapshot_s_per_round", 0.0) / me["median_s"]
    out.append((f"{where} peak snapshots <= {PEAK_SNAPSHOT_SHARE:.0%} of a round",
                "met" if share <= PEAK_SNAPSHOT_SHARE else "MISSED", f"{share:.3%} of the round"))
    return out


def check(records: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(what, verdict, detail) for every target the records can decide;
    verdict is "met", "MISSED" or "noise" (missed by less than the pass-to-pass
    spread of the two records compared)."""
    out: list[tuple[str, str, str]] = []
    for pattern, size, rows in groups(records):
        where = f"{pattern} {size_label(pattern, size)}"
        out += check_phase(where, rows)
        out += check_peak(where, pattern, rows)
        peers = {p: rows[p]["median_s"] for p in PEERS if p in rows}
        best_peer = min(peers, key=lambda p: peers[p]) if peers else None
        for zk in ZK:
            t = _t(rows, zk)
            if t is None:
                continue

            def add(what: str, ratio: float, goal: float, other: str, detail: str, zk: str = zk, rows: dict[str, Any] = rows) -> None:
                spread = max(noise(rows[zk]), noise(rows[other]))
                verdict = "met" if ratio >= goal else "noise" if ratio * spread >= goal else "MISSED"
                out.append((what, verdict, detail + f" (pass spread {spread:.2f})"))
            if pattern in ("fft_rounds", "fill") and "ideal" in rows:
                r = t / rows["ideal"]["median_s"]
                add(f"{where} {zk} within 1.05x of ideal", 1.05 / r, 1.0, "ideal", f"{r:.2f}x the ideal's time")
            if pattern in ("fft_rounds", "fill") and size >= 32 << 20 and "default" in rows:
                r = rows["default"]["median_s"] / t
                add(f"{where} {zk} >= 2.5x faster than default", r, 2.5, "default", f"{r:.2f}x")
            if best_peer and pattern == "phase_burst":
                r = peers[best_peer] / t
                add(f"{where} {zk} >= 1.3x faster than best peer ({best_peer})", r, 1.3, best_peer, f"{r:.2f}x")
            if best_peer and pattern.startswith("msm_"):
                r = peers[best_peer] / t
                add(f"{where} {zk} at least as fast as best peer ({best_peer})", r, 1.0, best_peer, f"{r:.2f}x")
            if "tcmalloc" in rows and pattern in ("expr_churn", "ntt_prover"):
                r = rows["tcmalloc"]["median_s"] / t
                add(f"{where} {zk} at least as fast as tcmalloc", r, 1.0, "tcmalloc", f"{r:.2f}x")
            if best_peer and pattern == "contention":
                r = rows[best_peer]["median_s"] / t
                add(f"{where} {zk} GB/s >= best peer ({best_peer})", r, 1.0, best_peer, f"{r:.2f}x")
            if "default" in rows:
                r = rows["default"]["median_s"] / t
                add(f"{where} {zk} no slower than default", r, 1.0, "default", f"{r:.2f}x")
            if pattern in PROVER_PATTERNS:
                out += check_prover(where, pattern, zk, rows)
            if pattern == "idle":
                out += check_idle(where, zk, rows)
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the checks; exit 0 (targets are reported, not enforced)."""
    parser = argparse.ArgumentParser(prog="python -m bench.targets", description=__doc__)
    parser.add_argument("results")
    args = parser.parse_args(argv)
    with open(args.results) as f:
        records = json.load(f)["records"]
    for what, verdict, detail in check(records):
        print(f"{verdict:<6}  {what}: {detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
