"""A prover's witness in secret memory.

The witness (private inputs and the trace derived from them) is made inside
``with zkalloc.secret():``: every array there gets its own mapping between
two PROT_NONE guard pages, locked in RAM (never swapped), excluded from core
dumps, zeroed in a forked child, and wiped when freed.  The public commitment
to it is ordinary memory.

    python examples/secret_witness.py [--size 2^16] [--rounds 3] [--lenient]

Without CAP_IPC_LOCK, mlock is limited by RLIMIT_MEMLOCK (`ulimit -l`); strict
mode (the default) then refuses with an error that says so; --lenient goes on
with a warning and shows which protections each array got.
"""
from __future__ import annotations

import argparse
import hashlib
import sys

import numpy as np
from _common import add_common_arguments, size_label

import zkalloc_np as zk
from zkalloc_np.ntt import NTT, P


def witness_round(ntt: NTT, strict: bool, seed: int) -> tuple[np.ndarray, np.ndarray, str]:
    """A witness and its trace in secret memory; (witness, trace, public commitment)."""
    with zk.secret(strict=strict):
        # Private input straight into secret memory; the trace derived from it stays there too.
        witness = np.frombuffer(np.random.default_rng(seed).bytes(8 * ntt.n), dtype=np.uint64) % P
        trace = ntt.forward(witness)
        commitment = hashlib.sha256(trace.tobytes()).hexdigest()
    return witness, trace, commitment


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_arguments(parser, ["2^16"], default_rounds=1, rounds_help="witnesses made and wiped per size",
                         single_help="accepted for the same options as every example: this one compares "
                                     "nothing, it always runs under zkalloc.secret() only")
    parser.add_argument("--lenient", action="store_true", help="strict=False: warn instead of refusing")
    args = parser.parse_args(argv)
    for n in args.size:
        ntt = NTT(n)
        for seed in range(args.rounds):
            try:
                witness, trace, commitment = witness_round(ntt, not args.lenient, seed)
            except zk.SecretMemoryError as exc:
                raise SystemExit(f"refused: {exc}") from None
            info = zk.secret_info(witness)
            assert info is not None and zk.is_secret(trace)
            assert (ntt.inverse(trace) == witness).all()
            before = zk.stats()
            del witness, trace
            after = zk.stats()
        print(f"witness: {size_label(n)} = {n} field elements, {info.nbytes} bytes in a {info.mapped_bytes}-byte "
              "mapping")
        print(f"  guarded={info.guarded} locked={info.locked} dontdump={info.dontdump} wipeonfork={info.wipeonfork}")
        print(f"commitment (public): {commitment[:32]}...")
        print(f"secret arrays live: {before.secret_arrays} -> {after.secret_arrays}, "
              f"wiped on free so far: {after.secret_wiped_arrays} ({after.secret_wiped_bytes / 2**20:.2f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
