"""Command line: ``python -m zkalloc_np demo``, ``info`` and ``run``.

``python -m zkalloc_np run [--json PATH] script.py [args...]`` or
``run [--json PATH] -m module [args...]`` runs an unmodified program with
zkalloc installed process-wide and reports, at exit, on stderr, what the
cache did and what page faults cost (see zkalloc_np._run).
"""
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
    from ._info import info_lines
    print("\n".join(info_lines()))
    return 0


def _split_run_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """Split ``run``'s own options (and the script) from the program's
    arguments, which may look like options themselves: ``run -m mod --flag``."""
    ours: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        if word in ("--json", "-m"):
            ours += argv[i:i + 2]
            i += 2
            if word == "-m":
                break
        elif word.startswith("--json=") or word in ("-h", "--help"):
            ours.append(word)
            i += 1
        else:
            ours.append(word)   # the script
            i += 1
            break
    return ours, argv[i:]


def _cmd_run(args: argparse.Namespace) -> int:
    from . import _run
    if args.module is None:
        if args.script is None:
            args.parser.error("give a script (run script.py [args...]) or a module (run -m module [args...])")
        if not os.path.isfile(args.script):
            print(f"python -m zkalloc_np run: can't open file {args.script!r}: no such file", file=sys.stderr)
            return 2
    elif args.script is not None:
        args.parser.error("give either a script or -m module, not both")
    target = args.module if args.module is not None else args.script
    return _run.run(target, args.program_args, module=args.module is not None, json_path=args.json)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m zkalloc_np", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="numpy NTT prover loop: numpy default vs zkalloc")
    demo.add_argument("--log-sizes", type=_log_sizes, default=(20, 22), help="log2 of NTT sizes (default 20,22)")
    demo.add_argument("--rounds", type=_positive_int, default=3, help="timed rounds per allocator (default 3)")
    demo.set_defaults(func=_cmd_demo)
    info = sub.add_parser("info", help="numpy, THP, memlock and zkalloc settings")
    info.set_defaults(func=_cmd_info)
    run = sub.add_parser("run", help="run a script or module with zkalloc installed process-wide; report at exit",
                         usage="python -m zkalloc_np run [--json PATH] (script.py | -m module) [args ...]")
    run.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH")
    run.add_argument("-m", dest="module", metavar="module", help="run a library module as a script, like python -m")
    run.add_argument("script", nargs="?", help="the program to run; the arguments after it are the program's")
    run.set_defaults(func=_cmd_run, parser=run, program_args=[])
    argv = sys.argv[1:] if argv is None else list(argv)
    program_args: list[str] = []
    if argv[:1] == ["run"]:
        ours, program_args = _split_run_argv(argv[1:])
        argv = ["run", *ours]
    args = parser.parse_args(argv)
    if args.command == "run":
        args.program_args = program_args
    try:
        return args.func(args)
    except BrokenPipeError:
        # Output piped into `head` and the like: stop quietly, as cat does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
