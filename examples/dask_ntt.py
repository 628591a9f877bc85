"""NTT batches mapped over a Dask LocalCluster, workers without and with zkalloc.

    python examples/dask_ntt.py --size 2^18 --batches 8 --per-batch 2 --workers 2
    python -m zkalloc_np compare examples/dask_ntt.py --size 2^18 --single

Each task multiplies `--per-batch` pairs of BabyBear polynomials of n points
by NTT (3 transforms each, plain numpy) and returns a sha256 of each product.
The same cluster runs every round twice: once with numpy's default allocator
in the workers, once with ``ZkallocPlugin`` registered (which installs
zkalloc process-wide in each worker, so the task threads use it) and
unregistered again afterwards.  The results must match; the table shows
median seconds per round, and each worker's zkalloc stats come back with
``worker_stats(client)``.  With ``--single`` every round runs with the
workers under the allocator in effect in this process (see --help).
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import statistics
import sys
import time

from _common import Row, add_common_arguments, positive_int, size_label

import zkalloc_np as zkalloc


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
    add_common_arguments(parser, ["2^18"], single_help=(
        "no comparison: every round with the workers under the allocator in effect in this process "
        "(ZkallocPlugin when zkalloc is installed process-wide here, as under python -m zkalloc_np run and "
        "compare; numpy's default otherwise)"))
    parser.add_argument("--batches", type=positive_int, default=8, help="tasks per round (default 8)")
    parser.add_argument("--per-batch", type=positive_int, default=2, help="products per task (default 2)")
    parser.add_argument("--workers", type=positive_int, default=2, help="worker processes (default 2)")
    args = parser.parse_args(argv)

    from distributed import Client, LocalCluster

    from zkalloc_np.dask import ZkallocPlugin, worker_stats

    # The workers are separate processes (spawned, not forked), so a process-wide install here does
    # not reach them, and --single passes the allocator in effect here on to them with the plugin.
    # `run` also sets ZKALLOC_SUBPROCESS, which would install zkalloc in every worker: the
    # comparison's workers must start without it, so that the plugin alone decides.
    if not args.single:
        os.environ.pop("ZKALLOC_SUBPROCESS", None)
    plugin_always = args.single and zkalloc.is_installed()
    how = "with the workers under " + ("ZkallocPlugin" if plugin_always else "numpy's default") \
        if args.single else "per allocator of the workers, alternating"
    print(f"Dask: {args.batches} tasks x {args.per_batch} NTT products over {args.workers} worker processes;\n"
          f"{args.rounds} timed rounds {how}; median seconds per round.\n")
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster, Client(cluster) as client:
        if plugin_always:
            client.register_plugin(ZkallocPlugin())
        rows = []
        for n in args.size:
            _, expected = one_round(client, n, args.batches, args.per_batch)   # warm-up: imports, twiddles
            default_times, zk_times = [], []
            for _ in range(args.rounds):
                seconds, results = one_round(client, n, args.batches, args.per_batch)
                default_times.append(seconds)
                if results != expected:
                    raise AssertionError("results differ between rounds")
                if args.single:
                    continue
                client.register_plugin(ZkallocPlugin())
                seconds, zk_results = one_round(client, n, args.batches, args.per_batch)
                zk_times.append(seconds)
                client.unregister_worker_plugin(ZkallocPlugin.name)
                if zk_results != expected:
                    raise AssertionError("results differ between allocators")
            rows.append(Row(size_label(n), statistics.median(default_times),
                            statistics.median(zk_times) if zk_times else float("nan")))
        if args.single:
            column = "seconds, workers under " + ("zkalloc (ZkallocPlugin)" if plugin_always else "numpy default")
            print(f"{'points':>10}  {column}")
            for row in rows:
                print(f"{row.label:>10}  {row.default_s:>{len(column) - 1}.3f}s")
            print("\nchecked: every round's products are equal")
        else:
            print(f"{'points':>10}  {'workers: numpy default':>22}  {'workers: zkalloc':>16}  {'default/zkalloc':>15}")
            for row in rows:
                print(f"{row.label:>10}  {row.default_s:>21.3f}s  {row.zkalloc_s:>15.3f}s  {row.speedup:>14.2f}x")
            print("\nchecked: every round's products are equal under both allocators")
        for address, stats in sorted(worker_stats(client).items()):
            print(f"worker {address}: {stats['hits']} hits, {stats['misses']} misses, "
                  f"hit rate {stats['hit_rate']:.1%}, peak in use {stats['peak_bytes_in_use'] >> 20} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
