"""Memory pressure and limits: the cap under many threads, out-of-memory on
every allocation path, soften() then reuse, release() leaving nothing idle
mapped, settings changed while arrays are live."""
from __future__ import annotations

import threading

import numpy as np
import pytest

import zkalloc_np as zk
from conftest import MiB, run_python

KiB = 1 << 10


def mapped_ranges() -> list[tuple[int, int]]:
    with open("/proc/self/maps") as maps:
        return [tuple(int(x, 16) for x in line.split()[0].split("-")) for line in maps]


def is_mapped(address: int) -> bool:
    return any(lo <= address < hi for lo, hi in mapped_ranges())


def address(arr: np.ndarray) -> int:
    return arr.__array_interface__["data"][0]


def test_idle_bytes_never_exceed_the_cap_under_threads(fresh):
    """Four threads churn a working set three times the cap while a fifth
    samples bytes_cached; the peak (raised atomically with every idle byte)
    stays under the cap too."""
    cap = 24 * MiB
    zk.configure(cache_bytes=cap)
    zk.install()
    stop = threading.Event()
    samples: list[int] = []
    errors: list[str] = []

    def sampler():
        while not stop.is_set():
            samples.append(zk.stats().bytes_cached)

    def churn(seed):
        rng = np.random.default_rng(seed)
        for _ in range(40):
            live = [np.full(int(rng.integers(1, 9)) * MiB // 8, seed, np.int64) for _ in range(3)]
            for a in live:
                if not (a == seed).all():
                    errors.append("corrupted")

    side = threading.Thread(target=sampler)
    side.start()
    workers = [threading.Thread(target=churn, args=(k,)) for k in range(4)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    stop.set()
    side.join()
    s = zk.stats()
    assert errors == []
    assert samples and max(samples) <= cap
    assert s.peak_bytes_cached <= cap
    assert s.evictions > 0 and s.bytes_in_use == 0


def test_out_of_memory_on_every_path_then_the_process_goes_on():
    """Under a low RLIMIT_AS, np.empty, np.zeros, a growing resize (realloc)
    and reserve() fail with MemoryError, the array being resized is intact,
    nothing leaks over 30 failures, and allocation works again afterwards."""
    result = run_python("""
        import resource, numpy as np, zkalloc_np as zk
        zk.install(min_bytes=4096)
        keep = np.arange(2 << 20, dtype=np.int64)        # 16 MiB, in the cache
        vm = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (vm + (128 << 20), resource.RLIM_INFINITY))
        failures = {"empty": 0, "zeros": 0, "resize": 0, "reserve": 0}
        mapped = None
        for round in range(30):
            for name, fn in (("empty", lambda: np.empty(1 << 30, np.uint8)),
                             ("zeros", lambda: np.zeros(1 << 30, np.uint8)),
                             ("resize", lambda: keep.resize(1 << 28, refcheck=False)),
                             ("reserve", lambda: zk.reserve(1 << 30))):
                try:
                    fn()
                except MemoryError:
                    failures[name] += 1
            assert keep.size == 2 << 20 and keep[-1] == (2 << 20) - 1 and (keep[::4096] == np.arange(0, 2 << 20, 4096)).all()
            ok = np.ones(1 << 20)                          # 8 MiB still works
            assert zk.owns(ok) and ok.sum() == 1 << 20
            del ok
            zk.check()
            if round == 0:
                mapped = zk.stats().bytes_mapped
            assert zk.stats().bytes_mapped == mapped, (zk.stats().bytes_mapped, mapped)
        resource.setrlimit(resource.RLIMIT_AS, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        big = np.ones(1 << 27, np.uint8)
        assert zk.owns(big) and big.sum() == 1 << 27
        del big, keep
        zk.check()
        print(failures["empty"], failures["zeros"], failures["resize"], failures["reserve"], zk.stats().bytes_in_use)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["30", "30", "30", "30", "0"]


@pytest.mark.parametrize("nbytes", [64 * KiB, MiB + 1, 3 * MiB, 33 * MiB])
@pytest.mark.parametrize("lazy", [0, 4096], ids=["memset", "lazy-zero"])
def test_soften_then_reuse_is_correct(fresh, nbytes, lazy):
    zk.configure(lazy_zero_bytes=lazy)
    with zk.installed():
        live = np.full(nbytes, 9, np.uint8)               # in use: soften must not touch it
        for _ in range(2):
            dirty = [np.full(nbytes, 0xAB, np.uint8) for _ in range(2)]
            del dirty
        assert zk.soften() >= 2 * nbytes
        zeros = np.zeros(nbytes, np.uint8)                 # a softened region: still all zero
        data = np.empty(nbytes, np.uint8)                  # the other one: takes what is written
        data[:] = np.arange(nbytes, dtype=np.uint64).astype(np.uint8)
    assert zk.stats().hits >= 2
    assert not zeros.any()
    assert (data == np.arange(nbytes, dtype=np.uint64).astype(np.uint8)).all()
    assert (live == 9).all()


def test_release_leaves_no_idle_region_mapped(fresh):
    """Idle regions in the pool, in this thread's cache, in a live other
    thread's cache, and a region grown by mremap: after release() none of
    their addresses is mapped, and only the arrays in use are."""
    zk.configure(min_bytes=4096)
    idle: list[int] = []
    parked, done = threading.Event(), threading.Event()

    def other_thread():
        with zk.installed():
            a = np.ones(3 * MiB // 8)
            idle.append(address(a))
            del a
        parked.set()
        done.wait()

    t = threading.Thread(target=other_thread)
    t.start()
    try:
        parked.wait()
        with zk.installed():
            arrays = [np.ones(n // 8) for n in (8 * KiB, 100 * KiB, MiB, 5 * MiB, 40 * MiB)]
            grown = np.ones(MiB // 8)
            grown.resize(9 * MiB // 8, refcheck=False)     # mremap onto a new reservation
            keep = np.ones(16 * MiB // 8)   # no idle region within two classes of it
            arrays.append(grown)
            idle += [address(a) for a in arrays]
            del arrays, grown
        assert all(is_mapped(a) for a in idle)
        zk.release()
        assert not any(is_mapped(a) for a in idle)
        s = zk.stats()
        assert s.bytes_cached == 0 and s.bytes_mapped == s.bytes_in_use
        assert is_mapped(address(keep)) and keep.sum() == 16 * MiB // 8
    finally:
        done.set()
        t.join()


def test_settings_changed_while_arrays_are_live(fresh):
    """Live arrays survive every setting changing under them; their frees
    still come home (bytes_in_use back to 0, nothing invalid) and nothing is
    lost."""
    with zk.installed():
        live = {n: np.full(n // 8, n, np.int64) for n in (64 * KiB, 3 * MiB, 40 * MiB)}
        spare = np.ones(MiB)
        del spare                                           # something idle to trim
    zk.configure(min_bytes=64 * MiB, cache_bytes=0, hugepages=False, thread_cache_bytes=0,
                 lazy_zero_bytes=4096)
    assert zk.stats().bytes_cached == 0
    with zk.installed():
        small_now = np.ones(MiB)                            # below the new min_bytes: numpy's
        grown = live.pop(3 * MiB)
        grown.resize(5 * MiB // 8, refcheck=False)          # ours, now below min_bytes: moved to numpy
    assert not zk.owns(small_now) and not zk.owns(grown)
    assert (grown[: 3 * MiB // 8] == 3 * MiB).all()
    assert all((a == n).all() for n, a in live.items())
    in_use = zk.stats().bytes_in_use
    del live
    s = zk.stats()
    assert s.bytes_in_use == 0 < in_use and s.invalid_frees == 0
    assert s.bytes_cached == 0                              # cap 0: freed regions were unmapped
    zk.check()
    zk.configure(cache_bytes=64 * MiB, min_bytes=4096, hugepages=True, thread_cache_bytes=8 * MiB)
    with zk.installed():
        again = np.full(MiB, 5.0)
    assert zk.owns(again) and (again == 5.0).all()
