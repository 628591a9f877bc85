"""The cap on idle bytes: never exceeded, least recently used evicted first."""
import numpy as np

import zkalloc_np as zk
from conftest import MiB


def test_working_set_larger_than_cap(fresh):
    zk.configure(cache_bytes=24 * MiB)
    with zk.installed():
        live = [np.ones(n * MiB // 8) for n in (4, 8, 8, 12, 16)]
        for _ in range(len(live)):
            live.pop()
            assert zk.stats().bytes_cached <= 24 * MiB
    s = zk.stats()
    assert s.evictions > 0
    assert s.peak_bytes_cached <= 24 * MiB


def test_lru_keeps_the_hot_class(fresh):
    zk.configure(cache_bytes=20 * MiB)
    with zk.installed():
        old = np.ones(8 * MiB // 8)
        hot = np.ones(4 * MiB // 8)
        newcomer = np.ones(12 * MiB // 8)   # live before anything is idle: mapped fresh
        del old            # oldest idle region
        for _ in range(3):  # the hot class goes round and round
            del hot
            hot = np.ones(4 * MiB // 8)
        del hot
        del newcomer       # 8 + 4 + 12 > 20: the 8 MiB region goes
    classes = {c.bytes: c for c in zk.stats().classes}
    assert classes[4 * MiB].cached == 1
    assert classes[12 * MiB].cached == 1
    assert classes[8 * MiB].cached == 0
    assert zk.stats().evictions == 1


def test_lowering_the_cap_trims_now(fresh):
    with zk.installed():
        arrays = [np.ones(MiB) for _ in range(4)]   # 8 MiB each
        del arrays
    assert zk.stats().bytes_cached == 32 * MiB
    zk.configure(cache_bytes=10 * MiB)
    assert zk.stats().bytes_cached <= 10 * MiB


def test_region_larger_than_cap_is_not_cached(fresh):
    zk.configure(cache_bytes=4 * MiB)
    with zk.installed():
        a = np.ones(MiB)   # 8 MiB
        assert zk.owns(a)
        del a
    s = zk.stats()
    assert s.uncached_frees == 1 and s.bytes_cached == 0 and s.bytes_mapped == 0


def test_cap_zero_caches_nothing(fresh):
    zk.configure(cache_bytes=0)
    with zk.installed():
        for _ in range(3):
            a = np.ones(MiB)
            del a
    s = zk.stats()
    assert s.hits == 0 and s.bytes_cached == 0
