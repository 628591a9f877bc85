"""``%load_ext zkalloc_np``: the ``%zkcompare`` magic, zkalloc.compare in IPython.

    %zkcompare [-r ROUNDS] [-w WARMUP] expression
    %%zkcompare [-r ROUNDS] [-w WARMUP]
    ...cell...

The expression (or the cell) runs in the user's namespace, `ROUNDS` times
with numpy's default and with zkalloc, alternating; the result (an
``ABResult``: spreads, speedup, verdict and its reason) is returned, so it
shows as the cell's output and can be kept (``r = %zkcompare f(x)``).
"""
from __future__ import annotations

import argparse
import shlex
from typing import Any

from .ab import ABResult, compare


def _options(line: str) -> tuple[argparse.Namespace, str]:
    parser = argparse.ArgumentParser(prog="%zkcompare", add_help=False, exit_on_error=False)
    parser.add_argument("-r", "--rounds", type=int, default=5)
    parser.add_argument("-w", "--warmup", type=int, default=1)
    words = shlex.split(line, posix=True) if line.strip().startswith("-") else []
    known, rest = parser.parse_known_args(words)
    if words:   # what follows the options is the expression, as written
        consumed = len(words) - len(rest)
        code = line.strip().split(None, consumed)[consumed] if rest else ""
    else:
        code = line
    return known, code.strip()


def zkcompare(ipython: Any, line: str, cell: str | None = None) -> ABResult:
    """The magic: compare the statement or cell with and without the cache."""
    options, code = _options(line)
    body = cell if cell is not None else code
    if not body.strip():
        raise ValueError("%zkcompare: give an expression (%zkcompare f(x)) or a cell (%%zkcompare)")
    compiled = compile(body, "<zkcompare>", "exec")
    namespace = ipython.user_ns

    def run() -> None:
        exec(compiled, namespace)

    name = (body.strip().splitlines() or ["cell"])[0][:40]
    return compare(run, rounds=options.rounds, warmup=options.warmup, name=name)


def register(ipython: Any) -> None:
    """Register %zkcompare / %%zkcompare on an IPython shell."""
    def magic(line: str, cell: str | None = None) -> ABResult:
        return zkcompare(ipython, line, cell)

    ipython.register_magic_function(magic, magic_kind="line_cell", magic_name="zkcompare")
