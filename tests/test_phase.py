"""Phases: accounted scopes over the cache.  Contents, accounting (exact,
across threads and nested phases), escapes (ignore / warn / raise, with
tracebacks), hot start, release_after, entry that never fails, generators,
nesting, threads, fork, exceptions, bad arguments."""
from __future__ import annotations

import contextvars
import gc
import queue
import re
import threading
import warnings

import numpy as np
import pytest

import zkalloc_np as zk
from conftest import MiB, run_python
from zkalloc_np import _core, _handler_stack


def handler_name(array: np.ndarray | None = None) -> str:
    """The handler that allocated `array`, or this context's current one."""
    get = np._core.multiarray.get_handler_name
    return get() if array is None else get(array)


def fill(array: np.ndarray, value: int) -> np.ndarray:
    array[...] = value
    return array


def test_arrays_keep_their_contents_and_are_counted_exactly(fresh):
    sizes = [1 << 14, 1 << 17, 1 << 20, 3 << 18]
    with zk.phase("witness") as ph:
        arrays = [fill(np.empty(n, np.uint64), i + 1) for i, n in enumerate(sizes)]
        st = ph.stats   # before the checks below add their temporaries
        for i, a in enumerate(arrays):
            assert handler_name(a) == "zkalloc-phase" and ph.owns(a)
            assert (a == i + 1).all()
        del arrays, a
    assert st.arrays == 4 and st.bytes_allocated == 8 * sum(sizes)
    assert st.live_arrays == 4 and st.live_bytes == st.peak_bytes == 8 * sum(sizes)
    assert st.hits + st.misses == 4 and st.alloc_seconds > 0
    final = ph.stats
    assert final.closed and final.escaped_arrays == 0 and final.live_arrays == 0 and final.live_bytes == 0


def test_small_arrays_go_to_numpy(fresh):
    zk.configure(min_bytes=1 * MiB)
    with zk.phase() as ph:
        small = np.ones(1000)
        mid = np.ones(64 * 1024)          # 512 KiB: below min_bytes
        big = np.ones(256 * 1024)
        assert handler_name(small) == handler_name(mid) == handler_name(big) == "zkalloc-phase"
        assert ph.owns(big) and not ph.owns(mid) and not ph.owns(small)
    assert ph.stats.arrays == 1 and ph.stats.small_arrays >= 2


def test_a_loop_inside_a_phase_reuses_one_hot_region(fresh):
    """The point of the redesign: a stream of temporaries in a phase gets the
    cache's hot region back, exactly as under installed()."""
    with zk.phase() as ph:
        for _ in range(50):
            a = fill(np.empty(8 * MiB, np.uint8), 1)
            del a
    assert ph.stats.arrays == 50 and ph.stats.misses == 1 and ph.stats.hits == 49
    assert ph.stats.fresh_bytes == _core.class_bytes(_core.class_of(8 * MiB))
    mapped = zk.stats().bytes_mapped
    with zk.installed():
        for _ in range(50):
            a = fill(np.empty(8 * MiB, np.uint8), 1)
            del a
    assert zk.stats().bytes_mapped == mapped


def test_accounting_is_exact_across_threads_sharing_a_phase(fresh):
    """Threads running in a context copied inside the phase allocate in it;
    other threads free what they made, through other phases."""
    sizes = [64 * 1024 + 4096 * k for k in range(40)]
    handed: queue.Queue = queue.Queue()
    with zk.phase("shared") as ph:
        contexts = [contextvars.copy_context() for _ in range(4)]   # one per thread

        def make(tag: int) -> None:
            for n in sizes:
                handed.put(fill(np.empty(n, np.uint8), tag))

        threads = [threading.Thread(target=contexts[t].run, args=(make, t)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert ph.stats.live_arrays == 4 * len(sizes)

    def free_elsewhere() -> None:
        with zk.phase("other") as other:
            while not handed.empty():
                a = handed.get()
                assert other.owns(np.empty(a.nbytes, np.uint8)) and not other.owns(a) and ph.owns(a)
                del a
        assert other.stats.escaped_arrays == 0

    t = threading.Thread(target=free_elsewhere)
    t.start()
    t.join()
    st = ph.stats
    assert st.arrays == 4 * len(sizes) and st.bytes_allocated == 4 * sum(sizes)
    assert st.escaped_arrays == 4 * len(sizes) and st.escaped_bytes == 4 * sum(sizes)
    assert st.live_arrays == 0 and st.live_bytes == 0 and st.peak_bytes == 4 * sum(sizes)


def test_nested_phases_the_innermost_tags(fresh):
    with zk.phase("outer") as outer:
        a = fill(np.empty(MiB, np.uint8), 1)
        with zk.phase("inner") as inner:
            b = fill(np.empty(MiB, np.uint8), 2)
            assert inner.owns(b) and not outer.owns(b)
        c = fill(np.empty(MiB, np.uint8), 3)
        st = outer.stats
        assert outer.owns(a) and outer.owns(c)
        assert inner.stats.closed and not outer.stats.closed
        assert (a == 1).all() and (b == 2).all() and (c == 3).all()
        del b
    assert inner.stats.escaped_arrays == 1 and inner.stats.live_arrays == 0
    assert st.arrays == 2 and st.bytes_allocated == 2 * MiB
    assert outer.stats.escaped_arrays == 2


def test_escaped_arrays_stay_valid_through_many_later_phases(fresh):
    with zk.phase("make"):
        kept = fill(np.empty(1 * MiB, np.uint32), 0xABCD)
        view = np.arange(MiB, dtype=np.int64)[1000:2000]
        scratch = fill(np.empty(1 * MiB, np.uint32), 1)
        del scratch
    for _ in range(20):
        with zk.phase("overwrite"):
            junk = [fill(np.empty(n, np.uint32), 0xFFFFFFFF) for n in (MiB // 2, MiB, 2 * MiB, 3 * MiB)]
            del junk
    assert (kept == 0xABCD).all() and (view == np.arange(1000, 2000)).all()
    assert zk.stats().phases["make"].escaped_arrays == 2


def test_on_escape_ignore_is_the_default(fresh):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with zk.phase() as ph:
            kept = np.ones(MiB)
    assert ph.stats.escaped_arrays == 1 and ph.escapes == () and kept.sum() == MiB


def test_on_escape_warn_lists_the_escaped_arrays(fresh):
    with pytest.warns(zk.PhaseEscapeWarning) as caught:
        with zk.phase("leaky", on_escape="warn") as ph:
            kept = np.ones((256, 512), np.float32)
            view = np.zeros(300_000, np.int16)[10:20]
            gone = np.ones(MiB)
            del gone
    message = str(caught[0].message)
    assert "phase 'leaky': 2 array(s)" in message
    assert "float32 array of shape (256, 512), 512.0 KiB" in message
    assert "int16 array of shape (300000,), 585.9 KiB" in message
    assert "track=True" in message
    assert {(e.shape, e.dtype, e.nbytes) for e in ph.escapes} == {((256, 512), "float32", 512 * 1024),
                                                                  ((300000,), "int16", 600_000)}
    assert kept.sum() == 256 * 512 and not view.any()


def test_on_escape_warn_finds_arrays_held_in_containers(fresh):
    holder = {}
    with pytest.warns(zk.PhaseEscapeWarning, match=r"uint8 array of shape \(3145728,\)"):
        with zk.phase(on_escape="warn"):
            holder["x"] = [np.ones(3 * MiB, np.uint8)]


def test_on_escape_raise_after_restoring_the_handler(fresh):
    before = handler_name()
    with pytest.raises(zk.PhaseEscapeError, match="1 array") as info:
        with zk.phase("strict", on_escape="raise"):
            kept = fill(np.empty(MiB, np.uint8), 9)
    assert isinstance(info.value, RuntimeError) and len(info.value.escapes) == 1
    assert handler_name() == before and _handler_stack.depth() == 0
    assert (kept == 9).all()
    with zk.phase("strict", on_escape="raise"):   # nothing escapes: no error
        tmp = np.ones(MiB)
        del tmp


def test_on_escape_is_not_checked_when_the_block_raised(fresh):
    with pytest.raises(ValueError, match="boom"):
        with zk.phase(on_escape="raise") as ph:
            kept = np.ones(MiB)
            raise ValueError("boom")
    assert ph.stats.escaped_arrays == 1 and kept.sum() == MiB


def test_track_names_where_each_escaped_array_was_made(fresh):
    import tracemalloc
    assert not tracemalloc.is_tracing()
    with pytest.warns(zk.PhaseEscapeWarning) as caught:
        with zk.phase(on_escape="warn", track=True) as ph:
            kept = np.ones(MiB)   # the allocation site
    assert not tracemalloc.is_tracing()   # started for the phase, stopped after
    trace = ph.escapes[0].traceback
    assert trace is not None and any("test_phase.py" in line for line in trace)
    assert "kept = np.ones(MiB)   # the allocation site" in "\n".join(trace)
    assert "test_phase.py" in str(caught[0].message) and kept.sum() == MiB


def test_hot_start_second_run_after_release_has_no_misses(fresh):
    def run() -> zk.PhaseStats:
        with zk.phase("round") as ph:
            a = fill(np.empty(3 * MiB, np.uint8), 1)
            b = np.zeros(5 * MiB, np.uint8)
            c = [np.ones(200_000) for _ in range(3)]
            assert a.sum() == 3 * MiB and not b.any() and sum(x.sum() for x in c) == 600_000
            del a, b, c
            d = np.ones(3 * MiB, np.uint8)   # a's region again
            del d
        return ph.stats

    first = run()
    assert first.misses == 5 and first.hot_start_bytes == 0
    zk.release()
    second = run()
    assert second.misses == 0 and second.hits == 6 and second.fresh_bytes == 0
    assert second.hot_start_bytes > 0
    third = run()   # warm cache: nothing to add
    assert third.misses == 0 and third.hot_start_bytes == 0
    totals = zk.stats().phases["round"]
    assert totals.phases == 3 and totals.misses == 5
    assert totals.working_set[_core.class_bytes(_core.class_of(200_000 * 8))] == 3


def test_hot_start_of_large_classes_maps_exactly_the_classes_it_learned(fresh):
    """Classes past index 92 (regions over 48 MiB): the hot start's per-class
    counts have one entry per class of the core (ZK_NCLASSES), not a copy of
    an older count that this once overflowed."""
    sizes = [64 * MiB, 256 * MiB]
    learned = {_core.class_bytes(_core.class_of(n)): 1 for n in sizes}
    assert min(_core.class_of(n) for n in sizes) >= 92

    def run() -> zk.PhaseStats:
        with zk.phase("large") as ph:
            arrays = [fill(np.empty(n, np.uint8), 1) for n in sizes]
            assert all(int(a[-1]) == 1 for a in arrays)
            del arrays
        return ph.stats

    def class_misses() -> dict[int, int]:
        return {c.bytes: c.misses for c in zk.stats().classes}

    first = run()
    assert first.misses == 2 and first.hot_start_bytes == 0
    assert zk.stats().phases["large"].working_set == learned
    zk.release()
    before = class_misses()
    second = run()
    missed = {b: n - before.get(b, 0) for b, n in class_misses().items() if n != before.get(b, 0)}
    assert missed == learned   # the hot start mapped each learned class once, and nothing else
    assert second.hot_start_bytes == sum(learned) and second.misses == 0 and second.hits == 2


def test_capacity_reserves_for_an_unnamed_phase(fresh):
    with zk.phase(capacity="8M") as ph:
        a = np.ones(8 * MiB, np.uint8)
    assert ph.stats.hot_start_bytes >= 8 * MiB and ph.stats.misses == 0 and ph.stats.hits == 1
    assert a.sum() == 8 * MiB and zk.phase().capacity is None


def _rw_mappings() -> list[tuple[int, int]]:
    out = []
    with open("/proc/self/maps") as f:
        for line in f:
            span, perms = line.split()[:2]
            if perms.startswith("rw"):
                lo, hi = (int(x, 16) for x in span.split("-"))
                out.append((lo, hi))
    return out


def test_release_after_gives_back_what_the_phase_left_idle(fresh):
    keep = zk.reserve(4 * MiB, 1)   # the cache holds something before: it stays
    before = zk.stats()
    with zk.phase(release_after=True) as ph:
        arrays = [fill(np.empty(n, np.uint8), 1) for n in (8 * MiB, 12 * MiB, 16 * MiB)]
        addresses = [a.__array_interface__["data"][0] for a in arrays]
        del arrays
        # (the 8 MiB miss may have taken the reserved 4 MiB as idle memory)
        assert zk.stats().bytes_cached >= 36 * MiB
    after = zk.stats()
    assert keep == 1 and after.bytes_cached <= before.bytes_cached and after.bytes_mapped <= before.bytes_mapped
    assert ph.stats.released_bytes >= 32 * MiB
    maps = _rw_mappings()
    assert not [a for a in addresses if any(lo <= a < hi for lo, hi in maps)]


def test_entry_never_fails_because_of_what_it_learned():
    out = run_python("""
        import re, resource
        import numpy as np
        import zkalloc_np as zk
        with zk.phase("big") as ph:          # learns a 256 MiB working set
            a = np.empty(256 << 20, np.uint8); a[::4096] = 1; del a
        zk.release()
        zk.configure(cache_bytes="16M")      # the cap cannot hold it: nothing reserved
        with zk.phase("big") as ph:
            ok = np.ones(1 << 20, np.uint8).sum() == 1 << 20
        print(ok, ph.stats.hot_start_bytes)
        zk.configure(cache_bytes="1G")       # the cap could, the address space cannot
        vm = int(re.search(r"VmSize:\\s+(\\d+)", open("/proc/self/status").read()).group(1)) * 1024
        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        resource.setrlimit(resource.RLIMIT_AS, (vm + (64 << 20), hard))
        with zk.phase("big") as ph:
            ok = np.ones(1 << 20, np.uint8).sum() == 1 << 20
        print(ok, ph.stats.hot_start_bytes < (256 << 20))
        zk.check()
    """)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "0", "True", "True"]


def test_generators_crossing_phases_and_installed_restore_the_handler(fresh):
    """The issue's case: phases entered inside two generators, resumed in
    turn, with installed() in between; the main context must end where it
    started, not on a closed phase."""
    start = handler_name()

    def gen(name: str):
        with zk.phase(name) as ph:
            yield ph
            a = np.ones(MiB)
            yield ph.owns(a)

    g1, g2 = gen("g1"), gen("g2")
    p1, p2 = next(g1), next(g2)
    with zk.installed():
        assert handler_name() == "zkalloc" and zk.owns(np.ones(MiB))
    assert next(g1) is False   # the current handler is g2's phase: g1 does not own it
    assert next(g2) is True
    for g in (g1, g2):
        with pytest.raises(StopIteration):
            next(g)
    assert p1.stats.closed and p2.stats.closed
    assert handler_name() == start and _handler_stack.depth() == 0
    assert handler_name(np.ones(MiB)) == start


def test_generators_crossing_installed_and_phase_blocks(fresh):
    """installed() goes through the same handler stack: an installed() block
    in one generator and a phase in another, exited in crossed order, leave
    the context where it started."""
    start = handler_name()

    def inst():
        with zk.installed():
            yield handler_name()
            yield handler_name()

    def ph():
        with zk.phase("crossed"):
            yield handler_name()
            yield handler_name()

    a, b = inst(), ph()
    assert next(a) == "zkalloc"
    assert next(b) == "zkalloc-phase"
    assert next(a) == "zkalloc-phase"   # the phase, entered last, is current
    with pytest.raises(StopIteration):
        next(a)                          # installed() exits first: the phase stays current
    assert handler_name() == "zkalloc-phase"
    assert next(b) == "zkalloc-phase"
    with pytest.raises(StopIteration):
        next(b)                          # the phase restores what was there before installed()
    assert handler_name() == start and _handler_stack.depth() == 0


def test_generators_crossing_phase_and_secret_blocks(fresh):
    """A phase entered first and ended first, while a secret block entered
    after it is still open: the secret block keeps its handler, and when it
    ends the context is back where it started (not on the closed phase)."""
    start = handler_name()

    def phase_gen():
        with zk.phase():
            yield
            yield

    def secret_gen():
        with zk.secret(strict=False):
            yield
            yield zk.is_secret(np.ones(MiB))

    p, s = phase_gen(), secret_gen()
    next(p)
    next(s)
    next(p)
    with pytest.raises(StopIteration):
        next(p)                      # the phase ends first, crossed
    assert handler_name() == "zkalloc-secret"
    assert next(s) is True
    with pytest.raises(StopIteration):
        next(s)
    assert handler_name() == start and not zk._secret.secret_active() and _handler_stack.depth() == 0


def test_an_exception_inside_still_closes_and_restores(fresh):
    with pytest.raises(ValueError, match="boom"):
        with zk.phase() as ph:
            a = np.empty(MiB)
            del a
            raise ValueError("boom")
    assert ph.stats.closed and ph.stats.arrays == 1
    assert handler_name(np.empty(MiB)) != "zkalloc-phase"


def test_zeros_are_zero_on_recycled_regions(fresh):
    with zk.phase():
        a = fill(np.empty(2 * MiB, np.uint8), 0xFF)
        del a
        b = np.zeros(2 * MiB, np.uint8)        # the same region, dirty
        assert not b.any()
        del b
    with zk.phase() as ph:
        c = np.zeros(2 * MiB, np.uint8)
        assert not c.any()
    assert ph.stats.hits == 1


def test_resize_moves_the_accounting_with_the_data(fresh):
    with zk.phase() as ph:
        a = np.arange(MiB // 8, dtype=np.int64)
        a.resize(MiB // 8 - 512, refcheck=False)         # same region
        a.resize(4 * MiB, refcheck=False)                # a larger region
        st = ph.stats
        assert (a[: MiB // 8 - 512] == np.arange(MiB // 8 - 512)).all()
        assert ph.owns(a)
    assert st.realloc_in_place == 1 and st.realloc_moved == 1
    assert st.arrays == 1 and st.live_arrays == 1 and st.live_bytes == 32 * MiB
    del a
    assert ph.stats.live_arrays == 0 and ph.stats.live_bytes == 0


def test_phase_inside_installed_and_install(fresh):
    with zk.installed():
        with zk.phase() as ph:
            a = np.ones(MiB)
            assert ph.owns(a)
        b = np.ones(MiB)
        assert zk.owns(b) and not ph.owns(b)
    zk.install()
    try:
        with zk.phase() as ph:
            threads_out = []
            t = threading.Thread(target=lambda: threads_out.append(handler_name(np.ones(MiB))))
            t.start()
            t.join()
            assert ph.owns(np.ones(MiB))
        assert threads_out == ["zkalloc"]   # a new thread does not inherit the phase
    finally:
        zk.uninstall()


def test_phases_in_two_threads_are_independent(fresh):
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def worker(tag: int) -> None:
        try:
            for round_ in range(30):
                with zk.phase(f"thread{tag}") as ph:
                    barrier.wait(timeout=30)
                    arrays = [fill(np.empty(n, np.uint32), tag * 1000 + round_) for n in (65536, MiB, 300000)]
                    barrier.wait(timeout=30)
                    st = ph.stats   # before the checks' temporaries
                    for a in arrays:
                        assert (a == tag * 1000 + round_).all() and ph.owns(a)
                    assert st.arrays == 3 and st.bytes_allocated == 4 * (65536 + MiB + 300000), st
                    del arrays, a
                assert ph.stats.escaped_arrays == 0
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            barrier.abort()

    threads = [threading.Thread(target=worker, args=(t,)) for t in (1, 2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    totals = zk.stats().phases
    assert totals["thread1"].phases == totals["thread2"].phases == 30
    assert totals["thread1"].arrays >= 90 and totals["thread2"].arrays >= 90   # + the checks' temporaries


def test_a_copied_context_after_the_phase_goes_to_the_cache(fresh):
    with zk.phase() as ph:
        ctx = contextvars.copy_context()
    a = ctx.run(np.ones, MiB)
    assert handler_name(a) == "zkalloc-phase" and not ph.owns(a)
    assert zk.owns(a) and a.sum() == MiB and ph.stats.arrays == 0


def test_secret_wins_over_phase(fresh):
    with zk.phase() as outer:
        with zk.secret():
            s = np.ones(MiB)
        assert zk.is_secret(s) and not outer.owns(s)
    with zk.secret():
        with zk.phase() as inner:
            t = np.ones(MiB)
    assert zk.is_secret(t) and inner.stats.arrays == 0 and inner.stats.closed


def test_stats_read_well(fresh):
    with zk.phase("show") as ph:
        a = np.ones(MiB)
    text = str(ph.stats)
    assert text.startswith("phase 'show' (closed): 1 arrays, 8.0 MiB allocated") and len(text.splitlines()) == 4
    assert "escaped 1 arrays (8.0 MiB)" in text
    assert set(ph.stats.as_dict()) >= {"hits", "misses", "repurposed", "fresh_bytes", "alloc_ns",
                                       "hot_start_bytes", "released_bytes", "escaped_arrays"}
    assert ph.stats.alloc_seconds == ph.stats.alloc_ns / 1e9
    assert "phase 'show': 1 runs" in str(zk.stats()) and a.sum() == MiB


def test_bad_use_raises_clear_errors():
    with pytest.raises(ValueError, match="capacity"):
        zk.phase(capacity=-1)
    with pytest.raises(ValueError, match="capacity"):
        zk.phase(capacity="lots")
    with pytest.raises(TypeError, match="unexpected keyword argument 'cache_bytes'"):
        zk.phase(cache_bytes=1)
    with pytest.raises(TypeError):
        zk.phase("name", "4M")   # capacity is keyword-only
    with pytest.raises(TypeError, match="name"):
        zk.phase(name=3)
    with pytest.raises(ValueError, match="on_escape"):
        zk.phase(on_escape="shout")
    with pytest.raises(TypeError, match="track"):
        zk.phase(track="yes")
    with pytest.raises(TypeError, match="release_after"):
        zk.phase(release_after=1)
    with pytest.raises(ValueError, match="unknown setting .arena_min_bytes."):
        zk.configure(arena_min_bytes="1M")   # type: ignore[call-arg]
    ph = zk.phase()
    with ph:
        pass
    with pytest.raises(RuntimeError, match="already entered"):
        with ph:
            pass


def test_fork_while_other_threads_run_phases_and_secrets():
    out = run_python("""
        import os, threading
        import numpy as np
        import zkalloc_np as zk
        stop = threading.Event()

        def churn(secret):
            while not stop.is_set():
                if secret:
                    with zk.secret(strict=False):
                        a = np.ones(5000)
                else:
                    with zk.phase("churn"):
                        a = [np.ones(1 << 17) for _ in range(4)]
                del a

        threads = [threading.Thread(target=churn, args=(s,)) for s in (False, True, False)]
        for t in threads:
            t.start()
        for _ in range(20):
            pid = os.fork()
            if pid == 0:
                with zk.phase() as ph:
                    ok = np.ones(1 << 18).sum() == (1 << 18)
                with zk.secret(strict=False):
                    ok = ok and np.ones(100).sum() == 100
                os._exit(0 if ok and ph.stats.arrays >= 1 and ph.stats.live_arrays == 0 else 1)
            _, status = os.waitpid(pid, 0)
            assert os.waitstatus_to_exitcode(status) == 0
        stop.set()
        for t in threads:
            t.join()
        zk.check()
        print("ok")
    """, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_the_scope_outlives_the_phase_until_its_last_array(fresh):
    """The capsule (and the C scope) goes when its last array does."""
    with zk.phase() as ph:
        kept = np.ones(MiB)
    capsule = ph._capsule
    del ph
    gc.collect()
    assert _core.scope_live(capsule) != []
    del kept
    assert _core.scope_live(capsule) == [] and _core.scope_stats(capsule)["escaped_arrays"] == 1
