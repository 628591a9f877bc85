"""Arena phases around a prover's commitment rounds.

Each round commits to a batch of trace columns: extend them with an NTT
(scratch: every butterfly stage allocates), hash the evaluations row-wise
into leaves (scratch), and keep only the leaves digest and one folded
column.  The scratch dies at the end of the round, so the round runs inside
``with zkalloc.phase("commit")``: its big temporaries are bump-allocated from
an arena and all taken back at once when the block ends; the folded column
escapes the block and stays valid (its chunk is pinned until it is freed).

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

    kept = []
    start = time.perf_counter()
    for _ in range(args.rounds):
        with zk.phase("commit") as ph:
            digest, folded = commit_round(ntt, columns)
        kept.append(folded)
    elapsed = time.perf_counter() - start

    assert digest == expected[0] and all((f == expected[1]).all() for f in kept), "phase changed a result"
    st = ph.stats
    print(f"{args.rounds} commitment rounds of {args.columns} columns x 2^{args.log_n} in {elapsed:.3f} s, "
          "results identical to numpy's allocator")
    print(f"last phase: {st.arrays} arrays, {st.bytes_allocated / 2**20:.1f} MiB allocated, "
          f"peak {st.peak_bytes / 2**20:.1f} MiB, {st.chunks} chunks ({st.chunks_reused} reused resident), "
          f"{st.escaped_arrays} escaped ({st.escaped_bytes / 2**20:.2f} MiB), reset {st.reset_seconds * 1e6:.1f} us")
    totals = zk.stats().phases["commit"]
    print(f"all 'commit' phases: {totals.phases} runs, {totals.arrays} arrays, "
          f"{totals.chunks_reused}/{totals.chunks} chunks reused, {totals.escaped_arrays} escaped")


if __name__ == "__main__":
    main()
