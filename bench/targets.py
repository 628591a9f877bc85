"""Check a saved run against the speed targets of the benchmark issue.

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


def check(records: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(what, verdict, detail) for every target the records can decide;
    verdict is "met", "MISSED" or "noise" (missed by less than the pass-to-pass
    spread of the two records compared)."""
    out: list[tuple[str, str, str]] = []
    for pattern, size, rows in groups(records):
        where = f"{pattern} {size_label(pattern, size)}"
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
