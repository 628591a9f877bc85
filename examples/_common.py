"""Shared by the examples: the common options and the default-vs-zkalloc timing loop.

Every example takes ``--size`` (powers of two such as ``2^20``, one or more),
``--rounds`` and ``--single``.  Without ``--single`` an example runs the same
function under numpy's default allocator and inside ``zkalloc.installed()``,
alternating rounds in one process so both see the same machine, and prints
median seconds per round side by side.  Only ratios from one such run mean
anything on a shared machine.

With ``--single`` it times its rounds under whatever allocator is in effect,
with no comparison: that is the form ``python -m zkalloc_np run`` and
``compare`` need, because they install zkalloc process-wide, and then the
"numpy default" half of an in-process comparison would be zkalloc too.  So
without ``--single`` an example refuses to run under a process-wide install
(`refuse_under_process_wide_install`), in one line.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import zkalloc_np as zkalloc
from zkalloc_np.cli.main import positive_int  # noqa: F401 (the examples take it from here)


def parse_size(text: str) -> int:
    """A power of two given as ``2^20``, ``1048576``, or ``1M``/``1K``."""
    value = text.strip().upper()
    try:
        if value.startswith("2^"):
            n = 1 << int(value[2:])
        elif value[-1:] in ("K", "M"):
            n = int(value[:-1]) << (10 if value[-1] == "K" else 20)
        else:
            n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size like 2^20, 1048576 or 1M, got {text!r}") from None
    if n < 2 or n & (n - 1):
        raise argparse.ArgumentTypeError(f"size must be a power of two >= 2, got {text!r} = {n}")
    return n


def size_label(n: int) -> str:
    """2^k for a power of two."""
    return f"2^{n.bit_length() - 1}"


@dataclass(frozen=True)
class Row:
    """Median seconds per round of one case, per allocator."""

    label: str
    default_s: float
    zkalloc_s: float

    @property
    def speedup(self) -> float:
        return self.default_s / self.zkalloc_s if self.zkalloc_s > 0 else float("nan")


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def compare(label: str, fn: Callable[[], Any], rounds: int,
            same: Callable[[Any, Any], bool] = lambda a, b: a == b, single: bool = False) -> Row:
    """One untimed warm-up per allocator, then `rounds` alternating timed
    rounds; every zkalloc result must equal the default one (`same`).
    single: time `rounds` rounds under whatever allocator is in effect, with
    no comparison (zkalloc_s is nan; default_s holds the times, whichever
    allocator that was: `allocator_in_effect()` names it).  Without single,
    zkalloc must not be installed process-wide (the baseline would be
    zkalloc): RuntimeError."""
    if single:
        fn()
        return Row(label, statistics.median(_timed(fn)[0] for _ in range(rounds)), float("nan"))
    if zkalloc.is_installed():
        raise RuntimeError(PROCESS_WIDE)
    expected = fn()
    with zkalloc.installed():
        got = fn()
    if not same(expected, got):
        raise AssertionError(f"{label}: zkalloc changed the result")
    default_times, zk_times = [], []
    for _ in range(rounds):
        default_times.append(_timed(fn)[0])
        with zkalloc.installed():
            seconds, got = _timed(fn)
        zk_times.append(seconds)
        if not same(expected, got):
            raise AssertionError(f"{label}: zkalloc changed the result")
    return Row(label, statistics.median(default_times), statistics.median(zk_times))


def print_table(rows: Sequence[Row], what: str = "size", single: bool = False) -> None:
    """Both allocators' median seconds and their ratio, or (single) the median
    seconds under the allocator in effect, with that allocator in the header."""
    if single:
        column = f"seconds, {allocator_in_effect()}"
        print(f"{what:>10}  {column}")
        for row in rows:
            print(f"{row.label:>10}  {row.default_s:>{len(column) - 1}.4f}s")
        return
    print(f"{what:>10}  {'numpy default':>14}  {'zkalloc':>10}  {'default/zkalloc':>15}")
    for row in rows:
        print(f"{row.label:>10}  {row.default_s:>13.4f}s  {row.zkalloc_s:>9.4f}s  {row.speedup:>14.2f}x")


def add_common_arguments(parser: argparse.ArgumentParser, default_sizes: Sequence[str],
                         single_help: str | None = None, default_rounds: int = 3,
                         rounds_help: str = "timed rounds per allocator") -> None:
    """--size, --rounds and --single, the same in every example.  `single_help`
    overrides --single's description for an example that compares differently."""
    parser.add_argument("--size", type=parse_size, nargs="+", default=[parse_size(s) for s in default_sizes],
                        help=f"problem sizes, powers of two like 2^20 (default {' '.join(default_sizes)})")
    parser.add_argument("--rounds", type=positive_int, default=default_rounds,
                        help=f"{rounds_help} (default {default_rounds})")
    parser.add_argument("--single", action="store_true",
                        help=single_help or "time the rounds under the allocator in effect only, without the "
                                            "in-process comparison (the form python -m zkalloc_np run and "
                                            "compare need)")


#: Why an in-process comparison cannot run under install() (one line, for the user).
PROCESS_WIDE = ("zkalloc is installed process-wide here (python -m zkalloc_np run or compare?), so the "
                "'numpy default' half of this example's comparison would run under zkalloc too; "
                "pass --single to time the rounds under the allocator in effect")


def refuse_under_process_wide_install(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Exit with status 2 and one line when the in-process comparison was asked
    for (no --single) while zkalloc is installed process-wide."""
    if not args.single and zkalloc.is_installed():
        parser.exit(2, f"{parser.prog}: {PROCESS_WIDE}\n")


def allocator_in_effect() -> str:
    """The allocator numpy's large arrays get here: the column label of --single
    (with the malloc underneath numpy's default, where compare changed it)."""
    if zkalloc.is_installed():
        return "zkalloc (process-wide)"
    preload = os.environ.get("LD_PRELOAD", "").replace(":", " ").split()
    if preload:
        return f"numpy default, LD_PRELOAD {os.path.basename(preload[0])}"
    if any(name.startswith("MALLOC_") and name.endswith("_") for name in os.environ):
        return "numpy default, glibc MALLOC_* tuning"
    return "numpy default"
