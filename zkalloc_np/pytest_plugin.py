"""A pytest plugin that runs a test session with zkalloc as numpy's handler.

Load it explicitly (it is not auto-registered, so it never affects other
test runs)::

    python -m pytest -p zkalloc_np.pytest_plugin --pyargs numpy._core -m "not slow"

At load time, before any test module is imported, it lowers ``min_bytes``
(``--zkalloc-min-bytes``, default 1, so every array goes through the cache,
not only the big ones: a small one takes a 4 KiB region) and installs
zkalloc:

- ``--zkalloc-mode=install`` (default): ``install()``, process-wide, so every
  thread of the session (numpy's thread tests included) allocates from the
  cache.  The few numpy tests that assert numpy's own default handler is in
  effect (DESELECT_UNDER_INSTALL) are deselected, unless
  ``--zkalloc-keep-default-handler-tests``.
- ``--zkalloc-mode=installed``: enters ``installed()`` in the main thread's
  context for the whole session; other threads keep numpy's default handler.

At the end of the session it collects garbage, runs ``zkalloc.check()`` (the
core's invariant walker), prints the cache's stats in the terminal summary,
and fails the session (exit status 1) when the check fails or when no request
reached the zkalloc handler at all (it was not in effect).
"""
from __future__ import annotations

import contextlib
import gc
from typing import Any

import pytest

import zkalloc_np as zk

#: numpy tests that assert numpy's own default handler is in effect, which a
#: process-wide install changes on purpose (the default handler's name is
#: "zkalloc" then): (file under numpy's package, test name) -> reason.  They
#: pass under ``--zkalloc-mode=installed``.
DESELECT_UNDER_INSTALL: dict[tuple[str, str], str] = {
    ("_core/tests/test_mem_policy.py", "test_default_policy_singleton"):
        "asserts get_handler_name() == 'default_allocator' after PyDataMem_SetHandler(NULL)",
    ("_core/tests/test_mem_policy.py", "test_context_locality"):
        "asserts a context that resets its handler to NULL sees 'default_allocator'",
    ("_core/tests/test_mem_policy.py", "test_thread_locality"):
        "asserts a new thread sees 'default_allocator'",
}

_STATE_KEY = pytest.StashKey[dict[str, Any]]()


def pytest_addoption(parser: pytest.Parser) -> None:
    """--zkalloc-mode, --zkalloc-min-bytes, --zkalloc-keep-default-handler-tests."""
    group = parser.getgroup("zkalloc", "zkalloc-np as numpy's memory handler")
    group.addoption("--zkalloc-mode", choices=("install", "installed"), default="install",
                    help="install: process-wide, every thread (default); "
                         "installed: installed() in the main thread's context")
    group.addoption("--zkalloc-min-bytes", default="1",
                    help="min_bytes for the session (default 1: every array goes through the cache)")
    group.addoption("--zkalloc-keep-default-handler-tests", action="store_true",
                    help="with --zkalloc-mode=install, do not deselect numpy's tests that "
                         "assert numpy's default handler is in effect")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """Lower min_bytes and install zkalloc before any test module is imported."""
    saved = zk.settings()
    zk.configure(min_bytes=config.getoption("zkalloc_min_bytes"))
    zk.reset_stats()
    mode = config.getoption("zkalloc_mode")
    stack = contextlib.ExitStack()
    if mode == "install":
        zk.install()
    else:
        stack.enter_context(zk.installed())
    config.stash[_STATE_KEY] = {"mode": mode, "saved": saved, "stack": stack, "error": None, "stats": None}


def _is_default_handler_test(item: pytest.Item) -> bool:
    """Whether `item` is one of DESELECT_UNDER_INSTALL (any parametrization)."""
    path = str(getattr(item, "path", "")).replace("\\", "/")
    name = getattr(item, "originalname", item.name)
    return any(path.endswith("numpy/" + file) and name == test for file, test in DESELECT_UNDER_INSTALL)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under a process-wide install, deselect DESELECT_UNDER_INSTALL."""
    if config.getoption("zkalloc_mode") != "install" or config.getoption("zkalloc_keep_default_handler_tests"):
        return
    dropped = [item for item in items if _is_default_handler_test(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not _is_default_handler_test(item)]


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Run zkalloc.check(); fail the session if it fails or zkalloc saw nothing."""
    state = session.config.stash.get(_STATE_KEY, None)
    if state is None:
        return
    gc.collect()
    try:
        zk.check()
    except zk.InvariantError as exc:
        state["error"] = str(exc)
    stats = zk.stats()
    state["stats"] = stats
    routed = stats.hits + stats.misses + stats.small_allocs
    if state["error"] is None and routed == 0 and session.testscollected:
        state["error"] = "no request reached the zkalloc handler: it was not in effect"
    if state["error"] is not None:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    """A "zkalloc" section: the mode, the cache's counters and the check's result."""
    state = config.stash.get(_STATE_KEY, None)
    if state is None or state["stats"] is None:
        return
    s = state["stats"]
    tr = terminalreporter
    tr.section("zkalloc")
    tr.write_line(f"mode={state['mode']} min_bytes={zk.settings()['min_bytes']} "
                  f"hits={s.hits} misses={s.misses} small_allocs={s.small_allocs} "
                  f"small_frees={s.small_frees} foreign_frees={s.foreign_frees} invalid_frees={s.invalid_frees} "
                  f"realloc(same/remap/copy)={s.realloc_same}/{s.realloc_remap}/{s.realloc_copy} "
                  f"peak_bytes_in_use={s.peak_bytes_in_use} bytes_in_use={s.bytes_in_use}")
    if state["error"] is None:
        tr.write_line("zkalloc check: ok")
    else:
        tr.write_line(f"zkalloc check: FAILED: {state['error']}", red=True)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Leave the handler and the settings as they were before the session."""
    state = config.stash.get(_STATE_KEY, None)
    if state is None:
        return
    state["stack"].close()
    zk.uninstall()
    zk.configure(**state["saved"])
