"""realloc through numpy's resize paths and the raw entry point."""
import numpy as np

import zkalloc_np as zk
from zkalloc_np import _core
from conftest import MiB


def test_ndarray_resize_keeps_contents(fresh):
    with zk.installed():
        a = np.arange(MiB // 8, dtype=np.int64)
        a.resize(4 * MiB // 8, refcheck=False)
        assert zk.owns(a)
    assert np.array_equal(a[: MiB // 8], np.arange(MiB // 8))
    assert not a[MiB // 8:].any()


def test_np_resize_keeps_contents(fresh):
    with zk.installed():
        a = np.arange(300_000, dtype=np.int32)
        b = np.resize(a, 700_000)
    assert np.array_equal(b[:300_000], a) and np.array_equal(b[300_000:600_000], a)


def test_same_class_returns_same_pointer(fresh):
    p = _core.raw_malloc(9 * MiB + 1)             # class 10 MiB (8 classes per power of two)
    assert _core.raw_realloc(p, 10 * MiB) == p
    assert zk.stats().realloc_same == 1
    _core.raw_free(p)


def test_growth_by_remap_keeps_bytes(fresh):
    p = _core.raw_malloc(4 * MiB)
    view = np.ctypeslib.as_array((np.ctypeslib.ctypes.c_uint8 * (4 * MiB)).from_address(p))
    view[:] = np.arange(4 * MiB, dtype=np.uint64).astype(np.uint8)
    q = _core.raw_realloc(p, 64 * MiB)
    assert q != 0
    grown = np.ctypeslib.as_array((np.ctypeslib.ctypes.c_uint8 * (64 * MiB)).from_address(q))
    assert np.array_equal(grown[: 4 * MiB], np.arange(4 * MiB, dtype=np.uint64).astype(np.uint8))
    assert not grown[4 * MiB:].any()
    assert zk.stats().realloc_remap == 1
    assert _core.usable_bytes(q) == 64 * MiB
    assert p == q or _core.usable_bytes(p) == 0
    zk.check()
    _core.raw_free(q)


def test_shrink_below_min_moves_to_numpy(fresh):
    p = _core.raw_malloc(MiB)
    np.ctypeslib.as_array((np.ctypeslib.ctypes.c_uint8 * 100).from_address(p))[:] = 42
    q = _core.raw_realloc(p, 100)
    assert _core.usable_bytes(q) == 0   # numpy's allocator now
    assert (np.ctypeslib.as_array((np.ctypeslib.ctypes.c_uint8 * 100).from_address(q)) == 42).all()
    _core.raw_free(q)
    assert zk.stats().bytes_in_use == 0


def test_foreign_realloc_stays_foreign(fresh):
    p = _core.raw_malloc(100)
    q = _core.raw_realloc(p, 200)
    assert _core.usable_bytes(q) == 0
    _core.raw_free(q)


def test_fromstring_wrong_free_size(fresh):
    # numpy allocates 8 bytes here and frees with size 1; ownership must not
    # depend on that size.
    zk.configure(min_bytes=1)
    with zk.installed():
        for _ in range(50):
            a = np.fromstring("", sep=" ")
            assert a.size == 0
            del a
    assert zk.stats().bytes_in_use == 0
    assert zk.stats().invalid_frees == 0


def test_realloc_after_free_is_refused(fresh):
    p = _core.raw_malloc(MiB)
    _core.raw_free(p)
    assert _core.raw_realloc(p, 2 * MiB) == 0   # never passed on to glibc
    _core.raw_free(p)                          # a double free: counted, ignored
    assert zk.stats().invalid_frees == 2
    zk.check()


def test_failed_remap_falls_back_to_copy_and_leaks_nothing():
    # The limit leaves room for the mremap target reservation but not for the
    # move: the grow must fall back to a copy, after giving the reservation back.
    from conftest import run_python
    result = run_python("""
        import ctypes, resource, numpy as np, zkalloc_np as zk
        from zkalloc_np import _core
        MiB = 1 << 20
        p = _core.raw_malloc(8 * MiB)
        ctypes.memset(p, 7, 8 * MiB)
        vm = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + 80 * MiB, resource.RLIM_INFINITY))
        q = _core.raw_realloc(p, 64 * MiB)
        assert q != 0
        grown = np.ctypeslib.as_array((ctypes.c_uint8 * (64 * MiB)).from_address(q))
        assert (grown[:8 * MiB] == 7).all()
        s = zk.stats()
        _core.raw_free(q)
        zk.release()
        zk.check()
        after = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
        assert after <= vm + 4 * MiB, f"{(after - vm) >> 20} MiB of address space left behind"
        print(s.realloc_remap, s.realloc_copy)
    """)
    assert result.returncode == 0, result.stderr
    remap, copy = map(int, result.stdout.split())
    assert remap + copy == 1
