"""The examples run at small sizes and check their own results."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZKALLOC_")}
    return subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=EXAMPLES.parent)


def test_ntt_prover():
    done = run_example("ntt_prover.py", "--size", "2^10", "2^12", "--rounds", "1")
    assert done.returncode == 0, done.stderr
    assert "2^10: product equals the direct convolution" in done.stdout
    assert "2^12: product equals the direct convolution" in done.stdout
    assert re.search(r"2\^12 +[\d.]+s +[\d.]+s +[\d.]+x", done.stdout)
    assert "hit rate" in done.stdout


def test_ntt_prover_parts():
    sys.path.insert(0, str(EXAMPLES))
    try:
        import ntt_prover
    finally:
        sys.path.remove(str(EXAMPLES))
    import numpy as np
    prover = ntt_prover.ProverRound(1 << 9)
    prover.check_against_direct_convolution()
    roots = prover()
    assert len(roots) == 1 + 3 and all(len(r) == 32 for r in roots)   # 512 -> 256 -> 128 -> 64
    # folding a constant gives the same constant (f(x) = f(-x), odd part 0)
    const = np.full(256, 5, dtype=np.uint64)
    assert np.all(ntt_prover.fri_fold(const, np.ones(128, np.uint64), 9) == 5)
    with pytest.raises(ValueError):
        ntt_prover.ProverRound(128)


def test_msm_buckets():
    done = run_example("msm_buckets.py", "--size", "2^12", "2^15", "--rounds", "1", "--window", "8")
    assert done.returncode == 0, done.stderr
    assert "2^12: bucket sum equals the direct sum" in done.stdout
    assert "2^15: bucket sum equals the direct sum" in done.stdout
    assert "hit rate" in done.stdout


def test_examples_reject_bad_sizes():
    done = run_example("msm_buckets.py", "--size", "1000")
    assert done.returncode == 2 and "power of two" in done.stderr
    done = run_example("msm_buckets.py", "--size", "2^10", "--window", "7")
    assert done.returncode == 2 and "--window" in done.stderr


def test_galois_fft():
    pytest.importorskip("galois")
    done = run_example("galois_fft.py", "--size", "2^14", "--rounds", "1", "--goldilocks-size", "2^6")
    assert done.returncode == 0, done.stderr
    assert "JIT warm-up" in done.stdout and "not timed" in done.stdout
    assert re.search(r"BB 2\^14 +[\d.]+s", done.stdout) and re.search(r"GL 2\^6 +[\d.]+s", done.stdout)
    assert "python-calculate" in done.stdout
    share = re.search(r"2\^14: cache served (\d+) B/point .* allocated (\d+) B/point outside it: "
                      r"the cache sees (\d+)%", done.stdout)
    assert share, done.stdout
    served, outside, percent = map(int, share.groups())
    assert served >= 12 and outside >= 8 and 0 < percent < 100


def test_dask_ntt():
    pytest.importorskip("distributed")
    done = run_example("dask_ntt.py", "--size", "2^14", "--batches", "2", "--per-batch", "1",
                       "--rounds", "1", "--workers", "2")
    assert done.returncode == 0, done.stderr
    assert "checked: every round's products are equal" in done.stdout
    hits = [int(h) for h in re.findall(r"worker \S+: (\d+) hits", done.stdout)]
    assert len(hits) == 2 and sum(hits) > 0


# -- every example under `python -m zkalloc_np run` and `compare`, at a small size ----------------

#: Each example at a small size; `needs` is the optional package it imports.
SMALL = {
    "ntt_prover.py": ((), ("--size", "2^10", "--rounds", "1")),
    "msm_buckets.py": ((), ("--size", "2^10", "--rounds", "1", "--window", "8")),
    "galois_fft.py": (("galois",), ("--size", "2^10", "--rounds", "1", "--goldilocks-size")),
    "dask_ntt.py": (("distributed",), ("--size", "2^14", "--batches", "1", "--per-batch", "1", "--rounds", "1",
                                       "--workers", "1")),
    "phases.py": ((), ("--size", "2^10", "--columns", "1", "--rounds", "2")),
    "secret_witness.py": ((), ("--size", "2^10", "--lenient")),
}
#: The examples whose in-process comparison would time zkalloc against itself under install().
COMPARING = ["ntt_prover.py", "msm_buckets.py", "galois_fft.py", "phases.py"]


def test_every_example_is_listed_here():
    assert {p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")} == set(SMALL)


def zk_cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZKALLOC_")}
    return subprocess.run([sys.executable, "-m", "zkalloc_np", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=EXAMPLES.parent)


def _small(name: str) -> tuple[str, ...]:
    needs, args = SMALL[name]
    for module in needs:
        pytest.importorskip(module)
    return args


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_example_takes_the_same_options(name):
    done = run_example(name, "--help")
    assert done.returncode == 0, done.stderr
    for option in ("--size", "--rounds", "--single"):
        assert option in done.stdout, f"{name} has no {option}"


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_example_runs_under_run_with_single(name):
    done = zk_cli("run", f"examples/{name}", *_small(name), "--single")
    assert done.returncode == 0, done.stderr
    assert "zkalloc run:" in done.stderr
    if name in ("ntt_prover.py", "msm_buckets.py", "galois_fft.py"):
        # the one column says what it timed: zkalloc, installed process-wide by run
        assert "seconds, zkalloc (process-wide)" in done.stdout, done.stdout
        assert "numpy default" not in done.stdout and "default/zkalloc" not in done.stdout
    if name == "dask_ntt.py":
        assert "seconds, workers under zkalloc (ZkallocPlugin)" in done.stdout, done.stdout
        hits = [int(h) for h in re.findall(r"worker \S+: (\d+) hits", done.stdout)]
        assert hits and sum(hits) > 0
    # run's suggestion is a command that works: run it (one run each of two allocators, to be short)
    [suggested] = re.findall(r"measure it: python -m zkalloc_np (compare .*)$", done.stderr, re.M)
    words = shlex.split(suggested)
    assert words[1:] == [f"examples/{name}", *_small(name), "--single"]
    again = zk_cli("compare", "--runs", "1", "--allocators", "default,zkalloc", *words[1:])
    assert again.returncode == 0, again.stdout + again.stderr
    assert "failed run" not in again.stdout


@pytest.mark.parametrize("name", COMPARING)
def test_the_in_process_comparison_refuses_under_run_in_one_line(name):
    done = zk_cli("run", f"examples/{name}", *_small(name))
    assert done.returncode == 2, done.stdout + done.stderr
    [line] = [ln for ln in done.stderr.splitlines() if "installed process-wide" in ln]
    assert "--single" in line and "Traceback" not in done.stderr
    assert "measure it" not in done.stderr            # no suggestion after a failed run
    assert "numpy default" not in done.stdout         # no mislabelled table


def test_compare_without_single_reports_the_zkalloc_row_and_carries_on(tmp_path):
    out = tmp_path / "c.json"
    done = zk_cli("compare", "--runs", "2", "--allocators", "default,zkalloc", "--json", str(out),
                  "examples/msm_buckets.py", *_small("msm_buckets.py"))
    assert done.returncode == 2
    records = json.loads(out.read_text())["records"]
    assert [(r["allocator"], r["ok"]) for r in records] == [("default", True), ("zkalloc", False),
                                                            ("zkalloc", False), ("default", True)]
    assert "--single" in records[1]["stderr_tail"]
    assert re.search(r"zkalloc: 2 failed run\(s\), not timed: exit 2, exit 2; last line of stderr: .*--single",
                     " ".join(done.stdout.split())), done.stdout   # lines wrapped at 100 columns


def test_the_demo_refuses_under_run():
    done = zk_cli("run", "-m", "zkalloc_np", "demo", "--log-sizes", "10", "--rounds", "1")
    assert done.returncode == 2
    assert "installed process-wide" in done.stderr and "Traceback" not in done.stderr
    assert "speedup" not in done.stdout


def test_the_readmes_30_second_snippet_runs(tmp_path):
    """Issue 31.5: the README's "In 30 seconds" snippet is runnable as written."""
    readme = (EXAMPLES.parent / "README.md").read_text()
    section = readme[readme.index("## In 30 seconds"):]
    snippet = section[section.index("```python") + len("```python"):section.index("```", section.index("```python") + 9)]
    (tmp_path / "snippet.py").write_text(snippet)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZKALLOC_")}
    done = subprocess.run([sys.executable, "snippet.py"], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("prove_round: numpy default") and "True zkalloc:" in done.stdout
    assert "hit rate" in done.stdout


def test_phases_example_and_its_docs_say_what_it_prints():
    """Issue 31.5: docs/phases.md and --help said the round after release() has no misses; the example
    printed misses for it. What holds: that round maps no fresh memory (its misses are repurposed)."""
    done = run_example("phases.py", "--size", "2^16", "--rounds", "4")
    assert done.returncode == 0, done.stderr
    fresh = re.search(r"fresh memory mapped per round \(MiB\): \[([^\]]*)\]", done.stdout)
    misses = re.search(r"misses per round: \[([^\]]*)\], of which served from idle memory of other sizes: "
                       r"\[([^\]]*)\]", done.stdout)
    assert fresh and misses, done.stdout
    per_round = [float(v) for v in fresh.group(1).split(",")]
    assert per_round[-1] == 0.0 and per_round[0] > per_round[1]
    total, idle = ([int(v) for v in g.split(",")] for g in misses.groups())
    assert total[1:] == idle[1:]   # warm rounds: every miss served from idle memory
    helptext = run_example("phases.py", "--help").stdout
    docs = (EXAMPLES.parent / "docs" / "phases.md").read_text()
    for text in (helptext, docs):
        assert "has no misses" not in " ".join(text.split())
        assert "maps no fresh memory" in " ".join(text.split())
