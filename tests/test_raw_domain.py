"""Python's raw memory domain through the cache under install():
ownership, frees of blocks from before the install and after the
uninstall, realloc between the cache and Python's allocator, threads
without the GIL, tracemalloc before and after, phases, fork."""
from __future__ import annotations

import ctypes
import gc
import hashlib
import os
import threading
import tracemalloc

import numpy as np
import pytest

import zkalloc_np as zk
from conftest import MiB, run_python

# PyMem_Raw* through ctypes.pythonapi (GIL held) and through a plain CDLL
# handle, whose calls release the GIL: the raw domain is called without it.
api = ctypes.pythonapi
nogil = ctypes.CDLL(None)
for lib in (api, nogil):
    lib.PyMem_RawMalloc.restype = ctypes.c_void_p
    lib.PyMem_RawMalloc.argtypes = [ctypes.c_size_t]
    lib.PyMem_RawCalloc.restype = ctypes.c_void_p
    lib.PyMem_RawCalloc.argtypes = [ctypes.c_size_t, ctypes.c_size_t]
    lib.PyMem_RawRealloc.restype = ctypes.c_void_p
    lib.PyMem_RawRealloc.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
    lib.PyMem_RawFree.restype = None
    lib.PyMem_RawFree.argtypes = [ctypes.c_void_p]


def big_bytes(mib: int = 64) -> bytes:
    return np.full(mib * MiB // 8, 7, dtype=np.uint64).tobytes()


def cached(address: int) -> bool:
    return zk._core.usable_bytes(address) > 0


# ---- ownership and frees -----------------------------------------------------

def test_tobytes_of_64_mib_is_the_caches_and_goes_home_after_uninstall(fresh):
    zk.install()
    b = big_bytes()
    st = zk.stats()
    assert zk.owns(b) and st.raw_allocs == 1 and st.raw_bytes >= 64 * MiB
    assert st.raw_domain.startswith("served")
    zk.uninstall()
    assert zk.owns(b) and zk.stats().raw_domain.startswith("pass-through")
    in_use = zk.stats().bytes_in_use
    del b
    st = zk.stats()
    assert st.raw_frees == 1 and st.invalid_frees == 0
    assert in_use - st.bytes_in_use >= 64 * MiB
    assert not zk.owns(big_bytes())   # nothing new to the cache after uninstall
    zk.check()


def test_bytes_made_before_install_is_freed_by_pythons_allocator(fresh):
    before = big_bytes()
    assert not zk.owns(before)
    zk.install()
    del before
    st = zk.stats()
    assert st.raw_frees == 0 and st.invalid_frees == 0 and st.foreign_frees == 0
    zk.check()


def test_small_raw_requests_stay_with_python(fresh):
    zk.install(min_bytes=MiB)
    assert not zk.owns(bytes(MiB // 2)) and zk.owns(bytes(MiB))
    assert zk.stats().raw_allocs == 1


def test_bytearray_and_hashlib_input_come_from_the_cache(fresh):
    zk.install()
    data = bytearray(8 * MiB)
    assert zk.owns(data)
    blob = b"".join([b"x" * MiB] * 4)
    assert zk.owns(blob)
    assert hashlib.blake2b(blob).digest() == hashlib.blake2b(b"x" * (4 * MiB)).digest()


def test_owns_refuses_what_has_no_block():
    with pytest.raises(TypeError, match="owns"):
        zk.owns("a string")   # type: ignore[arg-type]


def test_an_array_viewing_cache_bytes_is_owned(fresh):
    zk.install()
    b = big_bytes(8)
    assert zk.owns(np.frombuffer(b, dtype=np.uint64))


# ---- realloc, calloc, invalid pointers -----------------------------------------

def test_realloc_moves_blocks_where_they_belong(fresh):
    zk.install()
    p = api.PyMem_RawMalloc(2 * MiB)
    assert cached(p)
    ctypes.memset(p, 0x5A, 2 * MiB)
    grown = api.PyMem_RawRealloc(p, 8 * MiB)               # grows within the cache
    assert cached(grown) and ctypes.string_at(grown + 2 * MiB - 4, 4) == b"\x5a" * 4
    small = api.PyMem_RawRealloc(grown, 1000)              # below min_bytes: to Python's allocator
    assert not cached(small) and ctypes.string_at(small, 1000) == b"\x5a" * 1000
    assert zk.stats().raw_moved_out == 1
    foreign = api.PyMem_RawRealloc(small, 4 * MiB)         # a foreign block stays foreign
    assert not cached(foreign) and ctypes.string_at(foreign, 1000) == b"\x5a" * 1000
    api.PyMem_RawFree(foreign)
    assert zk.stats().raw_reallocs == 2
    zk.check()


def test_realloc_after_uninstall_moves_the_block_out(fresh):
    zk.install()
    p = api.PyMem_RawMalloc(MiB)
    ctypes.memset(p, 3, MiB)
    zk.uninstall()
    q = api.PyMem_RawRealloc(p, 2 * MiB)
    assert not cached(q) and ctypes.string_at(q, MiB) == b"\x03" * MiB
    api.PyMem_RawFree(q)
    assert zk.stats().bytes_in_use == 0
    zk.check()


def test_calloc_of_a_reused_block_is_zero(fresh):
    zk.install()
    p = api.PyMem_RawMalloc(MiB)
    ctypes.memset(p, 0xFF, MiB)
    api.PyMem_RawFree(p)
    q = api.PyMem_RawCalloc(1, MiB)
    assert q == p and ctypes.string_at(q, MiB) == bytes(MiB)   # the same region, zeroed
    api.PyMem_RawFree(q)
    assert api.PyMem_RawCalloc(2**62, 2**62) is None   # overflow: NULL, nothing allocated


def test_realloc_of_a_freed_block_is_refused(fresh):
    zk.install()
    p = api.PyMem_RawMalloc(MiB)
    api.PyMem_RawFree(p)
    assert api.PyMem_RawRealloc(p, 2 * MiB) is None
    api.PyMem_RawFree(p)   # a double free: counted, never passed on
    assert zk.stats().invalid_frees == 2
    zk.check()


# ---- threads without the GIL -------------------------------------------------------

def test_raw_domain_from_threads_without_the_gil(fresh, tmp_path):
    zk.install()
    path = tmp_path / "numbers.txt"
    path.write_text(" ".join(map(str, range(200_000))))
    errors: list[BaseException] = []

    def worker(seed: int) -> None:
        try:
            rng = np.random.default_rng(seed)
            for i in range(40):
                n = int(rng.integers(1, 4)) * MiB
                p = nogil.PyMem_RawMalloc(n)             # the GIL released for the call
                nogil.PyMem_RawFree(nogil.PyMem_RawRealloc(p, n // 3 if i % 2 else 2 * n))
                data = np.full(n // 8, seed, dtype=np.uint64).tobytes()
                assert hashlib.sha256(data).digest() == hashlib.sha256(data).digest()   # GIL released inside
                if i % 10 == 0:   # text fromfile reallocs with the GIL released
                    assert np.fromfile(path, sep=" ", dtype=np.int64)[-1] == 199_999
        except BaseException as exc:   # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    st = zk.stats()
    assert st.raw_allocs >= 4 * 40 and st.invalid_frees == 0
    zk.check()


# ---- tracemalloc ----------------------------------------------------------------

def test_tracemalloc_started_after_install_counts_and_puts_the_hook_back(fresh):
    zk.install()
    assert zk._core.raw_current_is_hook()
    tracemalloc.start()
    try:
        assert not zk._core.raw_current_is_hook()   # tracemalloc wraps it
        base = tracemalloc.get_traced_memory()[0]
        b = big_bytes()
        assert zk.owns(b)
        assert tracemalloc.get_traced_memory()[0] - base >= 64 * MiB
        del b
        assert tracemalloc.get_traced_memory()[0] - base < MiB
    finally:
        tracemalloc.stop()
    assert zk._core.raw_current_is_hook()
    assert zk.owns(big_bytes())
    zk.check()


def test_tracemalloc_started_before_install_is_declined_and_logged():
    result = run_python("""
        import tracemalloc
        tracemalloc.start()
        import numpy as np, zkalloc_np as zk
        zk.install()
        assert zk.stats().raw_domain.startswith("declined"), zk.stats().raw_domain
        b = np.ones(1 << 23).tobytes()
        assert not zk.owns(b) and zk.owns(np.ones(1 << 23))   # numpy's part still works
        with zk.phase("p", track=True, on_escape="warn") as ph:
            kept = np.ones(1 << 20)
        assert ph.escapes and ph.escapes[0].traceback
        tracemalloc.stop()
        zk.install()   # tracemalloc gone: the raw domain is served now
        assert zk.owns(np.ones(1 << 23).tobytes())
        zk.check()
        print("ok")
        """)
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout
    assert "raw domain is not served by the cache: tracemalloc is tracing" in result.stderr


def test_another_hook_after_import_is_declined():
    result = run_python("""
        import zkalloc_np as zk, tracemalloc
        tracemalloc.start(); import zkalloc_np._raw as r
        r._at_import = (1, 2, 3, 4, 5)   # as if a profiler had hooked after the import
        tracemalloc.stop()
        zk.install()
        assert zk.stats().raw_domain.startswith("declined") and "another hook" in zk.stats().raw_domain
        print("ok")
        """)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def test_python_x_tracemalloc_then_stop_then_install_serves():
    result = run_python("""
        import tracemalloc, numpy as np, zkalloc_np as zk
        assert tracemalloc.is_tracing()
        tracemalloc.stop()
        zk.install()
        assert zk.owns(np.ones(1 << 23).tobytes())
        print("ok")
        """, env={"PYTHONTRACEMALLOC": "1"})
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


# ---- phases ------------------------------------------------------------------

def test_a_phase_sees_its_threads_raw_blocks(fresh):
    zk.install()
    with zk.phase("raw") as ph:
        b = big_bytes(8)
        assert ph.owns(b)
        temp = big_bytes(4)
        del temp
        assert ph.stats.arrays >= 3 and ph.stats.live_arrays >= 1
    assert ph.stats.escaped_arrays >= 1   # b outlived it
    assert ph.owns(b) and zk.owns(b)
    del ph
    gc.collect()   # the capsule may go; the scope lives until b is freed
    del b
    assert zk.stats().bytes_in_use == 0
    zk.check()


def test_raw_blocks_of_another_thread_are_not_the_phases(fresh):
    zk.install()
    got: list[bytes] = []
    with zk.phase() as ph:
        t = threading.Thread(target=lambda: got.append(big_bytes(8)))
        t.start()
        t.join()
        assert zk.owns(got[0]) and not ph.owns(got[0])


def test_crossed_phases_leave_no_dangling_raw_scope(fresh):
    zk.install()
    outer, inner = zk.phase(), zk.phase()
    outer.__enter__()
    inner.__enter__()
    outer.__exit__(None, None, None)   # crossed: the outer ends first
    inner.__exit__(None, None, None)
    del outer, inner
    gc.collect()
    b = big_bytes(8)   # tagged with nothing freed: plain cache memory
    assert zk.owns(b)
    del b
    zk.check()


# ---- fork ------------------------------------------------------------------------

def test_fork_with_raw_blocks_alive(fresh):
    zk.install()
    b = big_bytes(16)
    pid = os.fork()
    if pid == 0:   # the child: free the parent's block, make its own
        code = 1
        try:
            head = b[:8]
            assert zk.owns(b)
            del b
            c = big_bytes(16)
            assert zk.owns(c) and c[:8] == head
            del c
            zk.check()
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert zk.owns(b) and b[:8] == np.full(1, 7, dtype=np.uint64).tobytes()
    del b
    zk.check()
