"""A prover's witness in secret memory.

The witness (private inputs and the trace derived from them) is made inside
``with zkalloc.secret():``: every array there gets its own mapping between
two PROT_NONE guard pages, locked in RAM (never swapped), excluded from core
dumps, zeroed in a forked child, and wiped when freed.  The public commitment
to it is ordinary memory.

    python examples/secret_witness.py [--size 16] [--lenient]

Without CAP_IPC_LOCK, mlock is limited by RLIMIT_MEMLOCK (`ulimit -l`); strict
mode (the default) then refuses with an error that says so; --lenient goes on
with a warning and shows which protections each array got.
"""
from __future__ import annotations

import argparse
import hashlib

import numpy as np

import zkalloc_np as zk
from zkalloc_np.ntt import NTT, P


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=16, help="log2 of the witness length (default 16)")
    parser.add_argument("--lenient", action="store_true", help="strict=False: warn instead of refusing")
    args = parser.parse_args()
    n = 1 << args.size
    ntt = NTT(n)

    try:
        with zk.secret(strict=not args.lenient):
            # Private input straight into secret memory; the trace derived from it stays there too.
            witness = np.frombuffer(np.random.default_rng(7).bytes(8 * n), dtype=np.uint64) % P
            trace = ntt.forward(witness)
            commitment = hashlib.sha256(trace.tobytes()).hexdigest()
    except zk.SecretMemoryError as exc:
        raise SystemExit(f"refused: {exc}") from None

    info = zk.secret_info(witness)
    assert info is not None and zk.is_secret(trace)
    assert (ntt.inverse(trace) == witness).all()
    print(f"witness: {n} field elements, {info.nbytes} bytes in a {info.mapped_bytes}-byte mapping")
    print(f"  guarded={info.guarded} locked={info.locked} dontdump={info.dontdump} wipeonfork={info.wipeonfork}")
    print(f"commitment (public): {commitment[:32]}...")
    before = zk.stats()
    del witness, trace
    after = zk.stats()
    print(f"secret arrays live: {before.secret_arrays} -> {after.secret_arrays}, "
          f"wiped on free so far: {after.secret_wiped_arrays} ({after.secret_wiped_bytes / 2**20:.2f} MiB)")


if __name__ == "__main__":
    main()
