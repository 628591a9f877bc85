"""Whole programs the benchmark runs as workloads (``python -m bench --programs``).

A program is what follows ``python`` on a command line; adding one is one
line in PROGRAMS.  Each runs in a fresh process per allocator and pass
(bench.wholeprog), from an empty temporary folder, its output discarded.
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")
#: numpy's core test subset of issue 29 (16,289 tests with -m "not slow").
NUMPY_CORE = ("test_multiarray", "test_ufunc", "test_shape_base", "test_numeric", "test_item_selection",
              "test_regression")


@dataclass(frozen=True)
class Program:
    """One whole program: its name, its command line after ``python``, the
    modules it needs, and how long one run may take before it is killed."""

    name: str
    argv: tuple[str, ...]
    needs: tuple[str, ...] = ()
    timeout_s: float = 900.0

    def unavailable(self) -> str | None:
        """Why it cannot run here (a module it needs is missing), or None."""
        missing = [m for m in self.needs if importlib.util.find_spec(m) is None]
        return f"needs {', '.join(missing)} (not installed)" if missing else None


def tests(name: str, *modules: str, needs: tuple[str, ...] = ()) -> Program:
    """pytest over importable test modules, ``-m "not slow"``, no cache written."""
    return Program(name, ("-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "not slow", "--pyargs", *modules),
                   needs=("pytest", *needs))


def example(script: str, *args: str, needs: tuple[str, ...] = ()) -> Program:
    """One of examples/, timed under the allocator in effect (``--single``)."""
    return Program("example_" + script.removesuffix(".py"), (os.path.join(EXAMPLES, script), *args, "--single"),
                   needs=needs)


PROGRAMS: dict[str, Program] = {p.name: p for p in (
    tests("numpy_core", *(f"numpy._core.tests.{m}" for m in NUMPY_CORE), needs=("hypothesis",)),
    tests("scipy_fft", "scipy.fft", needs=("scipy",)),
    example("ntt_prover.py", "--size", "2^20", "--rounds", "3"),
    example("msm_buckets.py", "--size", "2^20", "--rounds", "3"),
    example("phases.py", "--size", "2^18", "--rounds", "3"),
    example("galois_fft.py", "--size", "2^14", "--rounds", "3", needs=("galois",)),
    example("dask_ntt.py", "--size", "2^16", "--rounds", "2", needs=("distributed",)),
    example("secret_witness.py", "--size", "2^16"),
)}
