"""One allocator, one pattern, one size, in this process: prints one JSON record.

Run by ``python -m bench`` in a fresh subprocess per allocator, with the
allocator's environment (LD_PRELOAD, malloc tunables) already set.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from typing import Any

from zkalloc_np.cli import sanitizer as _sanitizer

from . import allocators
from .allocators import ALLOCATORS, activated
from .patterns import PATTERNS, contention


def plan_rounds(round_s: float, rounds: int, min_rounds: int, max_seconds: float) -> int:
    """Timed rounds: `rounds`, cut so they take about `max_seconds`, never below `min_rounds`."""
    if round_s <= 0 or max_seconds == float("inf"):
        return rounds
    return max(min_rounds, min(rounds, int(max_seconds / round_s)))


#: Seconds the phases' peak snapshots took, summed over rounds (a phase per round).
_snapshot_s = [0.0]


def _wrapped(body: Any, round_ctx: Any) -> Any:
    """The body run inside a per-round context (a phase), or as it is."""
    if round_ctx is None:
        return body

    def in_round() -> Any:
        with round_ctx() as ph:
            result = body()
        peak = ph.stats.peak
        _snapshot_s[0] += peak.snapshot_seconds if peak is not None else 0.0
        return result
    return in_round


def _time_round(body: Any) -> float:
    """Seconds of one round: what a self-timed pattern's body returns (a
    float), else the wall time of the call."""
    t0 = time.perf_counter()
    reported = body()
    elapsed = time.perf_counter() - t0
    return reported if isinstance(reported, float) else elapsed


def _usage() -> tuple[int, int]:
    """(minor faults so far, peak RSS in bytes) of this process, all threads."""
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_minflt, u.ru_maxrss * 1024


def measure(allocator: str, pattern: str, size: int, rounds: int, warmup: int,
            min_rounds: int = 3, max_seconds: float = float("inf")) -> dict[str, Any]:
    """Warm up (at least one round, at most `warmup`, stopping after a third
    of `max_seconds`), then time the rounds; the record of this run.

    The first warm-up round is the cold one (the first round in this fresh
    process, after the pattern's untimed setup): its time, the minor faults
    it took and the peak RSS after it are recorded apart as ``cold_s``,
    ``cold_minflt`` and ``cold_rss_bytes``.  The timed (warm) rounds report
    their minor faults per round (``minflt_per_round``) and the peak RSS at
    the end (``peak_rss_bytes``, the process's high-water mark)."""
    module = PATTERNS[pattern]
    spec = ALLOCATORS[allocator]
    # the peer's library, not a sanitizer runtime kept in front of it (zkalloc_np.cli.sanitizer)
    own = _sanitizer.own_preloads()
    if spec.libraries and own and not all(allocators.preloaded(e) for e in own):
        raise RuntimeError(f"{allocator}: LD_PRELOAD={os.environ['LD_PRELOAD']} is not mapped in this process")
    contention.thread_context = allocators.thread_entry(allocator)
    zk: Any = None
    with activated(allocator):
        settings = module.zkalloc_settings
        if settings and allocator.startswith("zkalloc"):
            import zkalloc_np
            zkalloc_np.configure(**settings)
        body = _wrapped(module.prepare(size, spec.ideal), allocators.round_context(allocator))
        faults_before, _ = _usage()
        started = time.perf_counter()
        warm: list[float] = [_time_round(body)]   # the cold round: the first warm-up round
        faults_after, cold_rss = _usage()
        cold = {"cold_s": warm[0], "cold_minflt": faults_after - faults_before, "cold_rss_bytes": cold_rss}
        while len(warm) < max(warmup, 1) and time.perf_counter() - started <= max_seconds / 3:
            warm.append(_time_round(body))
        if allocator.startswith("zkalloc"):
            import zkalloc_np
            zk = zkalloc_np
            zk.reset_stats()   # the hit rate of the timed rounds
            _snapshot_s[0] = 0.0
        n = plan_rounds(min(warm), rounds, min_rounds, max_seconds)
        faults_before, _ = _usage()
        times = [_time_round(body) for _ in range(n)]
        faults_after, peak_rss = _usage()
        record: dict[str, Any] = {
            "allocator": allocator, "pattern": pattern, "size": size, "rounds": n,
            "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "peak_rss_bytes": peak_rss, "minflt_per_round": (faults_after - faults_before) / n, **cold,
        }
        if module.after_rounds is not None:
            record.update(module.after_rounds(size, body))
        if module.bytes_per_round is not None:
            record["gb_per_s"] = module.bytes_per_round(size) / record["median_s"] / 1e9
        if zk is not None:
            st = zk.stats()
            record["hit_rate"] = st.hit_rate
            record["zk_hits"], record["zk_misses"] = st.hits, st.misses
            if allocators.round_context(allocator) is not None:   # what recording each phase's peak cost
                record["peak_snapshot_s_per_round"] = _snapshot_s[0] / n
    if own:   # the peer's library, not the sanitizer runtime in front of it
        record["preload"] = ":".join(own)
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker")
    parser.add_argument("--allocator", required=True, choices=sorted(ALLOCATORS))
    parser.add_argument("--pattern", required=True, choices=sorted(PATTERNS))
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--min-rounds", type=int, default=3)
    parser.add_argument("--max-seconds", type=float, default=float("inf"))
    args = parser.parse_args(argv)
    record = measure(args.allocator, args.pattern, args.size, args.rounds, args.warmup,
                     args.min_rounds, args.max_seconds)
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
