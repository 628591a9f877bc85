"""Process-wide install: every thread, before and after, and a safe uninstall."""
import threading

import numpy as np
from numpy._core.multiarray import get_handler_name

import zkalloc_np as zk
from conftest import MiB, run_python


def test_install_covers_threads_started_before_and_after(fresh):
    go = threading.Event()
    seen = {}

    def worker(key):
        go.wait()
        a = np.ones(MiB)
        seen[key] = (zk.owns(a), get_handler_name())

    before = threading.Thread(target=worker, args=("before",))
    before.start()
    zk.install()
    after = threading.Thread(target=worker, args=("after",))
    after.start()
    go.set()
    before.join()
    after.join()
    assert seen == {"before": (True, "zkalloc"), "after": (True, "zkalloc")}
    assert zk.is_installed()


def test_scoped_install_does_not_reach_new_threads(fresh):
    seen = []
    with zk.installed():
        t = threading.Thread(target=lambda: seen.append(zk.owns(np.ones(MiB))))
        t.start()
        t.join()
        assert zk.owns(np.ones(MiB))
    assert seen == [False]


def test_uninstall_with_live_arrays(fresh):
    zk.install()
    live = np.arange(MiB, dtype=np.int64)
    assert zk.owns(live) and get_handler_name(live) == "zkalloc"
    zk.uninstall()
    assert not zk.is_installed()
    assert get_handler_name() == "default_allocator"
    after = np.ones(MiB)
    assert not zk.owns(after)
    assert int(live.sum()) == MiB * (MiB - 1) // 2
    cached_before = zk.stats().bytes_cached
    del live   # freed through numpy's default capsule, back into the cache
    s = zk.stats()
    assert s.bytes_in_use == 0 and s.bytes_cached == cached_before + 8 * MiB


def test_preexisting_arrays_are_freed_by_numpy(fresh):
    old = [np.ones(n) for n in (10, 1000, MiB)]   # made by numpy's default
    zk.install()
    before = zk.stats()
    del old
    after = zk.stats()
    # the 8 MiB array is a pointer from before the install; the two small ones
    # (80 B, 8000 B, below min_bytes) are small arrays left to numpy
    assert after.foreign_frees >= before.foreign_frees + 1
    assert after.small_frees >= before.small_frees + 2
    assert after.bytes_in_use == 0


def test_small_arrays_left_to_numpy_are_not_foreign(fresh):
    with zk.installed():
        before = zk.stats()
        small = [np.ones(100) for _ in range(5)]
        del small
        after = zk.stats()
    assert after.small_allocs >= before.small_allocs + 5
    assert after.small_frees >= before.small_frees + 5
    assert after.foreign_frees == before.foreign_frees


def test_install_twice_and_uninstall_without_install(fresh):
    zk.uninstall()   # nothing installed: no effect
    assert not zk.is_installed()
    zk.install()
    zk.install()
    assert zk.owns(np.ones(MiB))
    zk.uninstall()
    zk.uninstall()
    assert not zk.owns(np.ones(MiB))


def test_install_applies_settings(fresh):
    zk.install(min_bytes=8192)
    assert zk.settings()["min_bytes"] == 8192
    assert zk.owns(np.ones(1024))


def test_install_in_fresh_process_covers_everything():
    result = run_python("""
        import threading, numpy as np, zkalloc_np as zk
        from zkalloc_np import _core
        assert _core.default_points_at_numpy()   # importing changes nothing
        early = np.ones(1 << 20)
        zk.install()
        assert not _core.default_points_at_numpy()
        out = []
        t = threading.Thread(target=lambda: out.append(zk.owns(np.ones(1 << 20))))
        t.start(); t.join()
        assert out == [True], out
        assert not zk.owns(early)
        del early
        zk.uninstall()
        # the pass-through stays: arrays made while installed may still be alive
        assert not _core.default_points_at_numpy()
        zk.check()
        print("ok", zk.stats().hits + zk.stats().misses)
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("ok")


def test_frees_after_uninstall_are_not_counted_as_foreign(fresh):
    zk.install()
    zk.uninstall()
    before = zk.stats()
    arrays = [np.ones(n) for n in (10, 1000, MiB)]   # numpy's own memory, through the pass-through
    del arrays
    after = zk.stats()
    assert (after.foreign_frees, after.small_frees) == (before.foreign_frees, before.small_frees)
