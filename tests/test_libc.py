"""glibc's big blocks under install(): libc=keep keeps them
resident, release() and decay give them back (malloc_trim), uninstall()
restores glibc's defaults, libc=leave and a tuned environment leave glibc
alone, and a bad ZKALLOC_LIBC is refused clearly."""
from __future__ import annotations

import ctypes
import resource
import warnings

import numpy as np
import pytest

import zkalloc_np as zk
from zkalloc_np._raw import GLIBC_MALLOC_ENV
from zkalloc_np._settings import SettingsWarning, load_environment
from conftest import MiB, run_python, wait_for

_UNDER_ASAN = pytest.mark.no_asan(reason="ASan replaces malloc (its interceptors serve every malloc), so "
                                          "glibc's tuning is not what serves np.fft's blocks there")

pytestmark = pytest.mark.skipif(not zk._core.libc_is_glibc(), reason="glibc's tuning: glibc only")

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.malloc.argtypes = [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]


class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


libc.mallinfo2.restype = MallInfo2


def mmapped_by_a_big_malloc() -> bool:
    """Whether glibc serves a 64 MiB malloc with its own mmap (its default)
    rather than from its heap (libc=keep)."""
    before = libc.mallinfo2().hblks
    p = libc.malloc(64 * MiB)
    during = libc.mallinfo2().hblks
    libc.free(p)
    return during > before


def rss() -> int:
    return zk.stats().rss_bytes


def fft_round(x: np.ndarray) -> np.ndarray:
    f = np.fft.rfft(x)
    return np.fft.irfft(f * f)


def minflt() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


@_UNDER_ASAN
def test_keep_serves_big_blocks_from_the_heap_and_uninstall_restores_the_defaults():
    zk.install(libc="keep")
    assert zk._core.libc_applied() and zk.stats().libc.startswith("keep")
    assert not mmapped_by_a_big_malloc()
    zk.uninstall()
    assert not zk._core.libc_applied()
    assert mmapped_by_a_big_malloc()


@_UNDER_ASAN
def test_a_64_mib_fft_round_faults_less_than_once_per_page_the_second_time():
    zk.install(libc="keep")
    x = np.random.default_rng(1).random(8 * MiB // 8)
    fft_round(x)
    before = minflt()
    fft_round(x)
    assert minflt() - before < 64 * MiB // 4096


@_UNDER_ASAN
def test_leave_leaves_glibc_alone():
    zk.install(libc="leave")
    assert not zk._core.libc_applied() and zk.stats().libc.startswith("leave")
    assert mmapped_by_a_big_malloc()
    zk.configure(libc="keep")   # at run time, while installed: applies now
    assert zk._core.libc_applied() and not mmapped_by_a_big_malloc()
    zk.configure(libc="leave")
    assert not zk._core.libc_applied() and mmapped_by_a_big_malloc()


def kept_blocks(n: int = 4) -> None:
    """n blocks of 64 MiB malloc'ed, written and freed: glibc keeps them (libc=keep)."""
    blocks = [libc.malloc(64 * MiB) for _ in range(n)]
    for p in blocks:
        ctypes.memset(p, 1, 64 * MiB)
    for p in reversed(blocks):
        libc.free(p)


@_UNDER_ASAN
def test_release_gives_glibcs_kept_memory_back(fresh):
    zk.install(libc="keep")
    high = rss()
    kept_blocks()
    assert rss() - high > 200 * MiB   # kept resident
    trims = zk.stats().libc_trims
    zk.release()
    assert zk.stats().libc_trims == trims + 1
    assert rss() - high < 100 * MiB


@_UNDER_ASAN
def test_idle_decay_trims_glibc_with_nothing_idle_in_the_cache(fresh):
    """The cache holds nothing idle, glibc holds 256 MiB free: a process idle
    for decay_ms (injected clock and CPU time) trims it; a busy one does not."""
    S = 1_000_000_000
    core = zk._core
    zk.install(libc="keep", decay_ms=1000)
    try:
        core.decay_set_clock(1000 * S)
        core.decay_set_cpu_ns(0)
        core.decay_set_pressure(False)
        core.decay_pass()
        high = rss()
        kept_blocks()
        assert zk.stats().bytes_cached == 0 and rss() - high > 200 * MiB
        trims = zk.stats().libc_trims
        core.decay_set_clock(1001 * S)
        core.decay_set_cpu_ns(1 * S)                      # busy: kept
        core.decay_pass()
        assert zk.stats().libc_trims == trims and rss() - high > 200 * MiB
        core.decay_set_clock(1002 * S + 1)               # then idle for decay_ms
        core.decay_pass()
        assert zk.stats().libc_trims == trims + 1
        assert rss() - high < 100 * MiB
    finally:
        core.decay_use_real()
        zk.configure(decay_ms=10000)


@_UNDER_ASAN
def test_the_decay_thread_trims_glibc_of_an_idle_process():
    """The same with the real clock, in a fresh process: nothing of the cache
    is ever idle, and the thread still gives glibc's freed 1 GiB back."""
    out = run_python("""
        import ctypes, time, zkalloc_np as zk
        libc = ctypes.CDLL(None)
        libc.malloc.restype = ctypes.c_void_p
        libc.malloc.argtypes = [ctypes.c_size_t]
        libc.free.argtypes = [ctypes.c_void_p]
        zk.install(libc="keep", decay_ms=200)
        high = zk.stats().rss_bytes
        p = libc.malloc(1 << 30)
        ctypes.memset(p, 1, 1 << 30)
        libc.free(p)
        kept = zk.stats().rss_bytes - high
        for _ in range(1000):                              # a bound, not a timing
            if zk.stats().rss_bytes - high < (100 << 20):
                break
            time.sleep(0.01)
        s = zk.stats()
        print(kept >> 20, (s.rss_bytes - high) >> 20, s.bytes_cached, s.libc_trims)
    """, unset=[*GLIBC_MALLOC_ENV, "GLIBC_TUNABLES"])   # distributed's Nanny sets one in this process
    assert out.returncode == 0, out.stderr
    kept, after, cached, trims = map(int, out.stdout.split())
    assert kept > 900 and after < 100 and cached == 0 and trims >= 1


def test_a_tuned_environment_is_left_as_it_is():
    result = run_python("""
        import zkalloc_np as zk
        zk.install()
        assert not zk._core.libc_applied(), "applied"
        print(zk.stats().libc)
        """, env={"MALLOC_MMAP_MAX_": "0"}, unset=[*GLIBC_MALLOC_ENV, "GLIBC_TUNABLES"])
    assert result.returncode == 0, result.stderr
    assert "left as the environment tunes it (MALLOC_MMAP_MAX_)" in result.stdout


def test_a_variable_set_after_start_does_not_count():
    """glibc reads its variables at start-up: one set later (distributed's
    Nanny sets MALLOC_TRIM_THRESHOLD_ for the workers it spawns) tunes
    nothing here, so it must not stop libc=keep."""
    result = run_python("""
        import os
        import zkalloc_np as zk
        os.environ["MALLOC_TRIM_THRESHOLD_"] = "65536"
        zk.install(libc="keep")
        print(zk._core.libc_applied(), zk._raw.glibc_env())
        """, unset=[*GLIBC_MALLOC_ENV, "GLIBC_TUNABLES"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "None"]


def test_bad_libc_values_are_refused_naming_the_setting():
    before = zk.settings()
    for value in ("sometimes", "", 2, -1, 1.5, None):
        with pytest.raises(ValueError, match="libc"):
            zk.configure(libc=value)
    with pytest.raises(ValueError, match="ZKALLOC_LIBC='sometimes'.*leave/keep"):
        load_environment({"ZKALLOC_LIBC": "sometimes"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_environment({"ZKALLOC_LIBC": "sometimes"}, strict=False)
    assert any(issubclass(w.category, SettingsWarning) and "ZKALLOC_LIBC" in str(w.message) for w in caught)
    assert zk.settings() == before
    load_environment({"ZKALLOC_LIBC": "leave"})
    assert zk.settings()["libc"] == "leave" and zk.setting_sources()["libc"] == "env ZKALLOC_LIBC"


def test_info_says_what_is_covered():
    from zkalloc_np.cli.info import info_lines
    text = "\n".join(info_lines())
    assert "libc malloc:" in text and "Python raw domain:" in text
    assert "np.fft" in text and "NOT through the cache" in text and "not covered:" in text


def test_a_bad_zkalloc_libc_at_import_warns_and_keeps_the_default():
    result = run_python("""
        import warnings
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import zkalloc_np as zk
        print(caught[0].category.__name__, caught[0].message)
        print(zk.settings()["libc"], zk.setting_sources()["libc"])
        """, env={"ZKALLOC_LIBC": "maybe"})
    assert result.returncode == 0, result.stderr
    warning, setting = result.stdout.splitlines()
    assert warning.startswith("SettingsWarning ZKALLOC_LIBC='maybe'") and "keeps its default" in warning
    assert setting == "keep default"
