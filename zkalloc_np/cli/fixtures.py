"""A pytest fixture for zkalloc.compare, for pytest-benchmark users and others.

Enable it with ``-p zkalloc_np.cli.fixtures`` or, in a conftest.py,
``pytest_plugins = ["zkalloc_np.cli.fixtures"]`` (it is not registered by
itself).  Then::

    def test_round(zkalloc_compare, benchmark):
        result = zkalloc_compare(prover_round, data, rounds=5)
        assert not result.slower
        benchmark(prover_round, data)

``zkalloc_compare(fn, *args, rounds=5, warmup=1, **kwargs)`` is
``zkalloc.compare``; when the test also uses pytest-benchmark's
``benchmark`` fixture, the result goes into its ``extra_info["zkalloc"]``
(speedup, verdict, reason, medians), so it is saved with the benchmark.
"""
from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import pytest

from .ab import ABResult, compare


@pytest.fixture
def zkalloc_compare(request: pytest.FixtureRequest) -> Callable[..., ABResult]:
    """zkalloc.compare, its result also in pytest-benchmark's extra_info."""
    bench = request.getfixturevalue("benchmark") if "benchmark" in request.fixturenames else None

    def run(fn: Callable[..., object], *args: Any, **kwargs: Any) -> ABResult:
        result = compare(fn, *args, **kwargs)
        if bench is not None:
            bench.extra_info["zkalloc"] = {
                "speedup": result.speedup, "verdict": result.verdict.word, "reason": result.verdict.reason,
                "default_median_s": statistics.median(result.default.wall_s),
                "zkalloc_median_s": statistics.median(result.zkalloc.wall_s), "rounds": result.rounds}
        return result

    return run
