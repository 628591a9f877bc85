"""A hypothesis state machine over the whole allocator, with an exact model
of its accounting checked after every step (issue 30.5).

Blocks come from three places: the NEP 49 handler's entry points
(``_core.raw_malloc`` and friends, the functions numpy calls), numpy arrays
made in a phase or under ``installed()`` (and resized), and Python's raw
domain (``bytearray`` of ``min_bytes`` and more while the raw hook is active).
Phases nest, have budgets, and leave escaped arrays behind; settings
(``min_bytes``, the cap, the process's budget, ...) change while blocks are
live; ``reserve()``, ``release()`` and ``soften()`` run between steps;
decay runs on an injected clock, CPU time and pressure reading (busy, idle,
under pressure); a fork's child checks its own copy of the accounting and
frees everything.

The model predicts, for every request, whether the cache serves it (and so
counts it), whether a budget (the phase's or the process's) refuses it, and
what each phase counts: live bytes and arrays, peak, arrays and bytes
allocated, small requests, budget refusals, escapes.  After every step the
invariant compares all of it with ``stats()`` and each phase's ``stats``,
checks every live block's stamp and runs ``zkalloc_np.check()``.  Which
region serves a request (a hit may take a larger class, a miss may carve
idle memory of another size) is the cache's choice: the model reads the
region's size at allocation, checks it against the request's class, and
holds the cache to it from then on.

tests/test_stress.py runs the handler operations from many threads at once.
"""
from __future__ import annotations

import ctypes
import gc
import os
import signal
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, precondition, rule

import zkalloc_np as zk
from zkalloc_np import _core
from zkalloc_np._arrays import block_address

KiB, MiB = 1 << 10, 1 << 20
S = 1_000_000_000   # ns
MAX_CLASS_BYTES = _core.class_bytes(_core.NCLASSES - 1)
SIZES = st.one_of(
    st.sampled_from([1, 4095, 4096, 64 * KiB - 1, 64 * KiB, 80 * KiB, MiB, 2 * MiB - 1, 2 * MiB, 2 * MiB + 1]),
    st.integers(min_value=1, max_value=6 * MiB),
)
#: Raw-domain payloads: bytearray(n) is one request of n + 1 bytes.
RAW_SIZES = st.one_of(st.sampled_from([3000, 4096, 60 * KiB, 64 * KiB, MiB]),
                      st.integers(min_value=1000, max_value=3 * MiB))


def view(address: int, size: int) -> np.ndarray:
    return np.ctypeslib.as_array((ctypes.c_uint8 * size).from_address(address))


def configure(**values: Any) -> None:
    """zk.configure(); the SettingsWarning for a thread cache over the cap
    (an error in this suite) is wanted here."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", zk.SettingsWarning)
        zk.configure(**values)


def uniform(data: np.ndarray, value: int) -> bool:
    """Every byte is `value`.  Through bytes, not numpy: a comparison's
    result array would be a request of the phase open around it."""
    return data.tobytes().count(value) == data.size


@dataclass
class PhaseModel:
    """What one phase must report (PhaseStats), kept by the model."""

    phase: Any
    budget: int
    live: int = 0
    live_arrays: int = 0
    peak: int = 0
    arrays: int = 0
    bytes_allocated: int = 0
    small: int = 0
    refusals: int = 0
    closed: bool = False
    escaped_arrays: int = 0
    escaped_bytes: int = 0

    def take(self, nbytes: int) -> None:
        self.live += nbytes
        self.live_arrays += 1
        self.peak = max(self.peak, self.live)

    def drop(self, nbytes: int) -> None:
        self.live -= nbytes
        self.live_arrays -= 1


@dataclass
class Block:
    """One live allocation: `kind` handler (an address from the handler's
    entry points), array (an ndarray it owns) or raw (a bytearray)."""

    kind: str
    size: int                  # bytes requested (what a phase counts)
    region: int                # the cache region's bytes, 0: not the cache's
    stamp: int
    address: int = 0
    obj: Any = None
    phase: PhaseModel | None = field(default=None, repr=False)   # the phase it is tagged with

    def data(self) -> np.ndarray:
        if self.kind == "handler":
            return view(self.address, self.size)
        if self.kind == "array":
            return self.obj
        return np.frombuffer(self.obj, np.uint8)


class AllocatorMachine(RuleBasedStateMachine):
    clock = 1000 * S   # decay's injected clock: only forward, across runs too
    handler_blocks = Bundle("handler_blocks")
    arrays = Bundle("arrays")
    raw_blocks = Bundle("raw_blocks")

    def __init__(self) -> None:
        super().__init__()
        self.saved = zk.settings()
        configure(budget=0, min_bytes=64 * KiB)
        gc.collect()
        # Hook the raw domain once (pass-through until a rule turns it on).
        zk.install()
        zk.uninstall()
        self.raw_hooked = _core.raw_current_is_hook()
        self.base_in_use = zk.stats().bytes_in_use    # other tests' arrays still alive
        self.base_refusals = zk.stats().budget_refusals
        self.refusals = 0
        self.next_id = 0
        self.next_stamp = 1
        self.live: dict[int, Block] = {}
        self.open: list[PhaseModel] = []
        self.closed: list[PhaseModel] = []
        # Decay reads an injected clock and CPU time, and runs only when the decay rule says.
        # Ahead of the real monotonic clock: regions other tests freed were
        # stamped with it, and decay must find them as old as the model says.
        AllocatorMachine.clock = max(AllocatorMachine.clock, time.monotonic_ns()) + 1000 * S
        self.cpu = 0
        _core.decay_set_clock(self.clock)
        _core.decay_set_cpu_ns(self.cpu)
        _core.decay_set_pressure(False)
        _core.decay_pass()   # primes what decay has seen

    # ---- the model's predictions ---------------------------------------------

    def in_use(self) -> int:
        return self.base_in_use + sum(b.region for b in self.live.values())

    def serves(self, size: int) -> bool:
        """Whether the cache serves a request of `size` (zk_handler.c cache_serves)."""
        return zk.settings()["min_bytes"] <= size <= MAX_CLASS_BYTES

    def process_refuses(self, size: int) -> bool:
        """The process's budget, checked on the cache's new requests (over_budget)."""
        budget = zk.settings()["budget"]
        return budget != 0 and self.in_use() + _core.class_bytes(_core.class_of(size)) > budget

    def phase_refuses(self, ph: PhaseModel | None, size: int) -> bool:
        return ph is not None and ph.budget != 0 and ph.live + size > ph.budget

    def refuse(self, ph: PhaseModel | None) -> None:
        self.refusals += 1
        if ph is not None:
            ph.refusals += 1

    def expect_new(self, size: int, ph: PhaseModel | None) -> bool | None:
        """What a new request of `size` through phase `ph` (None: the plain
        cache route) must get: True the cache, False the fallback, None a
        budget's refusal (counted here)."""
        if not self.serves(size):
            if ph is not None:
                ph.small += 1
            return False
        if self.process_refuses(size):
            self.refuse(None)
            return None
        if self.phase_refuses(ph, size):
            self.refuse(ph)
            return None
        return True

    def _add(self, block: Block, cached: bool, ph: PhaseModel | None, new: bool = True) -> int:
        """Record a block the cache served (cached) or not; `new`: a request,
        not a resize (which a phase does not count as an array)."""
        address = block.address if block.kind == "handler" else block_address(block.obj, "model")
        block.region = _core.usable_bytes(address) if address else 0
        assert (block.region > 0) == cached, f"{block.kind} of {block.size}: cached {block.region}, expected {cached}"
        if cached:
            assert block.region >= _core.class_bytes(_core.class_of(block.size)), "a region smaller than the class"
            if ph is not None:
                block.phase = ph
                if new:
                    ph.arrays += 1
                    ph.bytes_allocated += block.size
                ph.take(block.size)
        block.stamp = self.next_stamp % 251 + 1
        self.next_stamp += 1
        block.data().fill(block.stamp)
        self.next_id += 1
        self.live[self.next_id] = block
        return self.next_id

    def _forget(self, key: int) -> Block:
        block = self.live.pop(key)
        if block.phase is not None:
            block.phase.drop(block.size)
        return block

    # ---- the handler's entry points (untagged, the cache route) --------------

    @rule(target=handler_blocks, size=SIZES, zeroed=st.booleans())
    def handler_alloc(self, size, zeroed):
        expected = self.expect_new(size, None)
        address = _core.raw_calloc(1, size) if zeroed else _core.raw_malloc(size)
        if expected is None:
            assert address == 0, "the budget should have refused"
            return -1
        assert address != 0 and all(b.address != address for b in self.live.values())
        if zeroed:
            assert uniform(view(address, size), 0), "calloc returned dirty memory"
        return self._add(Block("handler", size, 0, 0, address=address), expected, None)

    @rule(target=handler_blocks, key=consumes(handler_blocks), size=SIZES)
    def handler_realloc(self, key, size):
        block = self.live.get(key)
        if block is None:
            return -1
        self._forget(key)
        address = _core.raw_realloc(block.address, size)
        assert address != 0
        kept = min(block.size, size)
        assert uniform(view(address, kept), block.stamp), "realloc lost bytes"
        # A block keeps the allocator it came from while the cache serves its new size.
        cached = block.region > 0 and self.serves(size)
        return self._add(Block("handler", size, 0, 0, address=address), cached, None)

    # ---- numpy arrays: in the innermost phase, or under installed() ----------

    @rule(target=arrays, size=SIZES, zeroed=st.booleans())
    def array_alloc(self, size, zeroed):
        ph = self.open[-1] if self.open else None
        expected = self.expect_new(size, ph)
        make = np.zeros if zeroed else np.empty
        try:
            if ph is None:
                with zk.installed():
                    a = make(size, np.uint8)
            else:
                a = make(size, np.uint8)
        except MemoryError:
            assert expected is None, "a MemoryError no budget explains"
            return -1
        assert expected is not None, "the budget should have refused"
        if zeroed:
            assert uniform(a, 0), "np.zeros returned dirty memory"
        return self._add(Block("array", size, 0, 0, obj=a), expected, ph)

    @rule(target=arrays, key=consumes(arrays), size=SIZES)
    def array_resize(self, key, size):
        block = self.live.get(key)
        if block is None:
            return -1
        ph = block.phase
        grows_over = ph is not None and size > block.size and ph.budget and ph.live - block.size + size > ph.budget
        try:
            block.obj.resize(size, refcheck=False)
        except MemoryError:
            assert grows_over, "a MemoryError no budget explains"
            self.refuse(ph)
            return key
        assert not grows_over, "the phase's budget should have refused the resize"
        kept = min(block.size, size)
        assert uniform(block.obj[:kept], block.stamp), "resize lost bytes"
        self._forget(key)
        # numpy calls realloc only when the byte count changes: an array resized
        # to its own size keeps its memory, whatever min_bytes says now.
        cached = block.region > 0 and (size == block.size or self.serves(size))
        # The tag follows the data (not a new array of the phase); to the fallback, it is the phase's no more.
        return self._add(Block("array", size, 0, 0, obj=block.obj), cached, ph if cached else None, new=False)

    @precondition(lambda self: len(self.open) < 3 or self.open[-1].budget)
    @rule(target=arrays, over=st.sampled_from([0, 1]), grow=st.booleans(),
          budget=st.sampled_from([256 * KiB, 3 * MiB, 9 * MiB]))
    def budget_edge(self, over, grow, budget):
        """The innermost phase's budget at its edge (a phase with `budget` is
        entered when the innermost has none): a request, or a resize, that
        brings its live bytes to exactly the budget is served, one byte more
        is refused."""
        if not (self.open and self.open[-1].budget):
            self.enter_phase(budget, False)
        ph = self.open[-1]
        room = ph.budget - ph.live
        floor = max(zk.settings()["min_bytes"], 1)
        if room < 2 * floor:
            return -1
        if not grow:
            return self.array_alloc(room + over, False)
        key = self.array_alloc(floor, False)
        if key == -1:
            return -1
        return self.array_resize(key, room + over)

    # ---- Python's raw domain: a bytes object of min_bytes and more -----------

    @precondition(lambda self: self.raw_hooked and zk.settings()["min_bytes"] >= 4096)
    @rule(target=raw_blocks, n=RAW_SIZES)
    def raw_bytes(self, n):
        """The raw hook is active for one bytearray() only, so nothing else of the
        interpreter lands in the cache (min_bytes >= 4096 keeps its small
        blocks out even then); the block is tagged with this thread's
        innermost phase."""
        size = n + 1   # a bytearray's buffer holds a trailing NUL
        ph = self.open[-1] if self.open else None
        expected = self.expect_new(size, ph)
        if expected is False and ph is not None:
            ph.small -= 1   # the raw domain counts no small requests in a phase
        gc.disable()
        _core.raw_set_active(True)
        try:
            b = bytearray(n)
        except MemoryError:
            b = None
        finally:
            _core.raw_set_active(False)
            gc.enable()
        if b is None:
            assert expected is None, "a MemoryError no budget explains"
            return -1
        assert expected is not None, "the budget should have refused"
        assert b.__alloc__() == size
        return self._add(Block("raw", size, 0, 0, obj=b), expected, ph)

    # ---- freeing ---------------------------------------------------------------

    @rule(key=st.one_of(consumes(handler_blocks), consumes(arrays), consumes(raw_blocks)))
    def free(self, key):
        block = self.live.get(key)
        if block is None:
            return
        data = block.data()
        assert data[0] == block.stamp and data[-1] == block.stamp, "a live block was overwritten"
        del data
        self._forget(key)
        if block.kind == "handler":
            _core.raw_free(block.address, block.size)
        block.obj = None   # the last reference: freed now

    # ---- phases ----------------------------------------------------------------

    @precondition(lambda self: len(self.open) < 3)
    @rule(budget=st.sampled_from([0, 0, 100 * KiB, 256 * KiB, 2 * MiB, 8 * MiB]), named=st.booleans())
    def enter_phase(self, budget, named):
        ph = zk.phase("modelled" if named else None, budget=budget or None)
        ph.__enter__()
        self.open.append(PhaseModel(ph, budget))

    @precondition(lambda self: self.open)
    @rule()
    def exit_phase(self):
        model = self.open.pop()
        model.phase.__exit__(None, None, None)
        model.closed = True
        model.escaped_arrays, model.escaped_bytes = model.live_arrays, model.live
        self.closed.append(model)
        self.closed = [m for m in self.closed if m.live_arrays or m is model]

    # ---- settings and maintenance ---------------------------------------------

    @rule(min_bytes=st.sampled_from([1, 4096, 64 * KiB, MiB]))
    def set_min_bytes(self, min_bytes):
        configure(min_bytes=min_bytes)

    @rule(cap=st.sampled_from([0, 3 * MiB, 16 * MiB, 1 << 30]))
    def set_cap(self, cap):
        with warnings.catch_warnings():   # a cap under the thread cache is warned about (test_api_polish): wanted here
            warnings.simplefilter("ignore", zk.SettingsWarning)
            configure(cache_bytes=cap)
        assert zk.stats().bytes_cached <= cap

    @rule(extra=st.sampled_from([0, MiB, 4 * MiB, 32 * MiB]))
    def set_budget(self, extra):
        """The process's budget: none, or a little over what is in use now."""
        configure(budget=self.in_use() + extra if extra else 0)

    @rule(lazy=st.sampled_from([0, 4096, MiB]), thread_cache=st.sampled_from([0, 4 * MiB, 256 * MiB]),
          hugepages=st.booleans(), adaptive=st.booleans())
    def set_other_settings(self, lazy, thread_cache, hugepages, adaptive):
        configure(lazy_zero_bytes=lazy, thread_cache_bytes=thread_cache, hugepages=hugepages,
                     adaptive_zero=adaptive)

    @rule(size=SIZES, count=st.integers(min_value=0, max_value=3))
    def reserve(self, size, count):
        zk.reserve(size, count)
        assert zk.stats().bytes_cached <= zk.settings()["cache_bytes"]

    @rule(target=handler_blocks, parts=st.lists(st.integers(min_value=256 * KiB, max_value=4 * MiB), min_size=1, max_size=6),
          smaller=st.integers(min_value=64 * KiB, max_value=2 * MiB))
    def carve(self, parts, smaller):
        """Idle memory of other classes serves a smaller request: free some
        regions, then ask for a size none of them has (carved)."""
        configure(budget=0)
        for p in parts:
            address = _core.raw_malloc(p)
            view(address, p).fill(0xEE)
            _core.raw_free(address, p)
        return self.handler_alloc(smaller, True)

    @rule(target=handler_blocks, parts=st.lists(st.integers(min_value=MiB, max_value=3 * MiB), min_size=2, max_size=5))
    def gather(self, parts):
        """A request larger than any idle region takes their pages together."""
        configure(budget=0)
        for p in parts:
            address = _core.raw_malloc(p)
            view(address, p).fill(0xEE)
            _core.raw_free(address, p)
        return self.handler_alloc(sum(parts), True)

    @rule(decay=st.sampled_from([0, 10, 1000, 10000]))
    def set_decay(self, decay):
        configure(decay_ms=decay)

    def _decay_pass(self, seconds: float, busy: bool) -> int:
        step = int(seconds * S)
        AllocatorMachine.clock += step
        self.cpu += step if busy else 0
        _core.decay_set_clock(self.clock)
        _core.decay_set_cpu_ns(self.cpu)
        return _core.decay_pass()

    @rule(how=st.sampled_from(["busy", "idle", "pressure"]))
    def decay(self, how):
        """Decay on the injected clock.  Busy (the CPU time grew as fast as
        the clock): nothing goes back.  Idle for twice decay_ms: every idle
        region goes back.  Memory pressure: every region idle for a pass
        interval goes back, busy or not.  decay_ms 0: nothing, ever.  In
        use, nothing changes (the invariant)."""
        period = zk.settings()["decay_ms"] / 1000
        cached = zk.stats().bytes_cached
        if how == "busy":
            self._decay_pass(max(period, 1) / 2, busy=True)
            assert zk.stats().bytes_cached == cached
            return
        if how == "idle":
            self._decay_pass(0.001, busy=False)    # sees this step's requests (busy), then none
            self._decay_pass(2 * period, busy=False)
        else:
            _core.decay_set_pressure(True)
            try:
                self._decay_pass(max(period, 0.001), busy=True)
            finally:
                _core.decay_set_pressure(False)
        assert zk.stats().bytes_cached == (cached if period == 0 else 0)

    @rule()
    def release(self):
        zk.release()
        assert zk.stats().bytes_cached == 0

    @rule()
    def soften(self):
        zk.soften()

    # ---- fork --------------------------------------------------------------------

    @rule()
    def fork(self):
        """The child checks the accounting it inherited, frees every block
        (each phase's live bytes go to zero, the cache's in-use bytes back
        to what other tests hold) and exits; an alarm kills it if it hangs."""
        pid = os.fork()
        if pid == 0:
            status = 1
            try:
                signal.alarm(60)
                self.consistent()
                for key in list(self.live):
                    self.free(key)
                self.consistent()
                assert zk.stats().bytes_in_use == self.base_in_use
                status = 0
            except BaseException as exc:   # noqa: BLE001 - reported by the exit status
                os.write(2, f"fork child: {exc!r}\n".encode())
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        assert status == 0, f"the fork child failed (status {status:#x})"

    # ---- the invariant: the model, exactly, after every step --------------------

    @invariant()
    def consistent(self):
        zk.check()
        s = zk.stats()
        assert s.bytes_in_use == self.in_use(), (s.bytes_in_use, self.in_use())
        assert s.budget_refusals == self.base_refusals + self.refusals
        assert s.bytes_cached <= zk.settings()["cache_bytes"]
        for model in self.open + self.closed:
            got = model.phase.stats
            want = dict(live_bytes=model.live, live_arrays=model.live_arrays, peak_bytes=model.peak,
                        arrays=model.arrays, bytes_allocated=model.bytes_allocated, small_arrays=model.small,
                        budget_refusals=model.refusals, closed=model.closed)
            if model.closed:
                want.update(escaped_arrays=model.escaped_arrays, escaped_bytes=model.escaped_bytes)
            have = {k: getattr(got, k) for k in want}
            assert have == want, f"{model.phase.name}: {have} != model {want}"
        for block in self.live.values():
            data = block.data()
            assert data[0] == block.stamp and data[-1] == block.stamp, f"{block.kind} block overwritten"

    def teardown(self):
        _core.decay_use_real()
        for ph in reversed(self.open):
            ph.phase.__exit__(None, None, None)
        for key in list(self.live):
            self.free(key)
        configure(**self.saved)
        gc.collect()
        zk.check()
        assert zk.stats().bytes_in_use == self.base_in_use


TestAllocatorMachine = AllocatorMachine.TestCase
TestAllocatorMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None,
                                         suppress_health_check=[HealthCheck.too_slow])
