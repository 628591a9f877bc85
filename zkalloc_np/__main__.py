"""Command line: ``python -m zkalloc_np demo`` and ``python -m zkalloc_np info``."""
from __future__ import annotations

import argparse
import os
import sys


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _log_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated log2 sizes like 20,22, got {text!r}") from None
    if not all(4 <= s <= 26 for s in sizes):
        raise argparse.ArgumentTypeError(f"log2 sizes must lie in [4, 26], got {text!r}")
    return sizes


def _cmd_demo(args: argparse.Namespace) -> int:
    from . import demo
    demo.run(args.log_sizes, args.rounds)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    import numpy as np
    from numpy._core.multiarray import get_handler_name

    from . import __version__, _system, is_installed, setting_sources, settings
    from ._stats import fmt_bytes
    soft, hard = _system.memlock_limit()
    limit = lambda v: "unlimited" if v < 0 or v >= 2**62 else fmt_bytes(v)  # noqa: E731
    print(f"zkalloc-np {__version__}, numpy {np.__version__}")
    print(f"handler in effect here: {get_handler_name()}; process-wide install: {'on' if is_installed() else 'off'}")
    print(f"transparent huge pages: enabled={_system.thp_mode('enabled')}, defrag={_system.thp_mode('defrag')}")
    print(f"memlock limit: soft {limit(soft)}, hard {limit(hard)}")
    sources = setting_sources()
    for name, value in settings().items():
        shown = str(value) if name == "hugepages" else f"{value} ({fmt_bytes(value)})"
        print(f"  {name} = {shown}  [{sources[name]}]")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zkalloc_np", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="numpy NTT prover loop: numpy default vs zkalloc")
    demo.add_argument("--log-sizes", type=_log_sizes, default=(20, 22), help="log2 of NTT sizes (default 20,22)")
    demo.add_argument("--rounds", type=_positive_int, default=3, help="timed rounds per allocator (default 3)")
    demo.set_defaults(func=_cmd_demo)
    info = sub.add_parser("info", help="numpy, THP, memlock and zkalloc settings")
    info.set_defaults(func=_cmd_info)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:
        # Output piped into `head` and the like: stop quietly, as cat does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
