"""Bad input and API misuse: every setting and environment variable with
garbage, negative, zero and huge values is a ValueError naming it, and
nothing changes; install()/uninstall()/installed() misuse has the behaviour
the README documents, and never crashes."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from numpy._core.multiarray import get_handler_name

import zkalloc_np as zk
from zkalloc_np._settings import ENV_VARS, load_environment
from conftest import MiB

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
