"""A hypothesis state machine over the raw handler entry points: random
malloc/calloc/realloc/free across class boundaries, every setting changed
while blocks are live, reserve/release/soften; every live block keeps its
stamp and the core's invariants hold after every step.  tests/test_stress.py
runs the same operations from many threads at once."""
import ctypes
import warnings

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

import zkalloc_np as zk
from zkalloc_np import _core

KiB, MiB = 1 << 10, 1 << 20
SIZES = st.one_of(
    st.sampled_from([1, 4095, 4096, 64 * KiB - 1, 64 * KiB, 80 * KiB, MiB, 2 * MiB - 1, 2 * MiB, 2 * MiB + 1]),
    st.integers(min_value=1, max_value=6 * MiB),
)


def view(address, size):
    return np.ctypeslib.as_array((ctypes.c_uint8 * size).from_address(address))


class CacheMachine(RuleBasedStateMachine):
    blocks = Bundle("blocks")

    def __init__(self):
        super().__init__()
        self.saved = zk.settings()
        self.next_stamp = 1
        self.live = {}   # address -> (size, stamp)

    def _stamp(self, address, size):
        stamp = self.next_stamp % 251 + 1
        self.next_stamp += 1
        view(address, size)[:] = stamp
        self.live[address] = (size, stamp)
        return address

    @rule(target=blocks, size=SIZES)
    def malloc(self, size):
        address = _core.raw_malloc(size)
        assert address != 0 and address not in self.live
        return self._stamp(address, size)

    @rule(target=blocks, size=SIZES)
    def calloc(self, size):
        address = _core.raw_calloc(1, size)
        assert address != 0 and address not in self.live
        assert not view(address, size).any(), "calloc returned dirty memory"
        return self._stamp(address, size)

    @rule(target=blocks, block=consumes(blocks), size=SIZES)
    def realloc(self, block, size):
        old_size, stamp = self.live.pop(block)
        address = _core.raw_realloc(block, size)
        assert address != 0
        kept = min(old_size, size)
        assert (view(address, kept) == stamp).all(), "realloc lost bytes"
        return self._stamp(address, size)

    @rule(block=consumes(blocks))
    def free(self, block):
        size, stamp = self.live.pop(block)
        assert (view(block, size) == stamp).all(), "a live block was overwritten"
        _core.raw_free(block, size)

    @rule(cap=st.sampled_from([0, 3 * MiB, 16 * MiB, 1 << 30]))
    def set_cap(self, cap):
        with warnings.catch_warnings():   # a cap under the thread cache is warned about (test_api_polish): wanted here
            warnings.simplefilter("ignore", zk.SettingsWarning)
            zk.configure(cache_bytes=cap)
        assert zk.stats().bytes_cached <= cap

    @rule(min_bytes=st.sampled_from([1, 4096, 64 * KiB, MiB]))
    def set_min_bytes(self, min_bytes):
        zk.configure(min_bytes=min_bytes)

    @rule(size=SIZES, count=st.integers(min_value=0, max_value=3))
    def reserve(self, size, count):
        zk.reserve(size, count)
        assert zk.stats().bytes_cached <= zk.settings()["cache_bytes"]

    @rule(lazy=st.sampled_from([0, 4096, MiB]), thread_cache=st.sampled_from([0, 4 * MiB, 256 * MiB]),
          hugepages=st.booleans())
    def set_other_settings(self, lazy, thread_cache, hugepages):
        with warnings.catch_warnings():   # a thread cache over the cap is warned about (test_api_polish): wanted here
            warnings.simplefilter("ignore", zk.SettingsWarning)
            zk.configure(lazy_zero_bytes=lazy, thread_cache_bytes=thread_cache, hugepages=hugepages)

    @rule(target=blocks, parts=st.lists(st.integers(min_value=256 * KiB, max_value=4 * MiB), min_size=1, max_size=6),
          smaller=st.integers(min_value=64 * KiB, max_value=2 * MiB))
    def carve(self, parts, smaller):
        """Idle memory of other classes serves a smaller request: free some
        regions, then ask for a size none of them has (carved)."""
        freed = [_core.raw_malloc(p) for p in parts]
        for address, p in zip(freed, parts):
            _core.raw_free(address, p)
        address = _core.raw_calloc(1, smaller)
        assert address != 0 and address not in self.live
        assert not view(address, smaller).any(), "calloc on carved pages returned dirty memory"
        return self._stamp(address, smaller)

    @rule(target=blocks, parts=st.lists(st.integers(min_value=MiB, max_value=3 * MiB), min_size=2, max_size=5))
    def gather(self, parts):
        """A request larger than any idle region takes their pages together."""
        freed = [_core.raw_malloc(p) for p in parts]
        for address, p in zip(freed, parts):
            view(address, p)[:] = 0xEE
            _core.raw_free(address, p)
        size = sum(parts)
        address = _core.raw_calloc(1, size)
        assert address != 0 and address not in self.live
        assert not view(address, size).any(), "calloc on gathered pages returned dirty memory"
        return self._stamp(address, size)

    @rule(decay=st.sampled_from([0, 10, 10000]))
    def set_decay(self, decay):
        zk.configure(decay_ms=decay)

    @rule()
    def release(self):
        zk.release()
        assert zk.stats().bytes_cached == 0

    @rule()
    def soften(self):
        zk.soften()

    @invariant()
    def consistent(self):
        zk.check()
        for address, (size, stamp) in self.live.items():
            v = view(address, size)
            assert v[0] == stamp and v[-1] == stamp

    def teardown(self):
        for address, (size, _) in self.live.items():
            _core.raw_free(address, size)
        zk.configure(**self.saved)
        zk.check()
        assert zk.stats().bytes_in_use == 0


TestCacheMachine = CacheMachine.TestCase
TestCacheMachine.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
