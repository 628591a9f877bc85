"""``python -m zkalloc_np run`` and ``info``."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from zkalloc_np.cli import run as _run
from zkalloc_np._stats import ClassStats, Stats
from zkalloc_np.cli.process import Resources, read_own

MiB = 1 << 20

PROGRAM = """
import sys
import numpy as np
import zkalloc_np
print("argv", sys.argv[1:])
print("path0", sys.path[0])
owned = []
for _ in range(6):
    a = np.ones(8 * 1024 * 1024 // 8)
    owned.append(zkalloc_np.owns(a))
    del a
print("owned", all(owned), "installed", zkalloc_np.is_installed())
if "--fail" in sys.argv:
    raise RuntimeError("the program failed")
if "--exit" in sys.argv:
    sys.exit(int(sys.argv[-1]))
"""


def zk_cli(*args: str, cwd, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("ZKALLOC_")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "zkalloc_np", *args], capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=120)


@pytest.fixture
def program(tmp_path):
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "prog.py"
    path.write_text(textwrap.dedent(PROGRAM))
    (tmp_path / "progmod.py").write_text(textwrap.dedent(PROGRAM))
    return path


def test_run_script_with_json_report(program, tmp_path):
    report_path = tmp_path / "report.json"
    done = zk_cli("run", "--json", str(report_path), str(program), "a", "--flag", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "argv ['a', '--flag']" in done.stdout
    assert f"path0 {program.parent}" in done.stdout
    assert "owned True installed True" in done.stdout
    assert "zkalloc run:" in done.stderr and "hit rate" in done.stderr and "page faults" in done.stderr
    assert "estimate" not in done.stderr and "zkalloc_np compare" in done.stderr
    report = json.loads(report_path.read_text())
    assert set(report) == REPORT_FIELDS and set(report["cache"]) == CACHE_FIELDS
    assert set(report["resources"]) == RESOURCE_FIELDS
    cache = report["cache"]
    eight = [c for c in cache["classes"] if c["bytes"] == 8 * MiB]
    assert eight and eight[0]["hits"] >= 5 and eight[0]["misses"] >= 1
    assert report["exit_code"] == 0
    assert cache["hits"] >= 5 and cache["misses"] >= 1
    assert cache["bytes_served_from_cache"] >= 5 * 8 * MiB
    assert cache["peak_bytes_in_use"] >= 8 * MiB
    assert report["resources"]["minor_faults"] >= 0
    assert report["counters_source"] in ("/proc/self/stat", "getrusage")
    assert report["processes"] == {"covered": 1, "not_covered": 0, "children_user_s": 0.0, "children_system_s": 0.0}
    assert report["command"] == [str(program), "a", "--flag"]


def test_run_module_keeps_exit_code(program, tmp_path):
    done = zk_cli("run", "-m", "progmod", "--exit", "7", cwd=tmp_path)
    assert done.returncode == 7, done.stderr
    assert "argv ['--exit', '7']" in done.stdout and "owned True installed True" in done.stdout
    assert "exit 7" in done.stderr


def test_run_exception_is_printed_before_the_report(program, tmp_path):
    done = zk_cli("run", str(program), "--fail", cwd=tmp_path)
    assert done.returncode == 1
    assert "RuntimeError: the program failed" in done.stderr
    assert "zkalloc run:" in done.stderr and "exit 1" in done.stderr


def test_run_missing_script(tmp_path):
    done = zk_cli("run", "nowhere.py", cwd=tmp_path)
    assert done.returncode == 2 and "can't open file" in done.stderr
    done = zk_cli("run", cwd=tmp_path)
    assert done.returncode == 2 and "give a script" in done.stderr
    done = zk_cli("run", "-m", "no_such_module_here", cwd=tmp_path)
    assert done.returncode == 2 and "no module named 'no_such_module_here'" in done.stderr


@pytest.mark.parametrize("where", ["missing-folder", "a-folder", "read-only-folder"])
def test_run_checks_the_json_path_before_the_program_starts(program, tmp_path, where):
    if where == "missing-folder":
        path = tmp_path / "nonexistent" / "r.json"
    elif where == "a-folder":
        path = tmp_path
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only folders")
        ro = tmp_path / "ro"
        ro.mkdir(mode=0o500)
        path = ro / "r.json"
    done = zk_cli("run", "--json", str(path), str(program), cwd=tmp_path)
    assert done.returncode == 2
    assert "argv" not in done.stdout, "the program ran"
    assert "--json" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) <= 3   # usage and one line


def test_run_quiet_writes_only_the_json(program, tmp_path):
    report_path = tmp_path / "r.json"
    done = zk_cli("run", "--quiet", "--json", str(report_path), str(program), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "zkalloc run:" not in done.stderr
    assert json.loads(report_path.read_text())["cache"]["hits"] >= 5


def _stats(hits: int, classes: tuple[ClassStats, ...], **extra) -> Stats:
    zero = dict.fromkeys(Stats.__dataclass_fields__, 0)
    zero.update(hits=hits, misses=1, hit_rate=0.0, thp=False, installed=True, classes=classes,
                small_allocs_by_size={}, phases={})
    zero.update(extra)
    return Stats(**zero)


REPORT_FIELDS = {"command", "exit_code", "resources", "counters_source", "cache", "processes",
                 "peak"}   # run --peak's PeakReport, None without it
RESOURCE_FIELDS = {"wall_s", "user_s", "system_s", "minor_faults", "major_faults", "peak_rss_bytes"}
CACHE_FIELDS = {"hits", "misses", "hit_rate", "bytes_served_from_cache", "bytes_newly_mapped", "bytes_repurposed",
                "bytes_cached", "cap_bytes", "min_bytes", "budget_bytes", "peak_bytes_in_use", "peak_bytes_cached",
                "peak_bytes_mapped", "evictions", "evicted_bytes", "small_allocs", "small_frees", "foreign_frees",
                "calloc_fresh", "calloc_memset", "calloc_discard", "budget_refusals", "map_failures", "classes",
                "small_allocs_by_size"}


def _resources(wall=1.0, user=0.0, system=0.0, minor=0, major=0, peak=0):
    return Resources(wall, user, system, minor, major, peak)


def test_build_report_has_only_measured_fields_and_a_per_class_breakdown():
    before = _stats(0, (ClassStats(64 * MiB, 0, 1, 0, 1),), small_allocs=5, small_allocs_by_size={64: 5})
    after = _stats(11, (ClassStats(64 * MiB, 10, 1, 0, 1), ClassStats(MiB, 1, 3, 0, 1)), misses=4,
                   small_allocs=12, small_allocs_by_size={64: 9, 4096: 3})
    used = _resources(2.0, 1.0, 0.1, 1000, 2, 300 * MiB)
    report = _run.build_report(["prog.py", "x"], 0, used, "test", (before, after))
    assert set(report.as_dict()) == REPORT_FIELDS and set(report.as_dict()["cache"]) == CACHE_FIELDS
    cache = report.cache
    assert cache.hits == 11 and cache.misses == 3
    assert cache.bytes_served_from_cache == 641 * MiB and cache.bytes_newly_mapped == 3 * MiB
    assert report.resources == used
    by_class = {c.bytes: c for c in cache.classes}
    assert (by_class[64 * MiB].hits, by_class[64 * MiB].misses, by_class[64 * MiB].bytes_served) == (10, 0, 640 * MiB)
    assert (by_class[MiB].hits, by_class[MiB].misses, by_class[MiB].bytes_missed) == (1, 3, 3 * MiB)
    assert cache.small_allocs == 7 and cache.small_allocs_by_size == {64: 4, 4096: 3}
    text = str(report)
    assert "hit rate 78.6%" in text and "641.0 MiB served from resident memory" in text
    assert "64.0 MiB" in text and "1.0 MiB" in text          # the classes are named
    assert "left to numpy: 7 requests" in text and "64 B..127 B" in text
    for claim in ("estimate", "without zkalloc", "avoided", "at least"):
        assert claim not in text
    assert "python -m zkalloc_np compare prog.py x" in text


def test_newly_mapped_counts_fresh_memory_not_class_size_times_misses():
    """Misses served from repurposed idle memory map nothing new (issue 31: '5.8 GiB newly mapped'
    where 4.86 GiB of it was idle memory reused)."""
    before = _stats(0, (ClassStats(64 * MiB, 0, 0, 0, 0),))
    after = _stats(0, (ClassStats(64 * MiB, 0, 10, 0, 1),), misses=10, repurposed_bytes=576 * MiB,
                   peak_bytes_mapped=128 * MiB)
    report = _run.build_report(["p.py"], 0, _resources(), "test", (before, after))
    assert report.cache.bytes_newly_mapped == 64 * MiB and report.cache.bytes_repurposed == 576 * MiB
    text = str(report)
    assert "took 64.0 MiB of fresh memory and 576.0 MiB of idle memory" in text
    assert "peak mapped 128.0 MiB" in text and "newly mapped" not in text


def test_budget_refusals_are_reported_with_the_budget():
    before, after = _stats(0, ()), _stats(0, (), budget_refusals=2)
    report = _run.build_report(["p.py"], 1, _resources(), "test", (before, after), budget_bytes=16 * MiB)
    assert report.cache.budget_refusals == 2 and report.cache.budget_bytes == 16 * MiB
    assert "2 request(s) refused by the process budget (16.0 MiB, ZKALLOC_BUDGET" in str(report)
    quiet = _run.build_report(["p.py"], 0, _resources(), "test", (before, before), budget_bytes=16 * MiB)
    assert "refused" not in str(quiet)


def test_the_children_are_added_up_and_counted():
    from zkalloc_np.cli.activity import CacheActivity, ClassReport
    from zkalloc_np.cli.children import Children
    own = _stats(3, (ClassStats(MiB, 3, 1, 0, 1),), misses=1)
    zero = _stats(0, (), misses=0)
    kids = Children(covered=2, not_covered=1, user_s=0.5, system_s=0.25,
                    cache=CacheActivity(hits=7, misses=2, classes=[ClassReport(MiB, 7, 2, 7 * MiB, 2 * MiB)]))
    report = _run.build_report(["p.py"], 0, _resources(), "test", (zero, own), children=kids)
    assert report.cache.hits == 10 and report.cache.misses == 3
    assert [(c.bytes, c.hits, c.misses) for c in report.cache.classes] == [(MiB, 10, 3)]
    assert report.processes == _run.Processes(3, 1, 0.5, 0.25)
    text = str(report)
    assert "processes: 3 covered" in text and "1 more had zkalloc installed but never reported" in text


def test_read_own():
    counters, source = read_own()
    assert counters.minor_faults > 0 and counters.user_s > 0 and source == "/proc/self/stat"


def test_info_shows_env_and_cap_source(tmp_path):
    done = zk_cli("info", cwd=tmp_path, env={"ZKALLOC_CACHE_BYTES": "256M", "ZKALLOC_NOPE": "1"})
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "numpy 2." in out and "handler in effect here: default_allocator" in out
    assert "transparent huge pages: enabled=" in out and "memlock limit" in out
    assert "cache cap: 256.0 MiB (env ZKALLOC_CACHE_BYTES)" in out
    assert "from the environment: ZKALLOC_CACHE_BYTES=256M" in out
    assert "ZKALLOC_NOPE is not a zkalloc setting and is ignored" in out


def test_info_says_when_the_memlock_limit_does_not_apply(tmp_path):
    import shutil
    done = zk_cli("info", cwd=tmp_path)
    exempt = "exempt from it" in done.stdout
    from zkalloc_np._system import memlock_exempt
    assert exempt == memlock_exempt()
    setpriv = shutil.which("setpriv")
    if setpriv is None or not memlock_exempt():
        pytest.skip("needs setpriv and CAP_IPC_LOCK to drop it")
    dropped = subprocess.run([setpriv, "--inh-caps=-ipc_lock", "--bounding-set=-ipc_lock", sys.executable, "-m",
                              "zkalloc_np", "info"], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert dropped.returncode == 0, dropped.stderr
    assert "memlock limit" in dropped.stdout and "exempt" not in dropped.stdout


# -- what the user sees when the program fails -------------------------------------------------

CRASH = """
import numpy as np
def inner():
    raise ValueError("the program's own error")
a = np.ones(1 << 20)
inner()
"""


def _frames(stderr: str) -> list[str]:
    return [line.strip() for line in stderr.splitlines() if line.strip().startswith("File ")]


@pytest.mark.parametrize("as_module", [False, True])
def test_a_crash_shows_only_the_programs_frames(tmp_path, as_module):
    (tmp_path / "crash.py").write_text(textwrap.dedent(CRASH))
    target = ["-m", "crash"] if as_module else ["crash.py"]
    done = zk_cli("run", *target, cwd=tmp_path)
    assert done.returncode == 1
    assert "ValueError: the program's own error" in done.stderr
    frames = _frames(done.stderr)
    assert len(frames) == 2, done.stderr                      # <module> and inner, as python crash.py shows
    assert all("crash.py" in f for f in frames), frames
    for machinery in ("zkalloc_np", "runpy", "importlib"):
        assert machinery not in done.stderr.split("zkalloc run:")[0], done.stderr
    # the program's frames as plain python shows them (python -m also shows two of runpy's), and the
    # report after them
    plain = subprocess.run([sys.executable, *target], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    own = [f.split(",")[1:] for f in _frames(plain.stderr) if "crash.py" in f]
    assert own == [f.split(",")[1:] for f in frames]
    assert done.stderr.index("ValueError") < done.stderr.index("zkalloc run:")
    assert "exit 1" in done.stderr and "measure it" not in done.stderr


def test_a_syntax_error_shows_no_machinery_frames(tmp_path):
    (tmp_path / "broken.py").write_text("x = (\n")
    done = zk_cli("run", "broken.py", cwd=tmp_path)
    assert done.returncode == 1
    assert "SyntaxError" in done.stderr and "broken.py" in done.stderr
    assert "runpy" not in done.stderr and "_run.py" not in done.stderr


ABORT = """
import os
import numpy as np
kept = [np.ones(4 << 20) for _ in range(4)]   # 128 MiB touched before the crash
print("about to abort", flush=True)
os.abort()
"""


def test_a_program_killed_by_a_signal_still_gets_what_was_measured(tmp_path):
    (tmp_path / "abort.py").write_text(textwrap.dedent(ABORT))
    report_path = tmp_path / "r.json"
    done = zk_cli("run", "--json", str(report_path), "abort.py", cwd=tmp_path)
    assert done.returncode == -6, done.stderr                  # died by SIGABRT, as the program did
    assert "about to abort" in done.stdout
    assert "killed by signal 6 (SIGABRT)" in done.stderr
    assert "page faults" in done.stderr and "peak RSS" in done.stderr
    assert "cache: no counters" in done.stderr
    report = json.loads(report_path.read_text())
    assert report["signal"] == 6 and report["signal_name"] == "SIGABRT" and report["cache"] is None
    assert report["exit_code"] is None and report["command"] == ["abort.py"]
    assert report["resources"]["peak_rss_bytes"] >= 128 * MiB
    assert report["resources"]["minor_faults"] > 0 and report["resources"]["wall_s"] > 0


def test_an_ordinary_exit_is_not_supervised_differently(program, tmp_path):
    done = zk_cli("run", str(program), "--exit", "0", cwd=tmp_path)
    assert done.returncode == 0 and "killed by signal" not in done.stderr


def test_the_suggestion_is_shell_quoted_and_only_after_success():
    ok = _stats(1, ())
    report = _run.build_report(["prog.py", "--size", "2^18", "a b"], 0, _resources(), "test", (ok, ok))
    assert "measure it: python -m zkalloc_np compare prog.py --size '2^18' 'a b'" in str(report)
    failed = _run.build_report(["prog.py"], 3, _resources(), "test", (ok, ok))
    assert "measure it" not in str(failed)


def test_user_traceback_drops_only_the_leading_machinery():
    import runpy as _runpy

    def raiser():
        raise KeyError("x")

    try:
        raiser()
    except KeyError as exc:
        tb = exc.__traceback__
    # a traceback that starts in user code is left alone
    assert _run.user_traceback(tb) is tb
    assert _run._is_machinery(_run.__file__) and _run._is_machinery(_runpy.__file__)
    assert _run._is_machinery("<frozen runpy>") and not _run._is_machinery(__file__)


BUDGET = """
import numpy as np
try:
    np.ones((32 << 20) // 8)   # 32 MiB: over a 16 MiB budget
except MemoryError as exc:
    print("MemoryError:", exc)
import zkalloc_np
print(zkalloc_np.stats())
"""


def test_a_process_budget_refusal_is_named_in_the_report_stats_and_log(tmp_path):
    """Issue 31.5: ZKALLOC_BUDGET=16M failed as a bare MemoryError, and neither the log nor run's report
    said a budget had refused it."""
    (tmp_path / "budget.py").write_text(textwrap.dedent(BUDGET))
    done = zk_cli("run", "--json", "r.json", "budget.py", cwd=tmp_path,
                  env={"ZKALLOC_BUDGET": "16M", "ZKALLOC_LOG": "1"})
    assert done.returncode == 0, done.stderr
    assert "MemoryError:" in done.stdout
    assert "refused by the process budget (budget=16.0 MiB, ZKALLOC_BUDGET" in done.stdout     # stats()
    assert "1 request(s) refused by the process budget (16.0 MiB, ZKALLOC_BUDGET" in done.stderr   # run's report
    assert "zkalloc_np: run: 1 request(s) refused by the process budget (budget=16.0 MiB" in done.stderr  # the log
    cache = json.loads((tmp_path / "r.json").read_text())["cache"]
    assert cache["budget_refusals"] == 1 and cache["budget_bytes"] == 16 << 20
