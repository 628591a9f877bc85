"""Phases around a prover's commitment rounds.

Each round commits to a batch of trace columns: extend them with an NTT
(scratch: every butterfly stage allocates), hash the evaluations row-wise
into leaves (scratch), and keep only the leaves digest and one folded
column.  The round runs inside ``with zkalloc.phase("commit")``: its arrays
come from the size-class cache exactly as under ``installed()`` (the same
hot regions, round after round), and the phase accounts for them: arrays,
bytes, peak, hits and misses, bytes mapped fresh, time allocating, and what
escaped.  The folded column escapes the block on purpose and stays valid.
A warm round maps fresh memory only for the folded column it keeps (its
region leaves with it); its few misses are served by moving idle regions of
other sizes.  After ``zkalloc.release()`` (the cache emptied) the named
phase's hot start makes its last working set resident at entry, so that
round maps no fresh memory itself.  The example prints, per round, the
misses, those served from idle memory, and the fresh MiB mapped.  Every
result is checked bit for bit against numpy's own allocator.

    python examples/phases.py --size 2^16 --columns 4 --rounds 5
    python -m zkalloc_np run examples/phases.py --size 2^16 --single

``--single`` skips the reference round under numpy's own allocator (the
rounds are then checked against each other): under a process-wide install
(``python -m zkalloc_np run`` or ``compare``) that reference would not be
numpy's allocator, so without ``--single`` the example refuses to run there.
"""
from __future__ import annotations

import argparse
import hashlib
import sys
import time

import numpy as np
from _common import add_common_arguments, positive_int, refuse_under_process_wide_install, size_label

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


def run_size(n: int, column_count: int, rounds: int, single: bool) -> zk.PhaseStats:
    """The commitment rounds at one size; returns the last round's phase stats."""
    ntt = NTT(n)
    columns = [random_field_elements(ntt.n, seed=i) for i in range(column_count)]
    # the same round under numpy's allocator (skipped with --single: the first phase round is the reference)
    expected = None if single else commit_round(ntt, columns)

    kept, digests, misses, repurposed, fresh = [], [], [], [], []
    start = time.perf_counter()
    for r in range(rounds):
        if r == rounds - 1 and rounds > 1:
            zk.release()   # a cold cache: the hot start brings the working set back
        with zk.phase("commit") as ph:
            digest, folded = commit_round(ntt, columns)
        kept.append(folded)
        digests.append(digest)
        misses.append(ph.stats.misses)
        repurposed.append(ph.stats.repurposed)
        fresh.append(round(ph.stats.fresh_bytes / 2**20, 1))
    elapsed = time.perf_counter() - start

    reference = expected if expected is not None else (digests[0], kept[0])
    assert all(d == reference[0] for d in digests), "phase changed a digest"
    assert all(f.tobytes() == reference[1].tobytes() for f in kept), "phase changed a folded column"
    against = "the first round's" if single else "numpy's allocator's"
    print(f"{size_label(n)}: {rounds} commitment rounds of {column_count} columns in {elapsed:.3f} s, "
          f"results identical to {against} (bit for bit)")
    print(f"misses per round: {misses}, of which served from idle memory of other sizes: {repurposed}")
    print(f"fresh memory mapped per round (MiB): {fresh}" + (" (the last round ran after zkalloc.release(): "
          f"its hot start made {ph.stats.hot_start_bytes / 2**20:.1f} MiB resident at entry)" if rounds > 1 else ""))
    print(ph.stats)
    return ph.stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, ["2^18"], single_help=(
        "no reference round under numpy's own allocator: the rounds are checked against each other (the form "
        "python -m zkalloc_np run and compare need)"), default_rounds=5, rounds_help="commitment rounds per size")
    parser.add_argument("--columns", type=positive_int, default=4, help="trace columns per round (default 4)")
    args = parser.parse_args(argv)
    refuse_under_process_wide_install(parser, args)
    for n in args.size:
        run_size(n, args.columns, args.rounds, args.single)
    totals = zk.stats().phases["commit"]
    print(f"all 'commit' phases: {totals.phases} runs, {totals.arrays} arrays, "
          f"{totals.misses} misses, {totals.escaped_arrays} escaped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
