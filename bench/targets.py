"""Check a saved run against the benchmark targets: speed against the ideal,
numpy's default and the peers; time, RSS and faults on the prover-shaped
patterns; a phase per round and its peak recording against installed();
the idle pattern's footprint.

``python -m bench.targets RESULTS.json`` prints one line per target and
comparison: the ratio measured and whether it is met.  Each verdict comes
from the one noise rule (zkalloc_np._verdict.within): "met", "MISSED" when
every pass is beyond the bound, "noise" when missed by less than the passes
spread.  Ratios within one run only; nothing here changes a measurement.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

from zkalloc_np._verdict import within

from .allocators import PEERS
from .report import groups, size_label

ZK = ("zkalloc", "zkalloc-global")
Record = dict[str, Any]
Check = tuple[str, str, str]

#: The patterns shaped like real provers, checked cold and warm.
PROVER_PATTERNS = ("stark_prove", "grow")
#: Who zkalloc's time is compared with there: the best of these.
TIME_BASES = ("default", *PEERS)
#: Fault counts below this (1 MiB of 4 KiB pages) compare as equal.
FAULT_FLOOR = 256


def passes(record: Record, key: str) -> list[float]:
    """The record's per-pass values of `key` (its one value without them)."""
    return list(record.get("pass_" + key) or [record[key]])


def at_most(me: Record, other: Record, key: str, goal: float) -> str:
    """Verdict of "me's `key` <= goal x other's", by the shared noise rule."""
    bound = [goal * v for v in passes(other, key)]
    return within(passes(me, key), bound, key, medians=(me[key], goal * other[key])).word


def _floored(values: Sequence[float]) -> list[float]:
    return [max(v, FAULT_FLOOR) for v in values]


def check_prover(where: str, pattern: str, zk: str, rows: dict[str, Record]) -> list[Check]:
    """The prover-shaped patterns' targets for `zk`: cold and warm time at most
    1.0x the best of `TIME_BASES`, peak RSS (after the cold round and at the
    end) at most 1.10x numpy default's, and on stark_prove minor faults (cold
    round, per warm round) no more than glibc-tuned's.  Records without the
    cold fields are skipped."""
    out: list[Check] = []
    me = rows[zk]
    for key, phase in (("cold_s", "cold"), ("median_s", "warm")):
        bases = {b: rows[b][key] for b in TIME_BASES if b in rows and key in rows[b]}
        if key in me and bases:
            best = min(bases, key=lambda b: bases[b])
            out.append((f"{where} {zk} {phase} time <= 1.0x best of default and peers ({best})",
                        at_most(me, rows[best], key, 1.0), f"{me[key] / bases[best]:.2f}x {best}'s time"))
    if "default" in rows:
        for key, phase in (("cold_rss_bytes", "cold"), ("peak_rss_bytes", "warm")):
            if key in me and key in rows["default"]:
                out.append((f"{where} {zk} {phase} peak RSS <= 1.10x default's",
                            at_most(me, rows["default"], key, 1.10), f"{me[key] / rows['default'][key]:.2f}x default's"))
    if pattern == "stark_prove" and "glibc-tuned" in rows:
        for key, phase in (("cold_minflt", "cold round"), ("minflt_per_round", "per warm round")):
            tuned = rows["glibc-tuned"]
            if key in me and key in tuned:
                verdict = within(_floored(passes(me, key)), _floored(passes(tuned, key)), key,
                                 medians=(max(me[key], FAULT_FLOOR), max(tuned[key], FAULT_FLOOR))).word
                out.append((f"{where} {zk} minor faults {phase} <= glibc-tuned's", verdict,
                            f"{me[key]:.0f} against {tuned[key]:.0f}"))
    return out


def check_idle(where: str, zk: str, rows: dict[str, Record]) -> list[Check]:
    """The footprint targets on `idle`: RSS while idle within 1.05x of numpy
    default's, and the first round after the pause within 1.10x of a warm
    round (both zkalloc's)."""
    me, out = rows[zk], []
    base = rows.get("default")
    if "idle_rss_bytes" in me and base is not None and "idle_rss_bytes" in base:
        r = me["idle_rss_bytes"] / base["idle_rss_bytes"]
        out.append((f"{where} {zk} RSS while idle within 1.05x of default's", at_most(me, base, "idle_rss_bytes", 1.05),
                    f"{r:.2f}x ({me['idle_rss_bytes'] >> 20} MiB vs {base['idle_rss_bytes'] >> 20} MiB)"))
    if "after_idle_s" in me:
        r = me["after_idle_s"] / me["median_s"]
        verdict = within(passes(me, "after_idle_s"), [1.10 * v for v in passes(me, "median_s")], "after_idle_s",
                         medians=(me["after_idle_s"], 1.10 * me["median_s"])).word
        out.append((f"{where} {zk} first round after idle within 1.10x of a warm round", verdict, f"{r:.2f}x"))
    return out


def check_phase(where: str, rows: dict[str, Record]) -> list[Check]:
    """A phase per round (zkalloc-phase) costs no time or memory over the same
    rounds under installed() (zkalloc): time within 1.05x, peak RSS within 1.10x."""
    if "zkalloc-phase" not in rows or "zkalloc" not in rows:
        return []
    me, base = rows["zkalloc-phase"], rows["zkalloc"]
    return [(f"{where} zkalloc-phase {what} <= {goal:.2f}x zkalloc's", at_most(me, base, key, goal),
             f"{me[key] / base[key]:.2f}x zkalloc's")
            for key, what, goal in (("median_s", "time", 1.05), ("peak_rss_bytes", "peak RSS", 1.10))
            if key in me and key in base and me[key] > 0]


#: Recording each phase's peak, left on, within these of installed() (time, peak RSS),
#: and the snapshots' own time within this share of a round; on the prover-shaped patterns.
PEAK_GOALS = {"median_s": 1.02, "peak_rss_bytes": 1.01}
PEAK_SNAPSHOT_SHARE = 0.02
PEAK_PATTERNS = ("stark_prove", "ntt_prover")


def check_peak(where: str, pattern: str, rows: dict[str, Record]) -> list[Check]:
    """Peak recording's targets: a phase per round (peak recording on,
    track=False) against installed(), and what the snapshots themselves took."""
    if pattern not in PEAK_PATTERNS or "zkalloc-phase" not in rows or "zkalloc" not in rows:
        return []
    me, base = rows["zkalloc-phase"], rows["zkalloc"]
    out = [(f"{where} peak recorded: {key} <= {goal:.2f}x installed()'s", at_most(me, base, key, goal),
            f"{me[key] / base[key]:.3f}x") for key, goal in PEAK_GOALS.items()]
    share = me.get("peak_snapshot_s_per_round", 0.0) / me["median_s"]
    out.append((f"{where} peak snapshots <= {PEAK_SNAPSHOT_SHARE:.0%} of a round",
                "met" if share <= PEAK_SNAPSHOT_SHARE else "MISSED", f"{share:.3%} of the round"))
    return out


def check_speed(where: str, pattern: str, size: int, zk: str, rows: dict[str, Record]) -> list[Check]:
    """zkalloc's speed targets on one (pattern, size): within 1.05x of the ideal
    and >= 2.5x the default on fills, >= 1.3x the best peer on phase_burst,
    at least the best peer on the MSM patterns and contention, at least
    tcmalloc on expr_churn and ntt_prover, and never slower than the default."""
    me, out = rows[zk], []
    peers = {p: rows[p]["median_s"] for p in PEERS if p in rows}
    best = min(peers, key=lambda p: peers[p]) if peers else None

    def add(what: str, other: str, goal: float, detail: str) -> None:
        out.append((f"{where} {zk} {what}", at_most(me, rows[other], "median_s", goal), detail))
    speedup = {name: rows[name]["median_s"] / me["median_s"] for name in rows}
    if pattern in ("fft_rounds", "fill") and "ideal" in rows:
        add("within 1.05x of ideal", "ideal", 1.05, f"{1 / speedup['ideal']:.2f}x the ideal's time")
    if pattern in ("fft_rounds", "fill") and size >= 32 << 20 and "default" in rows:
        add(">= 2.5x faster than default", "default", 1 / 2.5, f"{speedup['default']:.2f}x")
    if best and pattern == "phase_burst":
        add(f">= 1.3x faster than best peer ({best})", best, 1 / 1.3, f"{speedup[best]:.2f}x")
    if best and pattern.startswith("msm_"):
        add(f"at least as fast as best peer ({best})", best, 1.0, f"{speedup[best]:.2f}x")
    if "tcmalloc" in rows and pattern in ("expr_churn", "ntt_prover"):
        add("at least as fast as tcmalloc", "tcmalloc", 1.0, f"{speedup['tcmalloc']:.2f}x")
    if best and pattern == "contention":
        add(f"GB/s >= best peer ({best})", best, 1.0, f"{speedup[best]:.2f}x")
    if "default" in rows:
        add("no slower than default", "default", 1.0, f"{speedup['default']:.2f}x")
    return out


def check(records: list[Record]) -> list[Check]:
    """(what, verdict, detail) for every target the records can decide;
    verdict is "met", "MISSED" or "noise" (zkalloc_np._verdict.within)."""
    out: list[Check] = []
    for pattern, size, rows in groups(records):
        where = f"{pattern} {size_label(pattern, size)}"
        out += check_phase(where, rows)
        out += check_peak(where, pattern, rows)
        for zk in ZK:
            if zk not in rows:
                continue
            out += check_speed(where, pattern, size, zk, rows)
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
        data = json.load(f)
    if data.get("kind") == "wholeprog":
        from . import wholeprog
        for program, rows in wholeprog.by_program(data["records"]).items():
            for what, v, ratio in wholeprog.targets(rows):
                print(f"{v.word:<6}  {program} install() {what}: {ratio}; {v.reason}")
        return 0
    for what, verdict, detail in check(data["records"]):
        print(f"{verdict:<6}  {what}: {detail}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
