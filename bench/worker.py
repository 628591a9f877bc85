"""One allocator, one pattern, in this process: prints one JSON record per size."""
from __future__ import annotations

import argparse
import json
import resource
import statistics

from .allocators import ALLOCATORS, activated
from .patterns import PATTERNS


def measure(allocator: str, pattern: str, size: int, rounds: int, warmup: int) -> dict:
    module = PATTERNS[pattern]
    ideal = ALLOCATORS[allocator].ideal
    with activated(allocator):
        module.run(size, warmup, ideal)
        times = module.run(size, rounds, ideal)
        record = {
            "allocator": allocator, "pattern": pattern, "size": size, "rounds": rounds,
            "median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
            "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        }
        if allocator.startswith("zkalloc"):
            import zkalloc_np as zk
            record["hit_rate"] = zk.stats().hit_rate
    return record


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--allocator", required=True, choices=sorted(ALLOCATORS))
    parser.add_argument("--pattern", required=True, choices=sorted(PATTERNS))
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--rounds", type=int, required=True)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(measure(args.allocator, args.pattern, args.size, args.rounds, args.warmup)))


if __name__ == "__main__":
    main()
