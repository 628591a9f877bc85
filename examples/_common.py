"""Shared by the examples: size arguments and the default-vs-zkalloc timing loop.

Each example runs the same function under numpy's default allocator and
inside ``zkalloc.installed()``, alternating rounds in one process so both
see the same machine, and prints median seconds per round side by side.
Only ratios from one such run mean anything on a shared machine.
"""
from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import zkalloc_np as zkalloc


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


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def size_label(n: int) -> str:
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
    no comparison (zkalloc_s is nan)."""
    if single:
        fn()
        return Row(label, statistics.median(_timed(fn)[0] for _ in range(rounds)), float("nan"))
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
    if single:
        print(f"{what:>10}  {'seconds':>10}")
        for row in rows:
            print(f"{row.label:>10}  {row.default_s:>9.4f}s")
        return
    print(f"{what:>10}  {'numpy default':>14}  {'zkalloc':>10}  {'default/zkalloc':>15}")
    for row in rows:
        print(f"{row.label:>10}  {row.default_s:>13.4f}s  {row.zkalloc_s:>9.4f}s  {row.speedup:>14.2f}x")


def add_common_arguments(parser: argparse.ArgumentParser, default_sizes: Sequence[str]) -> None:
    parser.add_argument("--size", type=parse_size, nargs="+", default=[parse_size(s) for s in default_sizes],
                        help=f"problem sizes, powers of two like 2^20 (default {' '.join(default_sizes)})")
    parser.add_argument("--rounds", type=positive_int, default=3, help="timed rounds per allocator (default 3)")


def add_single_argument(parser: argparse.ArgumentParser) -> None:
    """--single: no comparison inside the process, for ``python -m zkalloc_np compare``."""
    parser.add_argument("--single", action="store_true",
                        help="time the rounds under the allocator in effect, without the in-process comparison "
                             "(for: python -m zkalloc_np compare examples/ntt_prover.py --single)")
