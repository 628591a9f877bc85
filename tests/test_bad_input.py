"""Bad input and API misuse: every setting and environment variable with
garbage, negative, zero and huge values is a ValueError naming it, and
nothing changes; install()/uninstall()/installed() misuse has the behaviour
the README documents, and never crashes."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import threading

import numpy as np
import pytest
from numpy._core.multiarray import get_handler_name

import zkalloc_np as zk
from zkalloc_np._settings import ENV_VARS, load_environment
from conftest import ASAN_SLOWDOWN, UNDER_ASAN, MiB

SIZE_SETTINGS = ["cache_bytes", "min_bytes", "lazy_zero_bytes", "thread_cache_bytes"]
GARBAGE = ["", "   ", "lots", "12Q", "1.3", "1.5.G", "1e9", "0x10", "--1", "nan", None, [1], {}, 1.5, float("nan"),
           float("inf"), b"64K", object()]
NEGATIVE = [-1, "-1", "-64K", -(2**70)]
HUGE = [2**64, 2**200, "999999999999999999999", "1000000T"]


def bad_values(name: str) -> list:
    """Values that must be refused for `name` (zero only where 0 is out of range)."""
    values = GARBAGE + NEGATIVE + HUGE
    if name == "min_bytes":
        values = values + [0, "0", 2**36 + 1]
    if name == "hugepages":
        values = [v for v in values if v is not None] + [3, "3", "maybe", "", -1, 0.5, "yes please"]
    return values


CASES = [(name, value) for name in ENV_VARS for value in bad_values(name)]


@pytest.mark.parametrize("name,value", CASES, ids=[f"{n}={v!r}"[:40] for n, v in CASES])
def test_configure_refuses_and_names_the_setting(name, value):
    before = zk.settings()
    with pytest.raises(ValueError, match=name):
        zk.configure(**{name: value})
    assert zk.settings() == before


ENV_CASES = [(name, value) for name in ENV_VARS for value in bad_values(name) if isinstance(value, str)]


@pytest.mark.parametrize("name,value", ENV_CASES, ids=[f"{ENV_VARS[n]}={v!r}"[:50] for n, v in ENV_CASES])
def test_environment_refuses_and_names_the_variable(name, value):
    """The same parser the import runs (tests/test_settings.py checks the
    import itself fails clearly in a subprocess)."""
    before, sources = zk.settings(), zk.setting_sources()
    var = ENV_VARS[name]
    good = "ZKALLOC_CACHE_BYTES" if var != "ZKALLOC_CACHE_BYTES" else "ZKALLOC_MIN_BYTES"
    with pytest.raises(ValueError, match=var):
        load_environment({var: value, good: "8K"})   # the good one is not applied either
    assert zk.settings() == before and zk.setting_sources() == sources


GOOD = [(name, value) for name in SIZE_SETTINGS for value in ["0", "4096", "64K", "1G"]
        if not (name == "min_bytes" and value == "0")]


@pytest.mark.parametrize("name,value", GOOD)
def test_environment_accepts_good_sizes(name, value):
    load_environment({ENV_VARS[name]: value})
    assert zk.setting_sources()[name] == f"env {ENV_VARS[name]}"


@pytest.mark.parametrize("entry", [zk.install, zk.installed])
def test_bad_settings_on_install_change_nothing(fresh, entry):
    before = zk.settings()
    with pytest.raises(ValueError if entry is zk.install else TypeError, match="cache_bytes"):
        if entry is zk.install:
            zk.install(cache_bytes="lots")
        else:
            with zk.installed(cache_bytes=-1):
                pass
    assert not zk.is_installed()
    assert zk.settings() == before
    assert get_handler_name() == "default_allocator"


def test_uninstall_without_install_double_install_and_uninstall_inside_installed(fresh):
    zk.uninstall()
    zk.uninstall()
    assert not zk.is_installed() and get_handler_name() == "default_allocator"
    zk.install()
    zk.install()
    assert zk.is_installed() and get_handler_name() == "zkalloc"
    with zk.installed():
        zk.uninstall()
        # the context set its own handler: it keeps zkalloc until the block ends
        assert get_handler_name() == "zkalloc" and zk.owns(np.ones(MiB))
    assert get_handler_name() == "default_allocator" and not zk.owns(np.ones(MiB))


def test_installed_nested_in_itself_restores_on_exceptions(fresh):
    before = get_handler_name()
    with pytest.raises(KeyError):
        with zk.installed():
            with zk.installed():
                with zk.installed():
                    inner = np.ones(MiB)
                    raise KeyError("inner")
    assert get_handler_name() == before
    assert zk.owns(inner)
    del inner
    assert zk.stats().bytes_in_use == 0


def test_reentering_one_installed_object_raises_and_changes_nothing(fresh):
    """An installed() object is single-use, like every contextlib context
    manager: entering the same object twice raises; nest by calling
    installed() again."""
    cm = zk.installed()
    with cm:
        with pytest.raises(RuntimeError, match="already entered"):
            with cm:
                pass
        assert get_handler_name() == "zkalloc"
    assert get_handler_name() == "default_allocator"


def test_installed_in_many_threads_at_once(fresh):
    """Eight threads nest installed() blocks concurrently, each seeing its own
    handler; the main thread's handler is never touched."""
    errors: list[str] = []
    barrier = threading.Barrier(8)

    def worker(k):
        barrier.wait()
        for i in range(30):
            if get_handler_name() != "default_allocator":
                errors.append("a new thread inherited a handler")
            with zk.installed():
                with zk.installed():
                    a = np.full(MiB // 8 + k, i, np.int64)
                if not zk.owns(a) or get_handler_name() != "zkalloc":
                    errors.append("inner block leaked or lost the handler")
            b = np.ones(MiB // 8)
            if zk.owns(b) or not (a == i).all():
                errors.append("outer block did not restore")
            del a, b

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert get_handler_name() == "default_allocator"
    assert zk.stats().bytes_in_use == 0


def test_install_and_uninstall_racing_threads(fresh):
    """install()/uninstall() from many threads while others allocate: no
    crash, every array is intact, and the final state is the last call's."""
    stop = threading.Event()
    errors: list[str] = []

    def toggler(k):
        for i in range(200):
            (zk.install if (i + k) % 2 else zk.uninstall)()

    def allocator(k):
        while not stop.is_set():
            a = np.full(MiB // 8, k, np.int64)
            if not (a == k).all():
                errors.append("corrupted")

    allocs = [threading.Thread(target=allocator, args=(k,)) for k in range(3)]
    toggles = [threading.Thread(target=toggler, args=(k,)) for k in range(3)]
    for t in allocs + toggles:
        t.start()
    for t in toggles:
        t.join()
    stop.set()
    for t in allocs:
        t.join()
    assert errors == []
    zk.install()
    assert zk.is_installed() and get_handler_name() == "zkalloc"
    zk.uninstall()
    assert not zk.is_installed() and get_handler_name() == "default_allocator"
    assert zk.stats().bytes_in_use == 0


# ---- sizes across the public API (issue 30.5) ----------------------------------
# Each size a function takes: a bad one is a ValueError naming the function
# and the argument, never a bare OverflowError from the C layer, a
# SecretMemoryError or a TypeError from deep inside; nothing is mapped.

BAD_SIZES = [-1, -(2**70), 2**64, 2**200, "99999999999999999999999T", 1.5, float("nan"), float("inf"),
             "x", "1e9", True, object(), [1.5]]   # None: no budget/capacity, so per argument
SIZE_ARGUMENTS = {
    "reserve(nbytes)": (lambda v: zk.reserve(v), [None, 0, 2**36 + 1, 2**63, b"64K"]),
    "reserve(count)": (lambda v: zk.reserve(MiB, v), [None, 2**31, np.float64(1.0), b"1"]),
    "phase(budget)": (lambda v: zk.phase(budget=v), [2**47 + 1, b"64K"]),
    "phase(capacity)": (lambda v: zk.phase(capacity=v), [0, 2**36 + 1, b"64K"]),
    "secret_empty(shape)": (lambda v: zk.secret_empty(v, np.uint8), [None, (2, -1), (2**20, 2**20), (2, 1.5), (True,)]),
    "secret_zeros(shape)": (lambda v: zk.secret_zeros(v, np.uint64), [None, 2**34, (2, "x"), np.float64(1.0)]),
}
SIZE_CASES = [(name, value) for name, (_, more) in SIZE_ARGUMENTS.items() for value in BAD_SIZES + more]


@pytest.mark.parametrize("name,value", SIZE_CASES, ids=[f"{n}={v!r}"[:50] for n, v in SIZE_CASES])
def test_bad_sizes_are_value_errors_naming_the_argument(fresh, name, value):
    before = zk.stats()
    with pytest.raises(ValueError, match=re.escape(name)):
        SIZE_ARGUMENTS[name][0](value)
    after = zk.stats()
    assert (after.bytes_mapped, after.secret_bytes) == (before.bytes_mapped, before.secret_bytes)


def test_reserve_2_to_the_64_names_nbytes_not_a_c_type(fresh):
    """It was a bare OverflowError ('int too large to convert to C unsigned long')."""
    with pytest.raises(ValueError, match=r"reserve\(nbytes\): must be between 1 and 68719476736 bytes"):
        zk.reserve(2**64)


def test_sizes_accept_numpy_integers(fresh):
    """A size computed with numpy (np.prod, an int64 column) is a size: it
    was refused as 'expected a byte count, got np.int64(...)'."""
    assert zk.reserve(np.int64(MiB), np.int32(2)) == 2
    assert zk.configure(cache_bytes=np.uint64(64 * MiB), decay_ms=np.int64(500))["cache_bytes"] == 64 * MiB
    assert zk.settings()["decay_ms"] == 500
    with zk.phase(budget=np.int64(8 * MiB), capacity=np.uint32(MiB)) as ph:
        a = np.ones(MiB // 8)
    assert ph.stats.budget == 8 * MiB and ph.capacity == MiB
    assert zk.secret_zeros(np.int64(3), np.uint8).shape == (3,)
    assert zk.secret_empty((np.int16(2), 3), np.uint8).shape == (2, 3)
    del a
    with pytest.raises(ValueError, match="cache_bytes"):
        zk.configure(cache_bytes=np.True_)


def test_bad_secret_shape_maps_nothing_and_the_next_works(fresh):
    before = zk.stats().secret_bytes
    with pytest.raises(ValueError, match=r"secret_empty\(shape\).*more than the largest secret block"):
        zk.secret_empty((1 << 30, 1 << 30), np.uint8)
    assert zk.stats().secret_bytes == before
    ok = zk.secret_zeros(5, np.uint64)
    assert zk.is_secret(ok) and not ok.any()


def test_install_under_a_budget_that_refuses_everything(fresh):
    """install() allocates nothing through its own raw hook (found by
    tests/fuzz/fuzz_api.py): it read /proc/self/environ with the hook
    active, so a second install() under a tight budget, or inside a
    budgeted phase, raised MemoryError half done."""
    zk.configure(min_bytes=4096, budget=zk.stats().bytes_in_use + 1)
    zk.install()
    zk.install()
    with zk.phase(budget=1):
        zk.install()
    zk.uninstall()
    assert get_handler_name() == "default_allocator"


FUZZ_TARGET = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fuzz", "fuzz_api.py")


def test_the_fuzz_target_finds_nothing_in_random_programs():
    """tests/fuzz/fuzz_api.py (atheris in .ci/run) on random programs for a
    few seconds, in a subprocess: API and entry-point calls with bad and edge
    values, check() and the bytes in use after each program."""
    result = subprocess.run([sys.executable, FUZZ_TARGET, "--random", "8", "--seed", "30"], capture_output=True,
                            text=True, timeout=300 * (ASAN_SLOWDOWN if UNDER_ASAN else 1))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no finding" in result.stdout
