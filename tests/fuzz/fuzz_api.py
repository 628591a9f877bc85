"""A fuzzer for zkalloc_np's Python API and the handler's entry points.

Each input is a program: its bytes pick operations and their arguments,
bad and edge values included (0, one byte under and over each boundary,
sizes no machine can map, calloc overflows, a wrong size passed to free,
a second free, realloc after free, negative/huge/float/str settings,
budgets and shapes).  One input runs as one sequence:

    handler malloc / calloc / realloc / free   (_core.raw_*: numpy's entry points)
    numpy arrays under installed() or the innermost phase, resized, dropped
    phases entered (budgets, good and bad) and left, escaping arrays
    configure() of any setting with any value, reserve(), release(), soften()
    Python's raw domain (a bytes object while the hook is active)
    secret arrays, install()/uninstall() around an array

Only the exceptions the API documents are accepted (ValueError, TypeError
naming the argument, MemoryError for a refused or impossible request, its
PhaseBudgetError and SecretMemoryError); anything else, a crash or a hang is
a finding.  After each sequence every block is freed, the settings are put
back, and ``zkalloc_np.check()`` must pass with the cache's bytes in use
back where they started (no accounting leak).

Run it with atheris (coverage-guided, libFuzzer's flags):

    pip install atheris
    python tests/fuzz/fuzz_api.py -max_total_time=60 -artifact_prefix=/tmp/

or without atheris, on random inputs (what the test suite runs briefly):

    python tests/fuzz/fuzz_api.py --random 60 [--seed N] [--current FILE]

A finding prints the input (hex) and its traceback; ``--replay HEX`` runs
one input again.  .ci/run runs atheris for 45 s; docs/reliability.md says
what to run before a release.
"""
from __future__ import annotations

import gc
import os
import random
import sys
import time
import warnings

# atheris only to fuzz: --random and --replay run without it (and under ASan).
try:
    import atheris
    if {"--random", "--replay"} & set(sys.argv):
        atheris = None
except ImportError:
    atheris = None

if atheris is not None:
    with atheris.instrument_imports():
        import numpy as np
        import zkalloc_np as zk
        from zkalloc_np import _core
else:
    import numpy as np
    import zkalloc_np as zk
    from zkalloc_np import _core

KiB, MiB = 1 << 10, 1 << 20
MAX_CLASS = _core.class_bytes(_core.NCLASSES - 1)
#: Sizes that real allocations may get (small enough for any machine).
EDGE_SIZES = [0, 1, 511, 512, 513, 4095, 4096, 4097, 64 * KiB - 1, 64 * KiB, 64 * KiB + 1, 80 * KiB,
              MiB - 1, MiB, 2 * MiB - 1, 2 * MiB, 2 * MiB + 1, 5 * MiB + 3]
#: Sizes nothing can map: they must fail cleanly (NULL, MemoryError, ValueError).
IMPOSSIBLE = [1 << 47, (1 << 63) - 1, 1 << 63, (1 << 64) - 1]
BAD_VALUES = [-1, -(2**70), 2**64, 2**200, 1.5, float("nan"), float("inf"), "", "x", "12Q", "1e9", "-64K",
              "1000000T", None, True, b"64K", [1], object(), np.int64(-5), np.float64(2.0)]
GOOD_SETTINGS = {
    "min_bytes": [1, 4096, 64 * KiB, MiB, "64K"],
    "cache_bytes": [0, 3 * MiB, 64 * MiB, "1G"],
    "lazy_zero_bytes": [0, 4096, MiB],
    "thread_cache_bytes": [0, 4 * MiB],
    "hugepages": ["on", "off", "auto", True, 0],
    "adaptive_zero": [True, False, "on"],
    "decay_ms": [0, 10, "1s", 10000],
    "budget": [0, 8 * MiB, 64 * MiB],
    "libc": ["keep", "leave"],
}
OPERATIONS = 16
ACCEPTED = (ValueError, TypeError, MemoryError)


class Input:
    """Numbers drawn from the input's bytes (zeros once it runs out)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def left(self) -> bool:
        return self.pos < len(self.data)

    def byte(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def below(self, n: int) -> int:
        value = self.byte() | self.byte() << 8 | self.byte() << 16 if n > 256 else self.byte()
        return value % n

    def pick(self, values: list) -> object:
        return values[self.below(len(values))]

    def size(self) -> int:
        kind = self.below(8)
        if kind == 0:
            return int(self.pick(IMPOSSIBLE))
        if kind < 4:
            return int(self.pick(EDGE_SIZES))
        return self.below(6 * MiB) + 1

    def value(self, name: str) -> object:
        return self.pick(GOOD_SETTINGS[name]) if self.below(3) else self.pick(BAD_VALUES)


class Sequence:
    """One program's state: what it holds, to check and free at the end."""

    def __init__(self, inp: Input) -> None:
        self.inp = inp
        self.handler: list[tuple[int, int]] = []   # (address, size) from the entry points
        self.arrays: list[np.ndarray] = []
        self.raw: list[bytes] = []
        self.phases: list = []

    # ---- the handler's entry points ------------------------------------------

    def malloc(self) -> None:
        size = self.inp.size() if self.inp.below(8) else MAX_CLASS + 1   # just over the cache: the fallback's
        address = _core.raw_malloc(size)
        if size >= 1 << 47:
            assert address == 0, f"malloc({size}) cannot succeed"
        if address:
            self.handler.append((address, size))

    def calloc(self) -> None:
        nelem, elsize = self.inp.size(), self.inp.pick([0, 1, 8, 4096, 1 << 33, (1 << 64) - 1])
        address = _core.raw_calloc(nelem, elsize)
        if nelem * elsize >= 1 << 47:
            assert address == 0, f"calloc({nelem}, {elsize}) cannot succeed"
        if address:
            self.handler.append((address, nelem * elsize))

    def realloc(self) -> None:
        if not self.handler:
            return
        i = self.inp.below(len(self.handler))
        address, _ = self.handler[i]
        size = self.inp.size()
        cached = _core.usable_bytes(address) > 0
        moved = _core.raw_realloc(address, size)
        if moved:
            self.handler[i] = (moved, size)
        elif size == 0 and not cached:
            self.handler.pop(i)   # numpy's fallback is glibc's realloc: (p, 0) frees p and gives NULL
        else:   # refused: the block is as it was
            assert size >= 1 << 47, f"realloc to {size} failed"

    def free(self) -> None:
        if not self.handler:
            return
        address, size = self.handler.pop(self.inp.below(len(self.handler)))
        cached = _core.usable_bytes(address) > 0
        # The size is a hint the cache ignores; numpy's own free (the fallback) needs the true one.
        hint = self.inp.pick([size, 0, 1, size + 1, (1 << 64) - 1]) if cached else size
        _core.raw_free(address, hint)

    def misuse(self) -> None:
        """A second free, or realloc after free, of a cache block whose region
        is still the cache's (idle, kept: a big cap, no decay); one given
        back to the kernel is no longer anyone's, as in every allocator."""
        saved = zk.settings()
        zk.configure(cache_bytes="1G", decay_ms=0, min_bytes=64 * KiB, budget=0)
        try:
            size = 64 * KiB + self.inp.below(4 * MiB)
            address = _core.raw_malloc(size)
            assert _core.usable_bytes(address) > 0
            _core.raw_free(address, size)
            before = zk.stats().invalid_frees
            if self.inp.below(2):
                _core.raw_free(address, self.inp.size())
            else:
                assert _core.raw_realloc(address, self.inp.size()) == 0
            assert zk.stats().invalid_frees == before + 1
        finally:
            zk.configure(**saved)

    # ---- numpy ----------------------------------------------------------------

    def array(self) -> None:
        size = self.inp.size()
        make = self.inp.pick([np.empty, np.zeros, np.ones])
        try:
            if self.phases:
                a = make(size, np.uint8)
            else:
                with zk.installed():
                    a = make(size, np.uint8)
        except (MemoryError, ValueError):   # refused by a budget, or numpy's own limit
            return
        if make is np.zeros:
            assert a.tobytes().count(0) == a.size
        self.arrays.append(a)

    def resize(self) -> None:
        if not self.arrays:
            return
        a = self.arrays[self.inp.below(len(self.arrays))]
        try:
            a.resize(self.inp.size(), refcheck=False)
        except (MemoryError, ValueError):
            pass

    def drop(self) -> None:
        if self.arrays:
            self.arrays.pop(self.inp.below(len(self.arrays)))
        elif self.raw:
            self.raw.pop()

    def enter_phase(self) -> None:
        if len(self.phases) >= 4:
            return
        budget = self.inp.pick([None, 64 * KiB, MiB, 8 * MiB, "2M"] + BAD_VALUES)
        name = self.inp.pick([None, "fuzz", "fuzz-2", 5])
        try:
            ph = zk.phase(name, budget=budget, on_escape=self.inp.pick(["ignore", "warn", "bad"]))
        except (ValueError, TypeError):
            return
        ph.__enter__()
        self.phases.append(ph)

    def exit_phase(self) -> None:
        if self.phases:
            self.phases.pop().__exit__(None, None, None)

    # ---- settings and maintenance ------------------------------------------------

    def configure(self) -> None:
        name = self.inp.pick(sorted(GOOD_SETTINGS))
        before = zk.settings()
        try:
            zk.configure(**{name: self.inp.value(name)})
        except ValueError as exc:
            assert name in str(exc), f"{exc} does not name {name}"
            assert zk.settings() == before, "a refused value changed something"

    def reserve(self) -> None:
        try:
            zk.reserve(self.inp.pick([self.inp.size()] + BAD_VALUES), self.inp.pick([0, 1, 3, -1, 2**31, 1.0]))
        except ValueError as exc:
            assert "reserve(" in str(exc), exc
        except MemoryError:
            pass

    def maintain(self) -> None:
        self.inp.pick([zk.release, zk.soften, zk.stats, zk.check, zk.reset_stats])()

    def raw_bytes(self) -> None:
        """The raw hook active for one bytes() (nothing else of the
        interpreter runs meanwhile), tagged with this thread's phase."""
        if not _core.raw_current_is_hook():
            return
        n = self.inp.size()
        if n > 6 * MiB:
            return
        gc.disable()
        _core.raw_set_active(True)
        try:
            self.raw.append(bytes(n))
        except MemoryError:
            pass
        finally:
            _core.raw_set_active(False)
            gc.enable()

    def secret(self) -> None:
        shape = self.inp.pick([0, 1, 4096, (2, 3), -1, (2, -1), 2**40, 1.5, "x", None, (True,)])
        try:
            a = self.inp.pick([zk.secret_empty, zk.secret_zeros])(shape, np.uint8)
        except ValueError as exc:
            assert "(shape)" in str(exc), exc
            return
        assert zk.is_secret(a)
        self.arrays.append(a)

    def install_round(self) -> None:
        """install() and an array under it.  The raw hook goes back to a
        pass-through at once: the interpreter's own blocks served meanwhile
        would outlive the sequence and blur the check that nothing leaked
        (raw_bytes covers the raw domain)."""
        zk.install()
        _core.raw_set_active(False)
        try:
            self.arrays.append(np.ones(self.inp.pick(EDGE_SIZES), np.uint8))
        except MemoryError:   # the process's budget
            pass
        finally:
            zk.uninstall()

    # ---- one program ---------------------------------------------------------------

    def run(self) -> None:
        ops = [self.malloc, self.calloc, self.realloc, self.free, self.array, self.resize, self.drop,
               self.enter_phase, self.exit_phase, self.configure, self.reserve, self.maintain, self.raw_bytes,
               self.secret, self.install_round, self.misuse]
        assert len(ops) == OPERATIONS
        steps = 0
        while self.inp.left() and steps < 64:
            ops[self.inp.below(OPERATIONS)]()
            steps += 1

    def finish(self) -> None:
        while self.phases:
            self.exit_phase()
        for address, size in self.handler:
            _core.raw_free(address, size)
        self.handler.clear()
        self.arrays.clear()
        self.raw.clear()


BASE_SETTINGS = zk.settings()
zk.install()     # hooks the raw domain once; then a pass-through until raw_bytes turns it on
zk.uninstall()
gc.collect()
BASE_IN_USE = zk.stats().bytes_in_use


def one_input(data: bytes) -> None:
    seq = Sequence(Input(data))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # escape reports, ResourceWarning, SettingsWarning: not findings
        try:
            seq.run()
        except zk.PhaseEscapeError:
            pass
        finally:
            seq.finish()
            zk.uninstall()
            zk.configure(**BASE_SETTINGS)
    gc.collect()
    zk.check()
    in_use = zk.stats().bytes_in_use
    assert in_use == BASE_IN_USE, f"accounting leak: {in_use - BASE_IN_USE} bytes in use after the sequence"


def random_driver(seconds: float, seed: int, current: str | None) -> int:
    """Random inputs for `seconds`; returns how many ran.  A finding prints
    the input and raises; `current`: a file that holds the input running
    (hex), for a crash that leaves no traceback."""
    rng = random.Random(seed)
    deadline = time.monotonic() + seconds
    runs = 0
    while time.monotonic() < deadline:
        data = rng.randbytes(rng.randrange(1, 400))
        if current is not None:
            with open(current, "w") as f:
                f.write(data.hex())
        try:
            one_input(data)
        except BaseException:
            print(f"finding after {runs} inputs (seed {seed}); replay with --replay {data.hex()}", file=sys.stderr)
            raise
        runs += 1
    return runs


def main(argv: list[str]) -> int:
    if len(argv) > 2 and argv[1] == "--replay":
        one_input(bytes.fromhex(argv[2]))
        print("replayed: no finding")
        return 0
    if len(argv) > 2 and argv[1] == "--random":
        seed = int(argv[argv.index("--seed") + 1]) if "--seed" in argv else int.from_bytes(os.urandom(4), "little")
        current = argv[argv.index("--current") + 1] if "--current" in argv else None
        runs = random_driver(float(argv[2]), seed, current)
        print(f"fuzz_api: {runs} random sequences (seed {seed}), no finding")
        return 0
    if atheris is None:
        print("atheris is not installed (pip install atheris); use --random SECONDS", file=sys.stderr)
        return 2
    atheris.Setup(argv, one_input)
    atheris.Fuzz()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
