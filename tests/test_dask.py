"""ZkallocPlugin on a real LocalCluster of two worker processes."""
from __future__ import annotations

import logging
import os

import pytest

import zkalloc_np as zk

distributed = pytest.importorskip("distributed")
from zkalloc_np.dask import ZkallocPlugin, worker_stats  # noqa: E402

MiB = 1 << 20


def allocate_in_task(rounds: int) -> dict:
    """A task: allocate and free 4 MiB arrays; report where they came from."""
    import numpy as np

    import zkalloc_np
    owned = []
    for _ in range(rounds):
        a = np.ones(4 * MiB // 8)
        owned.append(zkalloc_np.owns(a))
        del a
    return {"owns": owned, "installed": zkalloc_np.is_installed(), "pid": os.getpid(),
            "cache_bytes": zkalloc_np.settings()["cache_bytes"]}


def test_plugin_settings_are_checked_on_the_client():
    with pytest.raises(ValueError, match="unknown setting"):
        ZkallocPlugin(cache_size="1G")
    with pytest.raises(ValueError, match="cache_bytes"):
        ZkallocPlugin(cache_bytes="lots")
    assert ZkallocPlugin(cache_bytes="64M").settings == {"cache_bytes": 64 * MiB}


def test_plugin_installs_in_every_worker_process():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=2, processes=True,
                                  dashboard_address=None, silence_logs=logging.ERROR) as cluster, \
            distributed.Client(cluster) as client:
        workers = sorted(client.scheduler_info()["workers"])
        assert len(workers) == 2
        client.register_plugin(ZkallocPlugin(cache_bytes="96M"))
        assert set(client.run(zk.is_installed).values()) == {True}
        before = worker_stats(client)
        results = {}
        for address in workers:
            futures = [client.submit(allocate_in_task, 3, workers=[address], pure=False) for _ in range(2)]
            results[address] = client.gather(futures)
        after = worker_stats(client)
        pids = {r["pid"] for rs in results.values() for r in rs}
        assert len(pids) == 2 and os.getpid() not in pids
        for address in workers:
            for r in results[address]:
                assert r["installed"] and r["cache_bytes"] == 96 * MiB
                assert all(r["owns"]), "a task thread's array did not come from the cache"
            served = (after[address]["hits"] + after[address]["misses"]
                      - before[address]["hits"] - before[address]["misses"])
            assert served >= 6   # 2 tasks x 3 arrays, all through the cache
            # Each task thread's first array may map a region; the rest reuse.
            assert after[address]["hits"] >= before[address]["hits"] + 2
            assert after[address]["installed"] and after[address]["cap_bytes"] == 96 * MiB
        client.unregister_worker_plugin("zkalloc")
        assert set(client.run(zk.is_installed).values()) == {False}
        assert not zk.is_installed(), "the client process must be left alone"
