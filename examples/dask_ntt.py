"""NTT batches mapped over a Dask LocalCluster, workers without and with zkalloc.

    python examples/dask_ntt.py --size 2^18 --batches 8 --per-batch 2 --workers 2

Each task multiplies `--per-batch` pairs of BabyBear polynomials of n points
by NTT (3 transforms each, plain numpy) and returns a sha256 of each product.
The same cluster runs every round twice: once with numpy's default allocator
in the workers, once with ``ZkallocPlugin`` registered (which installs
zkalloc process-wide in each worker, so the task threads use it) and
unregistered again afterwards.  The results must match; the table shows
median seconds per round, and each worker's zkalloc stats come back with
``worker_stats(client)``.
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import statistics
import sys
import time

from _common import parse_size, positive_int, size_label


def ntt_batch(n: int, seeds: list[int]) -> list[str]:
    """Multiply polynomial pairs by NTT; sha256 of each product."""
    from zkalloc_np.ntt import NTT, multiply_polynomials, random_field_elements
    ntt = NTT(n)
    digests = []
    for seed in seeds:
        a, b = random_field_elements(n, 2 * seed), random_field_elements(n, 2 * seed + 1)
        digests.append(hashlib.sha256(multiply_polynomials(ntt, a, b).tobytes()).hexdigest())
    return digests


def one_round(client, n: int, batches: int, per_batch: int) -> tuple[float, list[list[str]]]:
    """Map every batch over the cluster; (seconds, results)."""
    start = time.perf_counter()
    futures = client.map(ntt_batch, [n] * batches,
                         [list(range(b * per_batch, (b + 1) * per_batch)) for b in range(batches)], pure=False)
    results = client.gather(futures)
    return time.perf_counter() - start, results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=parse_size, default=parse_size("2^18"), help="NTT points (default 2^18)")
    parser.add_argument("--batches", type=positive_int, default=8, help="tasks per round (default 8)")
    parser.add_argument("--per-batch", type=positive_int, default=2, help="products per task (default 2)")
    parser.add_argument("--workers", type=positive_int, default=2, help="worker processes (default 2)")
    parser.add_argument("--rounds", type=positive_int, default=3, help="timed rounds per allocator (default 3)")
    args = parser.parse_args(argv)

    from distributed import Client, LocalCluster

    from zkalloc_np.dask import ZkallocPlugin, worker_stats

    print(f"Dask: {args.batches} tasks x {args.per_batch} NTT products of {size_label(args.size)} points over "
          f"{args.workers} worker processes;\n{args.rounds} timed rounds per allocator, alternating; "
          "median seconds per round.\n")
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        _, expected = one_round(client, args.size, args.batches, args.per_batch)   # warm-up: imports, twiddles
        default_times, zk_times = [], []
        for _ in range(args.rounds):
            seconds, results = one_round(client, args.size, args.batches, args.per_batch)
            default_times.append(seconds)
            client.register_plugin(ZkallocPlugin())
            seconds, zk_results = one_round(client, args.size, args.batches, args.per_batch)
            zk_times.append(seconds)
            client.unregister_worker_plugin(ZkallocPlugin.name)
            if results != expected or zk_results != expected:
                raise AssertionError("results differ between rounds or allocators")
        default_s, zk_s = statistics.median(default_times), statistics.median(zk_times)
        print(f"{'points':>10}  {'numpy default':>14}  {'zkalloc':>10}  {'default/zkalloc':>15}")
        print(f"{size_label(args.size):>10}  {default_s:>13.3f}s  {zk_s:>9.3f}s  {default_s / zk_s:>14.2f}x")
        print("\nchecked: every round's products are equal under both allocators")
        for address, stats in sorted(worker_stats(client).items()):
            print(f"worker {address}: {stats['hits']} hits, {stats['misses']} misses, "
                  f"hit rate {stats['hit_rate']:.1%}, peak in use {stats['peak_bytes_in_use'] >> 20} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
