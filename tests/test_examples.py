"""The examples run at small sizes and check their own results."""
from __future__ import annotations

import os
import re
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
