"""In-process A/B (issue 31.4): zkalloc.compare, the demo's spread and verdict,
the IPython magic (in a real IPython shell, in a subprocess) and the pytest
fixture."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from numpy._core.multiarray import get_handler_name

import zkalloc_np as zk
from zkalloc_np._verdict import FASTER, SAME, SLOWER, TOO_FEW, WITHHELD

VERDICTS = {FASTER, SLOWER, SAME, TOO_FEW, WITHHELD}


def churn() -> float:
    a = np.ones(1 << 20)
    return float((a * 2).sum())


def test_compare_alternates_rounds_and_gives_a_verdict():
    seen = []

    def fn(x):
        seen.append(get_handler_name())
        return churn() + x

    result = zk.compare(fn, 1.0, rounds=3, warmup=1)
    assert result.rounds == 3 and len(result.default.wall_s) == 3 and len(result.zkalloc.cpu_s) == 3
    assert result.verdict.word in VERDICTS and result.verdict.reason
    # warm-up default, zkalloc; then rounds alternate, the order reversed every other round
    assert seen == ["default_allocator", "zkalloc",
                    "default_allocator", "zkalloc", "zkalloc", "default_allocator", "default_allocator", "zkalloc"]
    assert max(result.zkalloc.minor_faults) < min(result.default.minor_faults)   # 8 MiB arrays: resident
    assert result.speedup > 0 and "fn:" in repr(result) and len(repr(result)) < 200
    assert "why:" in str(result)


def test_compare_refuses_bad_rounds_and_a_process_wide_install():
    with pytest.raises(ValueError, match="rounds"):
        zk.compare(churn, rounds=0)
    zk.install()
    try:
        with pytest.raises(RuntimeError, match="installed process-wide"):
            zk.compare(churn, rounds=1)
    finally:
        zk.uninstall()


def test_the_demo_shows_a_spread_and_a_verdict(capsys):
    from zkalloc_np.cli.main import main
    assert main(["demo", "--log-sizes", "10", "--rounds", "3"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.strip().startswith("2^10"))
    assert row.count("(") == 2 and row.count("-") >= 2           # median (min-max) for each side
    assert any(word in row for word in ("faster", "slower", "no difference", "no verdict", "too few"))
    assert "2^10: " in out and "results checked" in out


IPY = """
%load_ext zkalloc_np
import numpy as np
def f(n):
    return (np.ones(n) * 2).sum()
r = %zkcompare -r 3 f(1 << 20)
print("LINE", r.verdict.word, "|", r.rounds, len(r.default.wall_s), "|", r.name)
cell = get_ipython().run_cell("%%zkcompare -r 2 -w 0\\na = np.ones(1 << 20)\\nb = a + 1\\n")
print("CELL", cell.success, cell.result.verdict.word, cell.result.rounds)
from IPython.lib.pretty import pretty
print("PRETTY", pretty(cell.result).splitlines()[0])
print("STATS", len(repr(zk_stats := __import__("zkalloc_np").stats())), pretty(zk_stats).splitlines()[0])
"""


def test_the_ipython_magic_in_a_real_shell(tmp_path):
    script = tmp_path / "magic.ipy"
    script.write_text(textwrap.dedent(IPY))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZKALLOC_")}
    done = subprocess.run([sys.executable, "-m", "IPython", "--quick", "--no-banner", "--colors=NoColor",
                           str(script)], capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = {line.split()[0]: line.split(None, 1)[1] for line in done.stdout.splitlines() if line[:4].isupper()}
    word, counts, name = (part.strip() for part in lines["LINE"].split("|"))
    assert word in VERDICTS and counts == "3 3" and name == "f(1 << 20)"   # named by the expression
    assert lines["CELL"].startswith("True ") and lines["CELL"].endswith(" 2")
    assert "numpy default" in lines["PRETTY"] and "zkalloc" in lines["PRETTY"]
    size, first = lines["STATS"].split(" ", 1)
    assert int(size) < 300 and first.startswith("zkalloc:")


FIXTURE_TEST = """
import numpy as np
pytest_plugins = ["zkalloc_np.cli.fixtures"]

def test_round(zkalloc_compare, benchmark):
    result = zkalloc_compare(lambda: (np.ones(1 << 20) * 2).sum(), rounds=2)
    assert result.rounds == 2
    benchmark.pedantic(lambda: None, rounds=1)
    assert benchmark.extra_info["zkalloc"]["verdict"] == result.verdict.word

def test_without_benchmark(zkalloc_compare):
    assert zkalloc_compare(lambda: np.ones(1 << 20).sum(), rounds=1).rounds == 1
"""


def test_the_pytest_fixture_fills_pytest_benchmarks_extra_info(tmp_path):
    pytest.importorskip("pytest_benchmark")
    (tmp_path / "test_fixture_use.py").write_text(textwrap.dedent(FIXTURE_TEST))
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZKALLOC_")}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 passed" in done.stdout


def test_stats_and_phase_stats_have_a_short_repr_and_show_their_report_in_ipython():
    """Issue 31.5: a bare zk.stats() in IPython was a 3 KB one-line dataclass dump."""
    from IPython.lib.pretty import pretty
    s = zk.stats()
    assert len(repr(s)) < 200 and repr(s).startswith("<Stats ")
    assert pretty(s) == str(s)
    with zk.phase("repr-check") as ph:
        np.ones(1 << 20)
    assert len(repr(ph.stats)) < 200 and "repr-check" in repr(ph.stats)
    assert pretty(ph.stats) == str(ph.stats)
