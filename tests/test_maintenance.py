"""soften, release and reserve."""
import numpy as np
import pytest

import zkalloc_np as zk
from conftest import MiB


def mapped_ranges():
    ranges = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            ranges.append((lo, hi))
    return ranges


def is_mapped(addr):
    return any(lo <= addr < hi for lo, hi in mapped_ranges())


def test_release_unmaps_every_idle_region(fresh):
    with zk.installed():
        arrays = [np.ones(n * MiB // 8) for n in (1, 3, 8)]
        addresses = [a.__array_interface__["data"][0] for a in arrays]
        keep = np.ones(2 * MiB // 8)
        del arrays
    assert all(is_mapped(a) for a in addresses)
    released = zk.release()
    assert released == (1 + 3 + 8) * MiB
    assert not any(is_mapped(a) for a in addresses)
    s = zk.stats()
    assert s.bytes_cached == 0 and s.bytes_mapped == s.bytes_in_use == 2 * MiB
    assert s.released_bytes == released
    assert keep.sum() == 2 * MiB // 8   # arrays in use are untouched


def test_soften_then_reuse(fresh):
    with zk.installed():
        a = np.ones(4 * MiB // 8)
        del a
        assert zk.soften() == 4 * MiB
        b = np.empty(4 * MiB // 8)
        b[:] = 5.0
        assert zk.stats().hits == 1
    assert (b == 5.0).all()
    assert zk.stats().softened_bytes == 4 * MiB


def test_reserve_prefaults_and_hits(fresh):
    assert zk.reserve(3 * MiB, count=2) == 2
    s = zk.stats()
    assert s.bytes_cached == 2 * s.classes[0].bytes
    zk.reset_stats()
    with zk.installed():
        a, b = np.empty(3 * MiB, np.uint8), np.empty(3 * MiB, np.uint8)
    s = zk.stats()
    assert (s.hits, s.misses) == (2, 0)
    del a, b


def test_reserve_respects_the_cap(fresh):
    zk.configure(cache_bytes=8 * MiB)
    assert zk.reserve(4 * MiB, count=5) == 2


@pytest.mark.parametrize("args", [(0, 1), (-1, 1), (MiB, -1), ("lots", 1), (MiB, 1.5), (2**40 * 100, 1)])
def test_reserve_bad_arguments(args):
    with pytest.raises(ValueError):
        zk.reserve(*args)
