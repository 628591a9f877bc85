"""numpy-allocator interop: zkalloc and a numpy-allocator handler nest both
ways, each array goes back to the handler that allocated it, and the ready
ZkallocAllocator class is backed by zkalloc's one handler capsule."""
from __future__ import annotations

import ctypes
import gc
import threading

import numpy as np
import pytest
from numpy._core.multiarray import get_handler_name

import zkalloc_np as zk
from zkalloc_np import _core

numpy_allocator = pytest.importorskip("numpy_allocator")
from zkalloc_np.interop import ZkallocAllocator, handler_capsule  # noqa: E402

MiB = 1 << 20
_libc = ctypes.CDLL(None)
_libc.malloc.restype = ctypes.c_void_p
_libc.malloc.argtypes = [ctypes.c_size_t]
_libc.calloc.restype = ctypes.c_void_p
_libc.calloc.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
_libc.realloc.restype = ctypes.c_void_p
_libc.realloc.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.free.restype = None
_libc.free.argtypes = [ctypes.c_void_p]


def counting_allocator(name: str = "counting"):
    """A fresh numpy-allocator class over libc that records every pointer it
    hands out, and every free it is asked to do of a pointer it never made."""
    live: set[int] = set()
    foreign: list[int] = []

    def _malloc_(size):
        ptr = _libc.malloc(size or 1)
        live.add(ptr)
        return ptr

    def _calloc_(nelem, elsize):
        ptr = _libc.calloc(nelem or 1, elsize or 1)
        live.add(ptr)
        return ptr

    def _realloc_(ptr, size):
        if ptr is not None and ptr not in live:
            foreign.append(ptr)
            return None
        new = _libc.realloc(ptr, size or 1)
        if new:
            live.discard(ptr)
            live.add(new)
        return new

    def _free_(ptr, size):
        if ptr is None:
            return
        if ptr not in live:
            foreign.append(ptr)   # never free what we did not allocate
            return
        live.remove(ptr)
        _libc.free(ptr)

    cls = numpy_allocator.type(name, (), {
        "_malloc_": _malloc_, "_calloc_": _calloc_, "_realloc_": _realloc_, "_free_": _free_,
    })
    cls.live, cls.foreign = live, foreign
    return cls


def test_one_capsule_object():
    assert _core.handler_capsule is _core.handler_capsule
    assert handler_capsule is _core.handler_capsule
    assert ZkallocAllocator.handler() is _core.handler_capsule


def test_zkalloc_allocator_serves_from_the_cache(fresh):
    with ZkallocAllocator:
        assert get_handler_name() == "zkalloc"
        a = np.ones(MiB)
    assert get_handler_name() == "default_allocator"
    assert zk.owns(a) and ZkallocAllocator.handles(a)
    assert ZkallocAllocator.handles(a[10:])
    b = np.ones(MiB)
    assert not zk.owns(b) and not ZkallocAllocator.handles(b)
    with zk.installed():
        c = np.ones(MiB)
    assert ZkallocAllocator.handles(c), "installed() and ZkallocAllocator share one capsule"
    in_use = zk.stats().bytes_in_use
    del a, c
    gc.collect()
    assert zk.stats().bytes_in_use < in_use
    assert zk.stats().hits + zk.stats().misses >= 2


def _check_all_freed_home(counting, baseline_in_use):
    gc.collect()
    assert counting.live == set(), "an array of the counting handler was not freed by it"
    assert counting.foreign == [], "the counting handler was asked to free a pointer it never made"
    assert zk.stats().bytes_in_use == baseline_in_use


@pytest.mark.parametrize("zk_scope", ["installed", "ZkallocAllocator"])
def test_counting_inside_zkalloc(fresh, zk_scope):
    counting = counting_allocator()
    baseline = zk.stats().bytes_in_use
    outer = zk.installed() if zk_scope == "installed" else ZkallocAllocator
    with outer:
        z1 = np.arange(MiB // 8, dtype=np.float64)
        with counting:
            assert get_handler_name() == "counting"
            c1 = np.arange(MiB // 8, dtype=np.float64)
            c2 = z1 * 2                     # made inside: the counting handler's
            small = np.arange(10)
        assert get_handler_name() == "zkalloc"
        z2 = c1 + 1                          # made outside again: zkalloc's
    assert get_handler_name() == "default_allocator"
    assert zk.owns(z1) and zk.owns(z2)
    assert not zk.owns(c1) and not zk.owns(c2)
    assert counting.handles(c1) and counting.handles(c2) and counting.handles(small)
    assert len(counting.live) == 3
    assert np.array_equal(z2, c2 / 2 + 1)
    del z1, z2, c1, c2, small
    _check_all_freed_home(counting, baseline)


@pytest.mark.parametrize("zk_scope", ["installed", "ZkallocAllocator"])
def test_zkalloc_inside_counting(fresh, zk_scope):
    counting = counting_allocator()
    baseline = zk.stats().bytes_in_use
    with counting:
        c1 = np.arange(MiB // 8, dtype=np.float64)
        with (zk.installed() if zk_scope == "installed" else ZkallocAllocator):
            z1 = c1 * 3
            z2 = np.zeros(2 * MiB, dtype=np.uint8)
        assert get_handler_name() == "counting"
        c2 = z1 - c1
        c2.resize(MiB // 4, refcheck=False)   # realloc through the counting handler
    assert get_handler_name() == "default_allocator"
    assert zk.owns(z1) and zk.owns(z2) and ZkallocAllocator.handles(z1)
    assert counting.handles(c1) and counting.handles(c2) and not counting.handles(z1)
    assert np.array_equal(c2[: MiB // 8], 2 * c1)
    del c1, c2, z1, z2
    _check_all_freed_home(counting, baseline)


def test_process_wide_install_with_counting_scope(fresh):
    """Under install() the default is zkalloc; a numpy-allocator scope still
    takes over inside its block, and frees still find their way home."""
    counting = counting_allocator()
    baseline = zk.stats().bytes_in_use
    zk.install()
    try:
        z = np.ones(MiB)
        with counting:
            c = np.ones(MiB)
        z2 = np.ones(MiB)
    finally:
        zk.uninstall()
    assert zk.owns(z) and zk.owns(z2) and not zk.owns(c) and counting.handles(c)
    # the process-wide install swaps numpy's default capsule, so identity says no:
    assert not ZkallocAllocator.handles(z)
    del z, z2, c
    _check_all_freed_home(counting, baseline)


def test_installed_is_per_thread_next_to_numpy_allocator(fresh):
    """installed() in one thread and a numpy-allocator block in another,
    interleaved (enter A, enter B, exit A, exit B): each thread gets its own
    previous handler back."""
    counting = counting_allocator()
    steps = [threading.Event() for _ in range(4)]
    seen: dict[str, str] = {}

    def thread_a():
        with zk.installed():
            steps[0].set()
            steps[1].wait(10)
            seen["a inside"] = get_handler_name()
        seen["a after"] = get_handler_name()
        steps[2].set()

    def thread_b():
        steps[0].wait(10)
        with counting:
            steps[1].set()
            steps[2].wait(10)
            seen["b inside"] = get_handler_name()
        seen["b after"] = get_handler_name()

    threads = [threading.Thread(target=thread_a), threading.Thread(target=thread_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert seen == {"a inside": "zkalloc", "a after": "default_allocator",
                    "b inside": "counting", "b after": "default_allocator"}
