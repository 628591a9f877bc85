"""``python -m zkalloc_np compare``: measured records per allocator, failures
reported as failures, missing peers skipped, bad arguments refused, and the
verdict rule.  No test asserts a timing."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from zkalloc_np.cli import compare as _compare, peers as _peers
from zkalloc_np.cli.process import Resources, supervise
from zkalloc_np._verdict import Samples, judge
from zkalloc_np.cli.compare import FASTER, SAME, SLOWER, TOO_FEW, Program, RunRecord, summarize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLE = os.path.join(ROOT, "examples", "ntt_prover.py")

PROGRAM = """
import sys
import numpy as np
out, code = sys.argv[1], int(sys.argv[2])
with open(out, "a") as f:
    f.write(repr(sys.argv[1:]) + "\\n")
for _ in range(4):
    a = np.ones(1 << 20)
    del a
print("program output line")
if "--raise" in sys.argv:
    raise RuntimeError("the program failed")
if "--sleep" in sys.argv:
    import time
    time.sleep(60)
sys.exit(code)
"""


def zk_cli(*args: str, cwd, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("ZKALLOC_")}, **(env or {})}
    return subprocess.run([sys.executable, "-m", "zkalloc_np", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=timeout)


@pytest.fixture
def program(tmp_path):
    path = tmp_path / "prog.py"
    path.write_text(textwrap.dedent(PROGRAM))
    return path


# -- end to end ------------------------------------------------------------------

def test_compare_an_example_gives_a_measured_record_per_allocator(tmp_path):
    out = tmp_path / "c.json"
    wanted = ["default", "zkalloc", "glibc-tuned", "tcmalloc"]
    done = zk_cli("compare", "--runs", "1", "--allocators", ",".join(wanted), "--json", str(out),
                  EXAMPLE, "--size", "2^14", "--rounds", "1", "--single", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    assert data["command"] == [EXAMPLE, "--size", "2^14", "--rounds", "1", "--single"]
    assert set(data["allocators"]) | set(data["skipped"]) == set(wanted)
    assert {"cpu", "cores", "kernel", "numpy"} <= set(data["machine"])
    for name in data["allocators"]:
        [record] = [r for r in data["records"] if r["allocator"] == name]
        assert record["ok"] and record["exit_code"] == 0
        used = record["resources"]
        assert used["wall_s"] > 0 and used["user_s"] >= 0 and used["system_s"] >= 0
        assert used["minor_faults"] > 0 and used["major_faults"] >= 0
        assert used["peak_rss_bytes"] > 10 << 20
        summary = data["summary"][name]
        assert summary["runs_ok"] == 1 and summary["wall_s"]["median"] == used["wall_s"]
    zk = [r for r in data["records"] if r["allocator"] == "zkalloc"][0]["zkalloc"]
    assert zk["hits"] + zk["misses"] > 0 and 0 <= zk["hit_rate"] <= 1 and zk["bytes_served_from_cache"] >= 0
    assert data["summary"]["zkalloc"]["verdict"] == TOO_FEW     # one run each decides nothing
    assert "points" not in done.stdout                           # the example's output was discarded
    for name in data["allocators"]:
        assert name in done.stdout
    assert "machine:" in done.stdout


def test_arguments_and_exit_code_pass_through(program, tmp_path):
    log = tmp_path / "argv.log"
    out = tmp_path / "c.json"
    done = zk_cli("compare", "--runs", "2", "--allocators", "default,zkalloc", "--json", str(out),
                  str(program), str(log), "0", "--flag", "-m", "x", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert log.read_text().splitlines() == [repr([str(log), "0", "--flag", "-m", "x"])] * 4
    assert "program output line" not in done.stdout + done.stderr   # the program's own output is not shown
    data = json.loads(out.read_text())
    assert [r["allocator"] for r in data["records"]] == ["default", "zkalloc", "zkalloc", "default"]
    assert all(r["ok"] and r["exit_code"] == 0 for r in data["records"])


def test_a_failing_baseline_stops_after_its_first_run(program, tmp_path):
    log = tmp_path / "argv.log"
    out = tmp_path / "c.json"
    done = zk_cli("compare", "--runs", "2", "--allocators", "default,zkalloc", "--json", str(out),
                  str(program), str(log), "7", cwd=tmp_path)
    assert done.returncode == 7
    assert len(log.read_text().splitlines()) == 1           # one run, not 4
    data = json.loads(out.read_text())
    [record] = data["records"]
    assert record["allocator"] == "default" and record["exit_code"] == 7 and not record["ok"]
    assert "baseline) failed its first run, exit 7" in data["stopped"]
    assert "stopped there" in done.stdout and "verdict:" not in done.stdout


USAGE_ERROR = """
import argparse
parser = argparse.ArgumentParser(prog="prover.py")
parser.add_argument("--rows", type=int, required=True)
parser.parse_args()
"""


def test_a_script_that_exits_2_stops_after_one_run_and_shows_its_error_once(tmp_path):
    script = tmp_path / "prover.py"
    script.write_text(textwrap.dedent(USAGE_ERROR))
    done = zk_cli("compare", "--runs", "3", str(script), "--single", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("usage: prover.py") == 1, done.stderr
    assert done.stderr.count("compare: run ") == 1          # one progress line: one run
    assert "run 1/" in done.stderr and "FAILED (exit 2)" in done.stderr
    assert "error: the following arguments are required: --rows" in done.stdout   # the failure, named
    assert "Traceback" not in done.stderr


ZKALLOC_ONLY_FAILURE = """
import sys
import zkalloc_np
print("ran", flush=True)
if zkalloc_np.is_installed():
    sys.exit("this program refuses zkalloc")
"""


def test_a_failure_under_one_allocator_is_reported_in_its_row_and_the_others_carry_on(tmp_path):
    script = tmp_path / "picky.py"
    script.write_text(textwrap.dedent(ZKALLOC_ONLY_FAILURE))
    out = tmp_path / "c.json"
    done = zk_cli("compare", "--runs", "3", "--allocators", "default,zkalloc,glibc-tuned", "--json", str(out),
                  str(script), cwd=tmp_path)
    assert done.returncode == 1
    data = json.loads(out.read_text())
    by = {name: [r for r in data["records"] if r["allocator"] == name] for name in data["allocators"]}
    assert len(by["default"]) == 3 and all(r["ok"] for r in by["default"])
    assert len(by["glibc-tuned"]) == 3 and all(r["ok"] for r in by["glibc-tuned"])
    # failed the same way twice: not run a third time
    assert len(by["zkalloc"]) == 2 and not any(r["ok"] for r in by["zkalloc"])
    assert {r["stderr_tail"] for r in by["zkalloc"]} == {"this program refuses zkalloc"}
    assert data["stopped"] is None and "same way twice" in data["dropped"]["zkalloc"]
    text = " ".join(done.stdout.split())   # lines wrapped at 100 columns
    assert "zkalloc: 2 failed run(s), not timed: exit 1, exit 1; last line of stderr: this program refuses zkalloc" \
        in text
    assert "zkalloc: not run again after failing the same way twice" in text
    assert max(len(line) for line in done.stdout.splitlines()) <= 100
    assert data["summary"]["glibc-tuned"]["runs_ok"] == 3 and data["summary"]["zkalloc"]["verdict"] == "failed"


FAILS_FROM_THE_SECOND_RUN = """
import pathlib, sys
counter = pathlib.Path(sys.argv[1])
n = int(counter.read_text()) + 1 if counter.exists() else 1
counter.write_text(str(n))
if n >= 2:
    sys.exit(5)
"""


def test_a_baseline_failing_the_same_way_twice_stops(tmp_path):
    script = tmp_path / "flaky.py"
    script.write_text(textwrap.dedent(FAILS_FROM_THE_SECOND_RUN))
    out = tmp_path / "c.json"
    done = zk_cli("compare", "--runs", "5", "--allocators", "default,zkalloc", "--json", str(out),
                  str(script), str(tmp_path / "count"), cwd=tmp_path)
    assert done.returncode == 5
    data = json.loads(out.read_text())
    # default ok, zkalloc 5, zkalloc 5 (then dropped), default 5, default 5: stopped
    assert [(r["allocator"], r["exit_code"]) for r in data["records"]] == [
        ("default", 0), ("zkalloc", 5), ("zkalloc", 5), ("default", 5), ("default", 5)]
    assert "failed the same way twice, exit 5" in data["stopped"]


def test_a_module_runs_like_python_dash_m(program, tmp_path):
    (tmp_path / "progmod.py").write_text(program.read_text())
    log = tmp_path / "argv.log"
    done = zk_cli("compare", "--runs", "1", "--allocators", "zkalloc",
                  "-m", "progmod", str(log), "0", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(log.read_text().splitlines()) == 2     # default (always the baseline) and zkalloc
    assert "program output line" not in done.stdout


def test_failing_and_hanging_programs_are_reported_as_failed(program, tmp_path):
    out = tmp_path / "c.json"
    done = zk_cli("compare", "--runs", "1", "--allocators", "default", "--json", str(out),
                  str(program), str(tmp_path / "log"), "0", "--raise", cwd=tmp_path)
    assert done.returncode == 1
    assert done.stderr.count("RuntimeError: the program failed") == 1
    [record] = json.loads(out.read_text())["records"]
    assert not record["ok"] and record["exit_code"] == 1
    assert record["stderr_tail"] == "RuntimeError: the program failed"
    assert "failed its first run, exit 1: RuntimeError: the program failed" in done.stdout

    done = zk_cli("compare", "--runs", "1", "--allocators", "default", "--timeout", "2", "--json", str(out),
                  str(program), str(tmp_path / "log"), "0", "--sleep", cwd=tmp_path)
    assert done.returncode == 1
    [record] = json.loads(out.read_text())["records"]
    assert record["timed_out"] and not record["ok"] and record["signal"] == 9
    assert "timed out" in done.stdout


def test_the_header_names_only_the_allocators_that_run(monkeypatch, program, tmp_path, capsys):
    from zkalloc_np.cli.main import main
    monkeypatch.setattr(_peers, "LIBRARY_DIRS", ())
    monkeypatch.setattr(_peers, "ldconfig", dict)
    monkeypatch.chdir(tmp_path)
    code = main(["compare", "--runs", "1", "--allocators", "zkalloc,tcmalloc,glibc-tuned,jemalloc",
                 str(program), str(tmp_path / "log"), "0"])
    assert code == 0
    first = capsys.readouterr().err.splitlines()[0]
    assert first.startswith("compare: 1 run(s) each of default, zkalloc, glibc-tuned, alternating "
                            "(tcmalloc, jemalloc not installed: skipped)"), first


@pytest.mark.parametrize("args,message", [
    (["--allocators", "default,nosuch", "prog.py"], "unknown allocator(s) nosuch"),
    (["--runs", "0", "prog.py"], "must be positive, got 0"),
    (["--runs", "x", "prog.py"], "expected a whole number"),
    (["--timeout", "-1", "prog.py"], "must be positive"),
    (["missing.py"], "can't open file 'missing.py'"),
    (["-m", "no_such_module_here"], "no module named 'no_such_module_here'"),
    ([], "give a script"),
    (["--json", "/nonexistent/dir/c.json", "prog.py"], "does not exist"),
])
def test_bad_arguments_give_clear_errors(program, tmp_path, args, message):
    done = zk_cli("compare", *args, cwd=tmp_path, timeout=60)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "log").exists()


# -- in process: missing peers, the verdict, the summary -----------------------------

def test_missing_peers_are_skipped_with_the_install_line(monkeypatch, program, tmp_path):
    monkeypatch.setattr(_peers, "LIBRARY_DIRS", ())
    monkeypatch.setattr(_peers, "ldconfig", dict)
    envs, skipped = _compare.resolve(["default", "zkalloc", "glibc-tuned", "jemalloc", "mimalloc", "tcmalloc"])
    assert set(envs) == {"default", "zkalloc", "glibc-tuned"}
    assert envs["glibc-tuned"]["MALLOC_MMAP_MAX_"] == "0"
    assert skipped == {"jemalloc": "libjemalloc.so.2 not found (apt-get install libjemalloc2)",
                       "mimalloc": "libmimalloc.so.2 not found (apt-get install libmimalloc2.0)",
                       "tcmalloc": "libtcmalloc_minimal.so.4 not found (apt-get install libtcmalloc-minimal4)"}
    result = _compare.compare(Program(str(program), (str(tmp_path / "log"), "0")), ["default", "tcmalloc"], 1,
                              show_output=False)
    assert result.allocators == ["default"] and "apt-get install libtcmalloc-minimal4" in result.skipped["tcmalloc"]
    import io
    text = io.StringIO()
    _compare.render(result, text)
    assert "tcmalloc: skipped, libtcmalloc_minimal.so.4 not found (apt-get install libtcmalloc-minimal4)" \
        in text.getvalue()


def test_peers_found_are_preloaded(tmp_path, monkeypatch):
    monkeypatch.delenv("LD_PRELOAD", raising=False)   # no sanitizer runtime to skip them for (test_sanitizer_env)
    lib = tmp_path / "libtcmalloc_minimal.so.4"
    lib.write_bytes(b"")
    envs, skipped = _compare.resolve(["tcmalloc"], cache={"libtcmalloc_minimal.so.4": str(lib)})
    assert envs == {"tcmalloc": {"LD_PRELOAD": str(lib)}} and skipped == {}


@pytest.mark.parametrize("base,other,expected", [
    ([1.0, 1.1, 1.2], [0.5, 0.6, 0.7], FASTER),
    ([1.0, 1.1, 1.2], [1.3, 1.5, 1.4], SLOWER),
    ([1.0, 1.1, 1.2], [0.9, 1.05, 0.95], SAME),     # overlapping ranges: noise
    ([1.0, 1.1, 3.0], [0.5, 0.6, 1.05], SAME),      # one slow outlier is enough to overlap
    ([1.0, 1.0, 1.0], [1.0, 1.0, 1.0], SAME),       # touching ranges are not a difference
    ([1.0, 1.1], [0.1, 0.2], TOO_FEW),              # two runs each prove nothing
    ([1.0, 1.1, 1.2], [0.5], TOO_FEW),
])
def test_verdict_from_spreads(base, other, expected):
    """compare's rule (zkalloc_np._verdict.judge) on wall times alone, load unknown."""
    assert judge(Samples(base), Samples(other)).word == expected


def test_verdict_threshold_is_a_parameter():
    assert judge(Samples([2.0]), Samples([1.0]), min_runs=1).word == FASTER


def _record(allocator: str, wall: float, ok: bool = True, code: int = 0) -> RunRecord:
    return RunRecord(allocator=allocator, round=0, ok=ok, exit_code=code, signal=None, timed_out=False,
                     resources=Resources(wall, wall / 2, 0.1, 1000, 0, 100 << 20),
                     zkalloc={"hits": 9, "misses": 1, "hit_rate": 0.9, "bytes_served_from_cache": 90,
                              "bytes_newly_mapped": 10, "processes": 1} if allocator == "zkalloc" else None)


def test_summarize_spreads_speedup_and_verdicts():
    records = ([_record("default", w) for w in (2.0, 2.2, 2.4)] + [_record("zkalloc", w) for w in (1.0, 1.1, 1.2)]
               + [_record("tcmalloc", w) for w in (2.1, 2.3)] + [_record("tcmalloc", 0.0, ok=False, code=3)])
    s = summarize(records, ["default", "zkalloc", "tcmalloc"])
    assert s["default"].verdict == "(baseline)" and s["default"].speedup == pytest.approx(1.0)
    zk = s["zkalloc"]
    assert (zk.wall_s.median, zk.wall_s.low, zk.wall_s.high) == (1.1, 1.0, 1.2)
    assert zk.speedup == pytest.approx(2.2 / 1.1) and zk.verdict == FASTER
    assert zk.hit_rate.median == 0.9 and zk.bytes_served_from_cache.median == 90
    tc = s["tcmalloc"]
    assert (tc.runs_ok, tc.runs_failed, tc.failures) == (2, 1, ["exit 3"])
    assert tc.verdict == TOO_FEW and tc.hit_rate is None


def test_plan_alternates_the_order():
    assert _compare.plan(["a", "b", "c"], 3) == [(0, "a"), (0, "b"), (0, "c"), (1, "c"), (1, "b"), (1, "a"),
                                                  (2, "a"), (2, "b"), (2, "c")]


def test_zkalloc_child_runs_under_run():
    program = Program("prog.py", ("--x",))
    assert _compare.child_command(program, "default", "s.json") == [sys.executable, "prog.py", "--x"]
    assert _compare.child_command(program, "zkalloc", "s.json")[1:] == [
        "-m", "zkalloc_np", "run", "--quiet", "--json", "s.json", "prog.py", "--x"]
    assert _compare.child_command(Program("pkg.mod", (), module=True), "tcmalloc", "s.json") == [
        sys.executable, "-m", "pkg.mod"]


CHATTY = """
import numpy as np
for i in range(300):
    print("chatty line", i)
a = np.ones(1 << 20)
"""


def test_quiet_by_default_a_100_column_table_and_runs_counted_as_runs(tmp_path):
    """Issue 31.5: the program's output is not shown unless asked, the table fits 100 columns,
    and progress counts runs ("run k/n"), not the program's rounds."""
    script = tmp_path / "chatty.py"
    script.write_text(textwrap.dedent(CHATTY))
    done = zk_cli("compare", "--runs", "1", "--allocators", "default,zkalloc,glibc-tuned", str(script),
                  cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "chatty line" not in done.stdout + done.stderr
    assert max(len(line) for line in done.stdout.splitlines()) <= 100, done.stdout
    assert "compare: run 1/3: default (1 of 1):" in done.stderr and "round" not in done.stderr
    assert "verdict:" in done.stdout and "machine:" in done.stdout
    shown = zk_cli("compare", "--runs", "1", "--allocators", "default", "--show-output", str(script), cwd=tmp_path)
    assert shown.returncode == 0 and shown.stdout.count("chatty line") == 300


WHO = """
import sys
import numpy as np
import zkalloc_np
with open(sys.argv[1], "a") as f:
    f.write(f"{zkalloc_np.is_installed()}\\n")
"""


def test_the_subprocess_switch_never_reaches_the_baseline(tmp_path):
    (tmp_path / "who.py").write_text(textwrap.dedent(WHO))
    log = tmp_path / "who.log"
    done = zk_cli("compare", "--runs", "1", "--allocators", "default,zkalloc", "who.py", str(log), cwd=tmp_path,
                  env={"ZKALLOC_SUBPROCESS": "1"})
    assert done.returncode == 0, done.stderr
    assert log.read_text().split() == ["False", "True"]   # default first, then zkalloc (under run)


# -- the supervisor every run goes through (zkalloc_np.cli.process.supervise) -----------------

def test_supervise_reports_how_the_child_ended_and_the_load():
    run = supervise([sys.executable, "-c", "import sys; sys.exit(3)"], timeout=30)
    assert run.ended.exit_code == 3 and not run.ended.ok and run.ended.failure == "exit 3"
    assert run.ended.resources.wall_s > 0 and run.ended.resources.peak_rss_bytes > 0
    assert run.load.cores >= 1 and run.load.others_cores >= 0
    hung = supervise([sys.executable, "-c", "import time; time.sleep(60)"], timeout=0.5)
    assert hung.ended.timed_out and hung.ended.signal == 9 and hung.ended.failure == "timed out"


def test_supervise_kills_the_child_when_its_start_hook_fails():
    """A `started` hook that raises leaves no child running, nor a zombie."""
    seen: list[subprocess.Popen] = []

    def fail(proc: subprocess.Popen) -> None:
        seen.append(proc)
        raise RuntimeError("no relay")

    with pytest.raises(RuntimeError, match="no relay"):
        supervise([sys.executable, "-c", "import time; time.sleep(60)"], timeout=30, started=fail)
    assert seen[0].returncode == -9
