"""Every Python process of a program: the ``ZKALLOC_SUBPROCESS`` switch.

``ZKALLOC_SUBPROCESS=1`` (on, true, yes) in the environment installs zkalloc
process-wide in every Python process started with it, as soon as that
process imports numpy: ``zkalloc_np_subprocess.pth``, shipped in the wheel,
arms it at interpreter start-up (zkalloc_np/cli/startup.py) and does
nothing while the variable is unset.  ``ZKALLOC_SUBPROCESS=FOLDER`` does the
same and has each such process write what its cache did there:
``FOLDER/PID.started`` when zkalloc is installed, ``FOLDER/PID.json`` when
the process ends; `collect` adds them up, and counts the processes that
started but never wrote (killed, ended by ``os._exit`` outside
multiprocessing, or still running).  ``run`` and ``compare`` set it for
the program, so its multiprocessing workers (fork, spawn, forkserver) and
its ``subprocess`` Python children are covered and reported.

A fork child (``os.fork``, multiprocessing's fork and forkserver workers)
inherits its parent's install and its counters: it takes a snapshot at the
fork (``os.register_at_fork``) and reports only what changed after.  A
multiprocessing worker ends in ``os._exit`` after multiprocessing's own
exit hook, which runs multiprocessing's finalizers but not ``atexit``: the
report is written by such a finalizer there, by ``atexit`` elsewhere.  An
idle ``Pool`` worker is ended by ``Pool.terminate()``'s SIGTERM (the end of
``with Pool() as pool:``): in a multiprocessing worker whose SIGTERM has no
handler of its own, SIGTERM writes the report first, then ends the worker
by SIGTERM as before (a worker inside a long C call finishes that call
first).  multiprocessing's forkserver and resource tracker processes are
helpers: not counted (the forkserver's workers are).
"""
from __future__ import annotations

import atexit
import json
import os
import signal
import sys
from dataclasses import asdict, dataclass, field
from typing import Any

from .activity import CacheActivity, add, cache_activity
from .process import Resources, read_own

SWITCH = "ZKALLOC_SUBPROCESS"
_ON = ("1", "on", "true", "yes")
#: sys.orig_argv words of multiprocessing's helper processes.
_HELPERS = ("multiprocessing.forkserver", "multiprocessing.resource_tracker")


@dataclass
class _State:
    folder: str | None = None
    pid: int = 0                       # the process the snapshot below belongs to
    before: Any = None                 # zkalloc_np.Stats at install or fork
    resources: Resources | None = None
    written: bool = False
    writing: bool = False
    deferred: int = 0                  # a SIGTERM that came in while writing
    fork_hook: bool = False


_state = _State()


class _Token:
    """Kept alive for multiprocessing.util.register_after_fork (a weak registry)."""


_token = _Token()


def folder_from(value: str | None) -> str | None:
    """The report folder a value of the switch names (None: install only)."""
    if value is None or value.strip().lower() in _ON:
        return None
    return value


def start_from_environment() -> None:
    """Install zkalloc here, as the switch asks (called once numpy is imported)."""
    value = os.environ.get(SWITCH, "")
    if not value.strip():
        return
    start(folder_from(value))


def _is_helper() -> bool:
    """Whether this is multiprocessing's forkserver or resource tracker itself
    (their command line, in the process the interpreter started in: the
    forkserver's forked workers keep its command line)."""
    startup = sys.modules.get("zkalloc_np_startup")
    if startup is None or getattr(startup, "STARTED_PID", None) != os.getpid():
        return False
    argv = " ".join(getattr(sys, "orig_argv", sys.argv))
    return any(name in argv for name in _HELPERS)


def start(folder: str | None) -> None:
    """Install zkalloc process-wide and, with a folder, report into it."""
    import zkalloc_np
    zkalloc_np.install()
    watch_forks(folder)
    if not _is_helper():
        _begin()


def watch_forks(folder: str | None) -> None:
    """Have fork children of this process report into `folder` (their own
    share only), and set the switch for the processes it starts."""
    _state.folder = folder
    os.environ[SWITCH] = folder if folder is not None else "1"
    if not _state.fork_hook:
        _state.fork_hook = True
        os.register_at_fork(after_in_child=_begin)
        atexit.register(_write)


def stop(switch: str | None) -> None:
    """No more reports from this process's future forks; the switch back to
    `switch` (its value before `watch_forks`, None: unset)."""
    _state.folder = None
    if switch is None:
        os.environ.pop(SWITCH, None)
    else:
        os.environ[SWITCH] = switch


def _hook_multiprocessing() -> None:
    """Write the report from multiprocessing's exit hook too: a finalizer now
    (spawn and forkserver workers keep it), and again from the bootstrap of
    a fork worker, which clears the finalizers it inherits."""
    from multiprocessing import util
    util.register_after_fork(_token, _in_worker)
    _in_worker(_token)


def _is_worker() -> bool:
    """Whether this is (or is becoming) a multiprocessing worker."""
    import multiprocessing
    from multiprocessing import process
    if multiprocessing.parent_process() is not None or getattr(process.current_process(), "_inheriting", False):
        return True   # running, or unpickling its spawn/forkserver preparation data
    argv = getattr(sys, "orig_argv", sys.argv)
    return "--multiprocessing-fork" in argv or (_HELPERS[0] in " ".join(argv) and not _is_helper())


def _begin() -> None:
    """From here on this process reports its own share."""
    if _state.folder is None:
        return
    import zkalloc_np
    _state.pid, _state.written = os.getpid(), False
    _state.before, (_state.resources, _) = zkalloc_np.stats(), read_own()
    try:
        with open(os.path.join(_state.folder, f"{_state.pid}.started"), "w"):
            pass
    except OSError:
        _state.folder = None   # the folder is gone: the run that made it has ended
        return
    if "multiprocessing" in sys.modules:
        _hook_multiprocessing()


def _in_worker(_: object) -> None:
    """Register the report's finalizer (after the program's own); in a
    multiprocessing worker, have SIGTERM write it too."""
    from multiprocessing import util
    util.Finalize(None, _write, exitpriority=-100)
    if _is_worker() and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _write_then_die)


def _write_then_die(sig: int, _frame: object) -> None:
    if _state.writing:   # it came in while the report was being written: die once it is
        _state.deferred = sig
        return
    _write()
    _die(sig)


def _die(sig: int) -> None:
    signal.signal(sig, signal.SIG_DFL)
    os.kill(os.getpid(), sig)


def _write() -> None:
    """This process's report, once (atomically: a reader never sees half).
    SIGTERM waits until it is written (Pool.terminate() may send it while a
    worker writes on its way out).  It runs from the SIGTERM handler too, so
    it takes no lock: the code it interrupted may hold one (a phase's exit
    holds the phase totals' lock), and a worker waiting for it would never
    die, and Pool.terminate() never return."""
    if _state.folder is None or _state.pid != os.getpid() or _state.written or _state.before is None:
        return
    _state.written = _state.writing = True
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        from .._settings import current
        from .._stats import snapshot
        activity = cache_activity(_state.before, snapshot(phases=False), current()["budget"])
        now, _ = read_own()
        assert _state.resources is not None
        data = {"pid": _state.pid, "ppid": os.getppid(), "argv": list(getattr(sys, "orig_argv", sys.argv)),
                "cache": activity.as_dict(), "resources": asdict(now.since(_state.resources))}
        path = os.path.join(_state.folder, f"{_state.pid}.json")
        with open(path + ".tmp", "w") as f:
            json.dump(data, f)
        os.replace(path + ".tmp", path)
    except Exception:   # noqa: BLE001 - at exit, never fail the program over its report
        pass
    finally:
        _state.writing = False
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        if _state.deferred:
            _die(_state.deferred)


@dataclass(frozen=True)
class Children:
    """What the other processes of a run reported, added up."""

    covered: int = 0                   # processes that wrote a report
    not_covered: int = 0               # started (zkalloc installed) but never wrote one
    cache: CacheActivity = field(default_factory=CacheActivity)
    user_s: float = 0.0
    system_s: float = 0.0


def collect(folder: str, exclude_pid: int | None = None) -> Children:
    """Add up the reports in `folder` (but `exclude_pid`'s)."""
    try:
        names = os.listdir(folder)
    except OSError:
        return Children()
    started = {n.split(".")[0] for n in names if n.endswith(".started")}
    reports = []
    for name in names:
        if not name.endswith(".json") or name.split(".")[0] == str(exclude_pid):
            continue
        try:
            with open(os.path.join(folder, name)) as f:
                reports.append(json.load(f))
        except (OSError, ValueError):
            continue
    written = {str(r["pid"]) for r in reports}
    return Children(covered=len(reports), not_covered=len(started - written - {str(exclude_pid)}),
                    cache=add(CacheActivity.from_dict(r["cache"]) for r in reports),
                    user_s=sum(r["resources"]["user_s"] for r in reports),
                    system_s=sum(r["resources"]["system_s"] for r in reports))
