"""The cache's core promise: freed regions come back without a new mapping."""
import numpy as np

import zkalloc_np as zk
from conftest import MiB


def address(a):
    return a.__array_interface__["data"][0]


def test_same_size_round_trip_hits(fresh):
    with zk.installed():
        a = np.empty(8 * MiB, np.uint8)
        first = address(a)
        del a
        b = np.empty(8 * MiB, np.uint8)
        assert address(b) == first
    s = zk.stats()
    assert (s.hits, s.misses) == (1, 1)
    assert s.bytes_mapped == 8 * MiB


def test_sizes_in_one_class_share_regions(fresh):
    with zk.installed():
        a = np.empty(9 * MiB + 1, np.uint8)   # class 10 MiB (8 classes per power of two)
        first = address(a)
        del a
        b = np.empty(10 * MiB, np.uint8)
        assert address(b) == first
        assert zk.stats().hits == 1


def test_contents_survive_and_round_trip(fresh):
    with zk.installed():
        for i in range(5):
            a = np.full(MiB, i, dtype=np.int64)
            assert int(a.sum()) == i * MiB
            assert zk.owns(a)
            del a
    assert zk.stats().hits == 4


def test_small_arrays_go_to_numpy(fresh):
    with zk.installed():
        small = np.ones(1000)
        assert not zk.owns(small)
    assert zk.stats().small_allocs >= 1
    assert zk.stats().misses == 0


def test_min_bytes_threshold(fresh):
    zk.configure(min_bytes=4096)
    with zk.installed():
        a = np.ones(4096 // 8)
        b = np.ones(4095 // 8)
        assert zk.owns(a) and not zk.owns(b)


def test_arrays_outlive_installed(fresh):
    with zk.installed():
        a = np.arange(MiB, dtype=np.int64)
    assert zk.owns(a)
    b = np.arange(MiB, dtype=np.int64)   # outside: numpy's default
    assert not zk.owns(b)
    assert np.array_equal(a, b)
    in_use = zk.stats().bytes_in_use
    del a
    s = zk.stats()
    assert s.bytes_in_use == in_use - 8 * MiB
    assert s.bytes_cached == 8 * MiB


def test_installed_nests_and_restores(fresh):
    from numpy._core.multiarray import get_handler_name
    before = get_handler_name()
    with zk.installed():
        with zk.installed():
            assert get_handler_name() == "zkalloc"
        assert get_handler_name() == "zkalloc"
    assert get_handler_name() == before


def test_owns_views_and_foreign_buffers(fresh):
    with zk.installed():
        a = np.zeros((1024, 1024))
    assert zk.owns(a[3:, ::2]) and zk.owns(a.T) and zk.owns(a.reshape(-1))
    assert not zk.owns(np.frombuffer(bytearray(1 << 20), dtype=np.uint8))
    import pytest
    with pytest.raises(TypeError):
        zk.owns([1, 2, 3])


def test_alignment(fresh):
    with zk.installed():
        a = np.empty(100 * 1024, np.uint8)
        big = np.empty(3 * MiB, np.uint8)
    assert address(a) % 4096 == 0
    assert address(big) % (2 * MiB) == 0


def test_a_request_takes_an_idle_region_one_class_larger(fresh):
    big, small, far = 3 * MiB, 5 * MiB // 2 + 1, MiB   # classes 3 MiB, 2.75 MiB, 1 MiB
    assert zk._core.class_of(big) - zk._core.class_of(small) == 1
    with zk.installed():
        a = np.empty(big, np.uint8)
        address = a.__array_interface__["data"][0]
        del a
        b = np.ones(small, np.uint8)                 # no 2.75 MiB region idle: takes the 3 MiB one
        assert b.__array_interface__["data"][0] == address and b.sum() == small
        b.resize(big, refcheck=False)                 # grows within its region
        assert b.__array_interface__["data"][0] == address
        del b
        c = np.ones(far, np.uint8)                    # far smaller: carved out of it, not handed it whole
        assert c.__array_interface__["data"][0] != address
    s = zk.stats()
    assert s.hits == 1 and s.misses == 2
