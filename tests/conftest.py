"""Shared fixtures: every test leaves the cache consistent and the settings
as it found them; subprocess helpers run Python away from the source tree.

Under AddressSanitizer (tools/sanitize.sh py-asan): tests marked
``@pytest.mark.no_asan(reason=...)`` are skipped with that reason, run_python
gives its children ASAN_SLOWDOWN times longer, and where the script asks
(SANITIZE_REPORTS) the test that each sanitizer report came from,
its children's included, is recorded."""
from __future__ import annotations

import ctypes
import gc
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Generator

import pytest

import zkalloc_np as zk
from zkalloc_np.cli.sanitizer import asan_active

#: Whether this process runs under AddressSanitizer (its runtime's symbols, not an environment variable).
UNDER_ASAN = asan_active()
#: How much longer a child may take under ASan (a fork test's child once took over 120 s there).
ASAN_SLOWDOWN = 5
MARKERS = ["no_asan(reason): the test cannot run under AddressSanitizer (skipped there, with the reason)"]


def pytest_configure(config: pytest.Config) -> None:
    """Register the markers (here, not in pyproject.toml: the core tests also run from a copy
    of tests/ outside the checkout, tools/matrix.sh and cibuildwheel)."""
    for marker in MARKERS:
        config.addinivalue_line("markers", marker)
    # The suite's own settings must not warn: a test that means to see a SettingsWarning
    # says so (pytest.warns, or catch_warnings with its own filter).
    config.addinivalue_line("filterwarnings", "error::zkalloc_np.SettingsWarning")
    # Python 3.12+ warns at every os.fork() in a process with more than one thread, and the
    # fork tests fork on purpose while other threads run (the decay thread, numpy's, their
    # own) to show that fork is safe then.
    config.addinivalue_line("filterwarnings",
                            r"ignore:This process \(pid=\d+\) is multi-threaded, use of fork\(\):DeprecationWarning")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the no_asan tests under ASan, each with its reason (required)."""
    for item in items:
        marker = item.get_closest_marker("no_asan")
        if marker is None:
            continue
        reason = marker.kwargs.get("reason") or (marker.args[0] if marker.args else "")
        if not reason:
            raise pytest.UsageError(f"{item.nodeid}: no_asan needs a reason")
        if UNDER_ASAN:
            item.add_marker(pytest.mark.skip(reason=f"under ASan: {reason}"))


REPORTS = os.environ.get("SANITIZE_REPORTS") if UNDER_ASAN else None


def _report_files() -> dict[str, int]:
    """The sanitizer report files in REPORTS and their sizes."""
    assert REPORTS is not None
    with os.scandir(REPORTS) as it:
        return {e.name: e.stat().st_size for e in it if e.is_file() and not e.name.startswith("tests.")}


def _note(line: str) -> None:
    """One line of this process's attribution record (tools/sanitizer_check.py reads it)."""
    assert REPORTS is not None
    with open(os.path.join(REPORTS, f"tests.{os.getpid()}"), "a") as f:
        f.write(line + "\n")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, None]:
    """Under tools/sanitize.sh: which test each sanitizer report came from.

    The runtimes write to log_path files (one per process); this records the
    test that starts, and afterwards each file that grew during it, with the
    byte range (a child's report included).  Recorded by sizes, since gcc's
    two runtimes do not both follow __sanitizer_set_report_path."""
    if REPORTS is None:
        yield
        return
    before = _report_files()
    _note(f"start\t{item.nodeid}")
    try:
        yield
    finally:
        for name, size in _report_files().items():
            if size > before.get(name, 0):
                _note(f"grew\t{item.nodeid}\t{name}\t{before.get(name, 0)}\t{size}")


def pytest_sessionstart(session: pytest.Session) -> None:
    """Under tools/sanitize.sh, UBSan's reports too go to a file: gcc's libubsan
    (beside libasan) ignores UBSAN_OPTIONS' log_path, but not its own
    __sanitizer_set_report_path."""
    if REPORTS is None:
        return
    try:
        ubsan = ctypes.CDLL("libubsan.so.1", mode=os.RTLD_NOLOAD)
    except OSError:
        return
    ubsan.__sanitizer_set_report_path(os.path.join(REPORTS, "ubsan").encode())


@pytest.fixture(autouse=True)
def consistent_cache():
    """Restore settings after the test and verify the core's invariants."""
    saved = zk.settings()
    yield
    gc.collect()
    zk.uninstall()
    zk.configure(**saved)
    zk.check()


def wait_for(condition, seconds: float = 5.0) -> bool:
    """Poll until condition() holds, at most `seconds` (a bound on waiting,
    not a timing); returns whether it holds."""
    import time
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not condition():
        time.sleep(0.005)
    return condition()


@pytest.fixture
def fresh():
    """An empty cache with zeroed counters, whose zeroing and slack policies
    have learned nothing yet (so tests do not depend on the order they run in)."""
    gc.collect()
    zk.release()
    zk.reset_stats()
    zk._core.reset_zero_policy()
    zk._core.forget_slack_returns()
    return zk


def run_python(code: str, *, env: dict[str, str] | None = None, unset: list[str] = (),
               timeout: float = 120, cwd: str | None = None) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter, with `env` added to and `unset`
    removed from this process's environment; `timeout` s at most
    (ASAN_SLOWDOWN times that under ASan)."""
    if UNDER_ASAN:
        timeout *= ASAN_SLOWDOWN
    full_env = {k: v for k, v in os.environ.items() if k not in unset}
    full_env.update(env or {})
    # A real file, not -c: multiprocessing's spawn re-imports __main__ from it.
    with tempfile.TemporaryDirectory() as tmp:
        script = os.path.join(tmp, "script.py")
        with open(script, "w") as f:
            f.write(textwrap.dedent(code))
        return subprocess.run([sys.executable, script], capture_output=True, text=True,
                              timeout=timeout, env=full_env, cwd=cwd or tmp)


MiB = 1 << 20


def smaps_entry(addr: int) -> dict[str, str]:
    """The /proc/self/smaps block of the mapping that contains addr."""
    with open("/proc/self/smaps") as f:
        text = f.read()
    for block in re.split(r"\n(?=[0-9a-f]+-[0-9a-f]+ )", text):
        start, end = (int(x, 16) for x in block.split()[0].split("-"))
        if start <= addr < end:
            fields = dict(line.split(":", 1) for line in block.splitlines()[1:] if ":" in line)
            return {k.strip(): v.strip() for k, v in fields.items()}
    raise LookupError(hex(addr))

