"""Stats: counts that add up, JSON-ready, readable."""
import json

import numpy as np
import pytest

import zkalloc_np as zk
from conftest import MiB


def test_counts_and_gauges(fresh):
    with zk.installed():
        for _ in range(4):
            a = np.empty(MiB, np.uint8)
            del a
        b = np.empty(3 * MiB, np.uint8)
    s = zk.stats()
    assert (s.hits, s.misses) == (3, 2)
    assert s.hit_rate == pytest.approx(3 / 5)
    # The 3 MiB miss took the idle 1 MiB region's pages (gathered) and
    # faulted only the 2 MiB it lacked.
    assert s.bytes_in_use == 3 * MiB and s.bytes_cached == 0
    assert s.bytes_mapped == 3 * MiB and s.peak_bytes_mapped == 3 * MiB
    assert (s.repurposed, s.gathered, s.repurposed_bytes, s.fresh_tail_bytes) == (1, 1, MiB, 2 * MiB)
    by_size = {c.bytes: c for c in s.classes}
    assert (by_size[MiB].hits, by_size[MiB].misses, by_size[MiB].cached) == (3, 1, 0)
    assert by_size[3 * MiB].in_use == 1
    del b


def test_as_dict_is_json(fresh):
    with zk.installed():
        np.ones(MiB)
    d = json.loads(json.dumps(zk.stats().as_dict()))
    assert d["misses"] == 1 and d["classes"][0]["bytes"] == 8 * MiB
    for key in ("hits", "misses", "hit_rate", "bytes_in_use", "bytes_cached", "peak_bytes_cached",
                "bytes_mapped", "evictions", "cap_bytes", "thp"):
        assert key in d


def test_str_is_readable(fresh):
    with zk.installed():
        np.ones(MiB)
    text = str(zk.stats())
    assert "hit rate" in text and "8.0 MiB" in text and "cap" in text


def test_stats_is_frozen():
    with pytest.raises(AttributeError):
        zk.stats().hits = 5


def test_reset_keeps_gauges(fresh):
    with zk.installed():
        keep = np.ones(MiB)
    zk.reset_stats()
    s = zk.stats()
    assert s.misses == 0 and s.bytes_in_use == 8 * MiB
    del keep


def test_thp_reflects_setting(fresh):
    zk.configure(hugepages=False)
    assert zk.stats().thp is False


def test_small_requests_are_counted_by_size(fresh):
    with zk.installed():
        kept = [np.ones(n, np.uint8) for n in (100, 100, 3000, 40000)]
    s = zk.stats()
    by_size = s.small_allocs_by_size
    assert by_size[64] >= 2 and by_size[2048] >= 1 and by_size[32768] >= 1
    assert sum(by_size.values()) == s.small_allocs
    assert all(low == 0 or low & (low - 1) == 0 for low in by_size)
    del kept
