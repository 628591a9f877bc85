"""The phase and secret examples run and check their own results."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True,
                          timeout=120)


def test_phases_example_prints_phase_stats():
    out = run_example("phases.py", "--size", "2^12", "--columns", "2", "--rounds", "3")
    assert out.returncode == 0, out.stderr
    assert "results identical" in out.stdout
    assert "all 'commit' phases: 3 runs" in out.stdout


def test_secret_witness_example_reports_full_protection():
    out = run_example("secret_witness.py", "--size", "2^10", "--lenient")
    assert out.returncode == 0, out.stderr
    assert "guarded=True" in out.stdout and "dontdump=True" in out.stdout and "wipeonfork=True" in out.stdout
