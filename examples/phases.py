"""Phases around a prover's commitment rounds.

Each round commits to a batch of trace columns: extend them with an NTT
(scratch: every butterfly stage allocates), hash the evaluations row-wise
into leaves (scratch), and keep only the leaves digest and one folded
column.  The round runs inside ``with zkalloc.phase("commit")``: its arrays
come from the size-class cache exactly as under ``installed()`` (the same
hot regions, round after round), and the phase accounts for them: arrays,
bytes, peak, hits and misses, bytes mapped fresh, time allocating, and what
escaped.  The folded column escapes the block on purpose and stays valid.
After ``zkalloc.release()`` (the cache emptied) the named phase's hot start
makes its last working set resident at entry, so that round has no misses
either.  Every result is checked bit for bit against numpy's own allocator.

    python examples/phases.py --log-n 16 --columns 4 --rounds 5
"""
from __future__ import annotations

import argparse
import hashlib
import time

import numpy as np

import zkalloc_np as zk
from zkalloc_np.ntt import NTT, P, random_field_elements


def commit_round(ntt: NTT, columns: list[np.ndarray]) -> tuple[bytes, np.ndarray]:
    """Commit to the columns; return the digest and a folded first column."""
    evals = np.stack([ntt.forward(c) for c in columns], axis=1)      # n x k, scratch
    leaves = hashlib.sha256(np.ascontiguousarray(evals).tobytes()).digest()
    half = ntt.n // 2
    challenge = np.uint64(int.from_bytes(leaves[:4], "little") % P)
    folded = (evals[:half, 0] + challenge * evals[half:, 0]) % P      # escapes the phase
    return leaves, folded


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log-n", type=int, default=18, help="log2 of the column length (default 18)")
    parser.add_argument("--columns", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    ntt = NTT(1 << args.log_n)
    columns = [random_field_elements(ntt.n, seed=i) for i in range(args.columns)]
    expected = commit_round(ntt, columns)          # the same round, numpy's allocator

    kept, digests, misses = [], [], []
    start = time.perf_counter()
    for r in range(args.rounds):
        if r == args.rounds - 1:
            zk.release()   # a cold cache: the hot start brings the working set back
        with zk.phase("commit") as ph:
            digest, folded = commit_round(ntt, columns)
        kept.append(folded)
        digests.append(digest)
        misses.append(ph.stats.misses)
    elapsed = time.perf_counter() - start

    assert all(d == expected[0] for d in digests), "phase changed a digest"
    assert all(f.tobytes() == expected[1].tobytes() for f in kept), "phase changed a folded column"
    print(f"{args.rounds} commitment rounds of {args.columns} columns x 2^{args.log_n} in {elapsed:.3f} s, "
          "results identical to numpy's allocator (bit for bit)")
    print(f"misses per round: {misses} (the last round ran after zkalloc.release(): "
          f"its hot start made {ph.stats.hot_start_bytes / 2**20:.1f} MiB resident at entry)")
    print(ph.stats)
    totals = zk.stats().phases["commit"]
    print(f"all 'commit' phases: {totals.phases} runs, {totals.arrays} arrays, "
          f"{totals.misses} misses, {totals.escaped_arrays} escaped")


if __name__ == "__main__":
    main()
