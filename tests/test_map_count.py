"""Reliability at the kernel's limits: the map count, failed unmaps, and
reserve() beyond the cap."""
from __future__ import annotations

import resource
import time
import warnings

import pytest

import zkalloc_np as zk
from conftest import run_python

MiB = 1 << 20


def test_140k_live_64k_arrays_keep_the_map_count_low_and_unmap_on_release():
    out = run_python("""
        import gc, threading, numpy as np, zkalloc_np as zk

        def areas():
            with open("/proc/self/maps") as f:
                return sum(1 for _ in f)

        def vm_size():
            with open("/proc/self/status") as f:
                return next(int(l.split()[1]) for l in f if l.startswith("VmSize:")) * 1024

        def can_start_thread():
            t = threading.Thread(target=lambda: None); t.start(); t.join()
            return True

        limit = int(open("/proc/sys/vm/max_map_count").read())
        can_start_thread()   # glibc's arena and the stack of a thread: before the baseline
        start_areas, start_vm = areas(), vm_size()
        zk.install()
        arrays = [np.empty(8192) for _ in range(140_000)]          # 64 KiB each
        peak = areas(); assert can_start_thread()
        del arrays[::2]
        gc.collect(); peak = max(peak, areas()); assert can_start_thread()
        zk.check()
        del arrays
        gc.collect(); peak = max(peak, areas()); assert can_start_thread()
        zk.check()
        zk.release()
        zk.check()
        s = zk.stats()
        print(limit, start_areas, peak, vm_size() - start_vm, s.bytes_mapped, s.bytes_in_use,
              s.bytes_reserved, s.segments, s.unmap_failures)
    """, timeout=300)
    assert out.returncode == 0, out.stderr
    limit, start, peak, vm_growth, mapped, in_use, reserved, segments, failures = map(int, out.stdout.split())
    assert peak - start < 2000 and peak < limit // 10     # was 65,531 with a mapping per region
    # What stays mapped is what is still in use: the interpreter may keep a
    # raw block it made meanwhile for good (pymalloc's arena map takes a
    # 128 KiB node from PyMem_RawCalloc when a new arena lands in a range it
    # does not cover yet), and its segment stays with it.
    assert mapped == in_use and (segments == 0) == (in_use == 0) and failures == 0
    # VmSize back to its start but for those segments and the core's
    # metadata, which stays mapped: descriptors (~128 bytes a region: 18 MiB
    # for 140k) and ownership-map leaves (2 MiB per GiB of address space
    # used).  numpy's default grows VmSize by about 5.6 GiB here (glibc's
    # fragmented heap).
    assert vm_growth < 64 * MiB + reserved


def vm_size() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmSize:")) * 1024


@pytest.mark.no_asan(reason="ASan's allocator maps and unmaps memory of its own, so VmSize moves without zkalloc")
def test_a_failed_munmap_is_kept_tracked_and_retried(fresh):
    import numpy as np
    with zk.installed():
        arrays = [np.ones(4 * MiB, np.uint8) for _ in range(6)]
    del arrays
    start = vm_size()
    zk._core.fail_unmaps(1000)
    try:
        released = zk.release()
    finally:
        zk._core.fail_unmaps(0)
    s = zk.stats()
    assert released >= 24 * MiB
    assert s.unmap_failures >= 1 and s.unmap_pending >= 1
    assert s.bytes_cached == 0 and s.bytes_reserved >= 24 * MiB   # still counted, still mapped
    zk.check()                                                      # and /proc/self/maps agrees
    assert vm_size() == start                                       # nothing unmapped behind our back
    zk.release()                                                    # the retry
    s = zk.stats()
    assert s.unmap_pending == 0 and s.bytes_reserved == 0
    assert vm_size() <= start - 24 * MiB
    zk.check()


def test_memory_is_never_reused_wrongly_after_failed_unmaps(fresh):
    import numpy as np
    zk._core.fail_unmaps(10_000)
    try:
        with zk.installed():
            for i in range(20):
                live = [np.full((i % 5 + 1) * MiB, i, np.uint8) for _ in range(3)]
                assert all((a == i).all() for a in live)
                del live
                zk.release()
                zk.check()
    finally:
        zk._core.fail_unmaps(0)
    zk.release()
    assert zk.stats().unmap_pending == 0
    zk.check()


def test_reserve_beyond_the_cap_warns_at_once_and_faults_nothing(fresh):
    zk.configure(cache_bytes="64M")
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    t0 = time.perf_counter()
    with pytest.warns(ResourceWarning, match="cap"):
        got = zk.reserve("512M")
    assert got == 0
    assert time.perf_counter() - t0 < 5          # a bound far above the ~0 it takes, not a timing
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0 < 32 * MiB
    assert zk.stats().bytes_mapped == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert zk.reserve("16M", count=2) == 2   # within the cap: as before


def _maps_has(address: int) -> bool:
    with open("/proc/self/maps") as f:
        for line in f:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= address < hi:
                return True
    return False


def test_a_failed_unmap_of_a_secret_array_is_counted_and_leaves_it_wiped(fresh):
    """Fault injection reaches every unmap of the core (zk_os.c), not only
    the cache's segments: a secret array's mapping too."""
    import numpy as np
    a = zk.secret_zeros(4096, np.uint8, strict=False)
    a[:] = 0x5a
    address = a.ctypes.data
    failures = zk.stats().unmap_failures
    zk._core.fail_unmaps(1)
    try:
        del a
    finally:
        zk._core.fail_unmaps(0)
    s = zk.stats()
    assert s.unmap_failures == failures + 1 and s.unmap_pending == 0   # not a segment of the cache
    assert _maps_has(address)                                         # left mapped: the kernel refused
    import ctypes
    assert ctypes.string_at(address, 4096) == bytes(4096)             # but wiped first
    assert zk.check() is True


def test_a_failed_unmap_of_a_thread_cache_is_counted(fresh):
    """A thread's cache (its own small mapping) is unmapped when the thread
    exits: fault injection reaches that unmap too."""
    import threading
    import numpy as np
    failures = zk.stats().unmap_failures

    def worker():
        with zk.installed():
            b = np.ones(1 << 20)   # this thread's cache is opened
            del b                  # and parks the region
        zk._core.fail_unmaps(1)    # the next unmap: the cache's own, at thread exit

    t = threading.Thread(target=worker)
    try:
        t.start()
        t.join()
        # join() returns once the Python thread is done; its pthread's key
        # destructors (the cache's close) run a moment later
        deadline = time.monotonic() + 10
        while zk.stats().unmap_failures == failures and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        zk._core.fail_unmaps(0)
    s = zk.stats()
    assert s.unmap_failures == failures + 1 and s.unmap_pending == 0
    assert zk.check() is True   # its region went to the shared pool all the same
