"""Shared fixtures: every test leaves the cache consistent and the settings
as it found them; subprocess helpers run Python away from the source tree."""
from __future__ import annotations

import gc
import os
import subprocess
import sys
import tempfile
import textwrap

import pytest

import zkalloc_np as zk


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
    """An empty cache with zeroed counters, whose zeroing policy has learned
    nothing yet (so tests do not depend on the order they run in)."""
    gc.collect()
    zk.release()
    zk.reset_stats()
    zk._core.reset_zero_policy()
    return zk


def run_python(code: str, *, env: dict[str, str] | None = None, unset: list[str] = (),
               timeout: float = 120, cwd: str | None = None) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter, with `env` added to and `unset`
    removed from this process's environment."""
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
