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

from zkalloc_np import _compare, _peers
from zkalloc_np._compare import FASTER, SAME, SLOWER, TOO_FEW, Program, RunRecord, summarize, verdict

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


def zk_cli(*args: str, cwd, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZKALLOC_")}
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
                  "--discard-output", EXAMPLE, "--size", "2^14", "--rounds", "1", "--single", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    data = json.loads(out.read_text())
    assert data["command"] == [EXAMPLE, "--size", "2^14", "--rounds", "1", "--single"]
    assert set(data["allocators"]) | set(data["skipped"]) == set(wanted)
    assert {"cpu", "cores", "kernel", "numpy"} <= set(data["machine"])
    for name in data["allocators"]:
        [record] = [r for r in data["records"] if r["allocator"] == name]
        assert record["ok"] and record["exit_code"] == 0
        assert record["wall_s"] > 0 and record["user_s"] >= 0 and record["system_s"] >= 0
        assert record["minor_faults"] > 0 and record["major_faults"] >= 0
        assert record["peak_rss_bytes"] > 10 << 20
        summary = data["summary"][name]
        assert summary["runs_ok"] == 1 and summary["wall_s"]["median"] == record["wall_s"]
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
                  str(program), str(log), "7", "--flag", "-m", "x", cwd=tmp_path)
    assert done.returncode == 7
    assert log.read_text().splitlines() == [repr([str(log), "7", "--flag", "-m", "x"])] * 4
    assert done.stdout.count("program output line") == 4    # the program's own output is shown
    data = json.loads(out.read_text())
    assert [r["exit_code"] for r in data["records"]] == [7, 7, 7, 7]
    assert not any(r["ok"] for r in data["records"])
    for name in ("default", "zkalloc"):
        summary = data["summary"][name]
        assert summary["runs_failed"] == 2 and summary["wall_s"] is None    # failed runs are not timed
        assert summary["verdict"] == "failed" and summary["failures"] == ["exit 7", "exit 7"]
    assert "2 failed run(s), not timed: exit 7, exit 7" in done.stdout


def test_a_module_runs_like_python_dash_m(program, tmp_path):
    (tmp_path / "progmod.py").write_text(program.read_text())
    log = tmp_path / "argv.log"
    done = zk_cli("compare", "--runs", "1", "--allocators", "zkalloc", "--discard-output",
                  "-m", "progmod", str(log), "0", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(log.read_text().splitlines()) == 2     # default (always the baseline) and zkalloc
    assert "program output line" not in done.stdout


def test_failing_and_hanging_programs_are_reported_as_failed(program, tmp_path):
    out = tmp_path / "c.json"
    done = zk_cli("compare", "--runs", "1", "--allocators", "default", "--json", str(out),
                  str(program), str(tmp_path / "log"), "0", "--raise", cwd=tmp_path)
    assert done.returncode == 1
    assert "RuntimeError: the program failed" in done.stderr
    [record] = json.loads(out.read_text())["records"]
    assert not record["ok"] and record["exit_code"] == 1
    assert "failed run(s), not timed: exit 1" in done.stdout

    done = zk_cli("compare", "--runs", "1", "--allocators", "default", "--timeout", "2", "--json", str(out),
                  str(program), str(tmp_path / "log"), "0", "--sleep", cwd=tmp_path)
    assert done.returncode == 1
    [record] = json.loads(out.read_text())["records"]
    assert record["timed_out"] and not record["ok"] and record["signal"] == 9
    assert "timed out" in done.stdout


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
                              discard_output=True)
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
    assert verdict(base, other) == expected


def test_verdict_threshold_is_a_parameter():
    assert verdict([2.0], [1.0], min_runs=1) == FASTER


def _record(allocator: str, wall: float, ok: bool = True, code: int = 0) -> RunRecord:
    return RunRecord(allocator=allocator, round=0, ok=ok, exit_code=code, signal=None, timed_out=False,
                     wall_s=wall, user_s=wall / 2, system_s=0.1, minor_faults=1000, major_faults=0,
                     peak_rss_bytes=100 << 20,
                     zkalloc={"hits": 9, "misses": 1, "hit_rate": 0.9, "bytes_served_from_cache": 90,
                              "bytes_mapped_by_misses": 10} if allocator == "zkalloc" else None)


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
