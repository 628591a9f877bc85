"""The C core on its own: tests/c/test_core.c linked directly against
cython/zk/*.c, built with the system C compiler, run plain and under
AddressSanitizer + UndefinedBehaviorSanitizer (skipped where the compiler
cannot build sanitized programs).  tools/sanitize.sh runs the longer
variants and valgrind."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ROOT / "cython" / "zk"
SOURCE = ROOT / "tests" / "c" / "test_core.c"
CC = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]

pytestmark = pytest.mark.skipif(CC is None or not CORE.is_dir(), reason="needs a C compiler and the core sources")


def build(out: Path, extra: list[str]) -> subprocess.CompletedProcess:
    """Compile the C test with the core's own flags plus `extra`."""
    cmd = [CC, "-std=c11", "-O1", "-g", "-Wall", "-Wextra", "-pthread", f"-I{CORE}", *extra,
           str(SOURCE), *sorted(str(p) for p in CORE.glob("*.c")), "-o", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)


def run(binary: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    # A child stuck on a lock after fork would hang: the timeout fails the test.
    return subprocess.run([str(binary), *args], capture_output=True, text=True, timeout=240, check=False,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    binary = tmp_path_factory.mktemp("c") / "test_core"
    built = build(binary, ["-O2"])
    assert built.returncode == 0, built.stderr
    return binary


def test_core_c_plain(plain):
    result = run(plain, "600", "8")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 failure(s)" in result.stdout


def test_core_c_asan_ubsan(tmp_path):
    binary = tmp_path / "test_core_san"
    built = build(binary, SANITIZE)
    if built.returncode != 0:
        pytest.skip(f"the compiler cannot build with {' '.join(SANITIZE)}: {built.stderr[-300:]}")
    result = run(binary, "400", "8", env={"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0",
                                          "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
                                          "ZK_TEST_FORK_ROUNDS": "10"})
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 failure(s)" in result.stdout
    assert "runtime error" not in result.stderr and "AddressSanitizer" not in result.stderr


def test_core_c_rejects_bad_arguments(plain):
    assert run(plain, "10", "0").returncode == 2


def test_fork_while_the_cap_is_lowered(tmp_path):
    binary = tmp_path / "test_fork_cap"
    cmd = [CC, "-std=c11", "-O1", "-g", "-pthread", f"-I{CORE}", str(ROOT / "tests" / "c" / "test_fork_cap.c"),
           *sorted(str(p) for p in CORE.glob("*.c")), "-o", str(binary)]
    built = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert built.returncode == 0, built.stderr
    result = run(binary)
    assert result.returncode == 0, result.stdout + result.stderr


def test_core_never_touches_memory_it_does_not_own(tmp_path):
    """tests/c/stress_discard.c: np.zeros-style callocs that discard (forced),
    reallocs, gathers, cross-thread frees and maintenance, while other
    threads keep mappings and thread stacks of their own filled with a
    pattern.  Before the fix a hole left by a page move was re-mapped with
    MAP_FIXED over whatever another thread had mapped there: about one 2 s
    run in four failed here."""
    binary = tmp_path / "stress_discard"
    cmd = [CC, "-std=c11", "-O2", "-g", "-Wall", "-Wextra", "-pthread", f"-I{CORE}",
           str(ROOT / "tests" / "c" / "stress_discard.c"), *sorted(str(p) for p in CORE.glob("*.c")), "-o", str(binary)]
    built = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert built.returncode == 0, built.stderr
    for mode in ("lazy", "sample"):
        result = run(binary, "2", "4", mode, "0")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "0 failure(s)" in result.stdout


def build_stress_tsan(out: Path, extra: list[str]) -> subprocess.CompletedProcess:
    cmd = [CC, "-std=c11", "-O1", "-g", "-Wall", "-Wextra", "-pthread", f"-I{CORE}", *extra,
           str(ROOT / "tests" / "c" / "stress_tsan.c"), *sorted(str(p) for p in CORE.glob("*.c")), "-o", str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)


def test_race_stress_checks_never_corrupt(tmp_path):
    """tests/c/stress_tsan.c, plain build: short-lived threads through
    numpy's, phases' and the raw domain's routes, decay, tracking and every
    maintenance call at once.  zk_check() under that traffic answers ZK_OK
    or ZK_EBUSY, never ZK_ECORRUPT (before it walked totals that moved under
    it: 40-60 spurious errors in 20 s), and is exact at rest; no site is
    recorded without a site source."""
    binary = tmp_path / "stress_tsan"
    built = build_stress_tsan(binary, ["-O2"])
    assert built.returncode == 0, built.stderr
    assert "warning" not in built.stderr, built.stderr
    result = run(binary, "4", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 failure(s)" in result.stdout


def test_race_stress_under_tsan(tmp_path):
    """The same under ThreadSanitizer (tools/sanitize.sh c-tsan-stress runs
    it longer, in .ci/run): no data race reported."""
    binary = tmp_path / "stress_tsan_tsan"
    built = build_stress_tsan(binary, ["-fsanitize=thread", "-fno-omit-frame-pointer"])
    if built.returncode != 0:
        pytest.skip(f"the compiler cannot build with -fsanitize=thread: {built.stderr[-300:]}")
    result = run(binary, "6", "3", env={"TSAN_OPTIONS": "halt_on_error=1:exitcode=66"})
    assert result.returncode == 0, result.stdout + result.stderr[-4000:]
    assert "ThreadSanitizer" not in result.stderr
    assert "0 failure(s)" in result.stdout
