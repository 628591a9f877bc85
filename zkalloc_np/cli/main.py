"""The command line: python -m zkalloc_np (or zkalloc-np) demo, info, run, compare."""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Sequence

DESCRIPTION = """\
zkalloc-np keeps numpy's large buffers resident in size classes, so prover
loops that allocate and free big arrays stop page-faulting.
"""

#: Each command's line in --help (listed once, by argparse).
COMMAND_HELP = {
    "demo": "numpy NTT prover loop, numpy's default allocator against zkalloc",
    "info": "numpy, huge pages, memlock limit, zkalloc's settings and the environment, with every problem found",
    "run": "run a script or module with zkalloc installed process-wide and report what the cache did",
    "compare": "run a script or module under numpy's default, zkalloc and the other allocators installed here, "
               "and say whether zkalloc helps",
}

EPILOG = """\
examples:
  python -m zkalloc_np demo --log-sizes 18,20
  python -m zkalloc_np run prover.py --rows 2^20
  python -m zkalloc_np compare --runs 5 prover.py --rows 2^20
  python -m zkalloc_np compare --allocators default,zkalloc,tcmalloc -m mypackage.prove

"python -m zkalloc_np COMMAND --help" describes each command.
"""

RUN_DESCRIPTION = """\
Run an unmodified program (a script, or a module as with python -m) with
zkalloc installed process-wide, and report at exit, on stderr, what the
cache did: hits, misses and bytes per size class, bytes served from
resident memory, requests left to numpy by size, page faults, CPU times and
peak RSS. Every Python process the program starts (multiprocessing workers
under fork, spawn or forkserver, subprocess Python children) gets zkalloc
too, and the report adds up what the cache did in all of them and says how
many processes that is. --timeline and --plot record and draw the memory
over time, by phase. The program's arguments follow the script or module;
its exit code is kept. To find out whether zkalloc makes the program
faster, use compare.
"""

COMPARE_DESCRIPTION = """\
Run an unmodified program in fresh processes, alternating allocators,
--runs times each, and report per allocator the median wall time, CPU time
(user+sys), minor faults and peak RSS with their min-max spread, zkalloc's
hit rate and bytes served, and a verdict against numpy's default. The
verdict looks at wall time, CPU time and page faults, and at how busy the
rest of the machine was during the runs (/proc/stat, load average): on an
idle machine wall time decides (faster or slower only when the ranges do
not overlap); on a loaded one CPU time decides, with a wider margin, or
the verdict is withheld, with the reason. Runs that exit non-zero, are
killed or time out are reported as failed and not timed.

The program's own output is not shown (the last line of its stderr is kept
for failures); --show-output shows it as it runs. Progress lines go to
stderr, the table (100 columns) to stdout. Its stdin is /dev/null, so every
run gets the same input.
"""


def positive_int(text: str) -> int:
    """A whole number > 0 (an argparse type; the examples use it too)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _log_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated log2 sizes like 20,22, got {text!r}") from None
    if not all(4 <= s <= 26 for s in sizes):
        raise argparse.ArgumentTypeError(f"log2 sizes must lie in [4, 26], got {text!r}")
    return sizes


def _allocator_list(text: str) -> list[str]:
    from .compare import ALLOCATORS
    names = [a.strip() for a in text.split(",") if a.strip()]
    bad = [a for a in names if a not in ALLOCATORS]
    if bad or not names:
        raise argparse.ArgumentTypeError(f"unknown allocator(s) {', '.join(bad) or repr(text)}; "
                                         f"choose from {','.join(ALLOCATORS)}")
    return list(dict.fromkeys(names))


def split_program_argv(argv: Sequence[str], value_options: Sequence[str]) -> tuple[list[str], list[str]]:
    """Split a command's own options (and the script, or ``-m module``) from
    the program's arguments, which may look like options themselves:
    ``run -m mod --flag``.  `value_options` are the options that take a value."""
    ours: list[str] = []
    words = list(argv)
    i = 0
    while i < len(words):
        word = words[i]
        if word == "-m" or word in value_options:
            ours += words[i:i + 2]
            i += 2
            if word == "-m":
                break
        elif word == "--":
            ours += words[i:i + 2]
            i += 2
            break
        elif word.startswith("-"):
            ours.append(word)   # a flag, --opt=value, or an unknown option argparse will name
            i += 1
        else:
            ours.append(word)   # the script
            i += 1
            break
    return ours, words[i:]


def _target(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[str, bool]:
    """The program (script path or module name), checked before anything runs."""
    if args.module is None:
        if args.script is None:
            parser.error("give a script (script.py [args...]) or a module (-m module [args...])")
        if not os.path.isfile(args.script):
            parser.error(f"can't open file {args.script!r}: no such file")
        return args.script, False
    if args.script is not None:
        parser.error("give either a script or -m module, not both")
    try:
        found = importlib.util.find_spec(args.module) is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        parser.error(f"no module named {args.module!r}")
    return args.module, True


def _check_json(parser: argparse.ArgumentParser, path: str | None, option: str = "--json") -> None:
    from .run import check_json_path
    if path is not None and (why := check_json_path(path, option)) is not None:
        parser.error(why)


def _cmd_demo(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from .. import is_installed
    from . import demo
    if is_installed():   # run -m zkalloc_np demo: both halves would be zkalloc
        parser.exit(2, f"{parser.prog}: {demo.PROCESS_WIDE}\n")
    demo.run(args.log_sizes, args.rounds)
    return 0


def _cmd_info(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from .info import info_lines
    print("\n".join(info_lines()))
    return 0


def _cmd_run(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    from . import run
    target, module = _target(parser, args)
    _check_json(parser, args.json)
    _check_json(parser, args.timeline, "--timeline")
    _check_json(parser, args.plot, "--plot")
    if args.plot is not None:
        from .timeline import check_plot_path
        if (why := check_plot_path(args.plot)) is not None:
            parser.error(why)
    return run.run(target, args.program_args, module=module, json_path=args.json, quiet=args.quiet,
                   supervise=True, peak=args.peak, timeline_path=args.timeline, plot_path=args.plot,
                   interval=args.interval)


def _cmd_compare(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    import json

    from . import compare
    target, module = _target(parser, args)
    _check_json(parser, args.json)
    names = args.allocators or list(compare.ALLOCATORS)
    # the verdict is against numpy's default, which runs first
    names = [compare.BASELINE, *(n for n in names if n != compare.BASELINE)]
    envs, skipped = compare.resolve(names)
    active = [n for n in names if n in envs]
    program = compare.Program(target, tuple(args.program_args), module)
    err = sys.stderr
    output = ("its own output follows" if args.show_output else
              "its own output is not shown (--show-output shows it)")
    missing = f" ({', '.join(skipped)} not installed: skipped)" if skipped else ""
    print(f"compare: {args.runs} run(s) each of {', '.join(active)}, alternating{missing}; {output}.",
          file=err, flush=True)
    result = compare.compare(program, names, args.runs, timeout=args.timeout, show_output=args.show_output,
                              progress=lambda line: print(f"compare: {line}", file=err, flush=True),
                              resolved=(envs, skipped))
    compare.render(result, sys.stdout)
    if args.json is not None:
        with open(args.json, "w") as f:
            json.dump(result.as_dict(), f, indent=1)
    return result.exit_code()


def _program_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", dest="module", metavar="MODULE", help="run a library module as a script, like python -m")
    p.add_argument("script", nargs="?", help="the program to run; the arguments after it are the program's")
    p.set_defaults(program_args=[])


def build_parser(prog: str = "python -m zkalloc_np") -> argparse.ArgumentParser:
    """The whole command line."""
    from .timeline import DEFAULT_INTERVAL
    from .. import __version__
    parser = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"zkalloc-np {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    demo = sub.add_parser("demo", help=COMMAND_HELP["demo"],
                          description="A numpy NTT prover loop, numpy's default allocator against zkalloc, "
                                      "alternating rounds in this process.")
    demo.add_argument("--log-sizes", type=_log_sizes, default=(20, 22), help="log2 of NTT sizes (default 20,22)")
    demo.add_argument("--rounds", type=positive_int, default=5, help="timed rounds per allocator (default 5)")
    demo.set_defaults(func=_cmd_demo, parser=demo)
    info = sub.add_parser("info", help=COMMAND_HELP["info"],
                          description="What numpy, the kernel and zkalloc's settings look like here, "
                                      "and every problem with the ZKALLOC_* environment.")
    info.set_defaults(func=_cmd_info, parser=info)
    run = sub.add_parser("run", help=COMMAND_HELP["run"],
                         description=RUN_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
                         usage=f"{prog} run [--json PATH] [--quiet] [--peak] [--timeline FILE.json]\n"
                               "       [--plot FILE.png] [--interval SECONDS] (script.py | -m MODULE) [args ...]")
    run.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH")
    run.add_argument("--quiet", action="store_true", help="no report on stderr (only --json)")
    run.add_argument("--timeline", metavar="FILE.json",
                     help="sample memory (in use, cached, RSS), faults, hits and misses every --interval seconds, "
                          "with the phases as spans, into FILE.json")
    run.add_argument("--plot", metavar="FILE.png",
                     help="draw the timeline (memory over time, phases as bands, faults beside it) to FILE "
                          "(.png, .svg, .pdf or .html; needs matplotlib)")
    run.add_argument("--interval", type=_positive_float, default=DEFAULT_INTERVAL, metavar="SECONDS",
                     help=f"the timeline's sampling interval (default {DEFAULT_INTERVAL})")
    run.add_argument("--peak", action="store_true",
                     help="also record where each array was allocated, and report what was live at the peak "
                          "(sites, sizes, phases)")
    _program_options(run)
    run.set_defaults(func=_cmd_run, parser=run)
    compare = sub.add_parser("compare", help=COMMAND_HELP["compare"],
                             description=COMPARE_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
                             usage=f"{prog} compare [options] (script.py | -m MODULE) [args ...]")
    from .compare import ALLOCATORS
    compare.add_argument("--runs", type=positive_int, default=3, help="runs per allocator (default 3)")
    compare.add_argument("--allocators", type=_allocator_list, metavar="A,B",
                         help=f"comma-separated subset of {','.join(ALLOCATORS)} (default: all; default is "
                              "always run, as the baseline; peers that are not installed are skipped)")
    compare.add_argument("--timeout", type=_positive_float, metavar="SECONDS",
                         help="kill a run (and its children) after this long; it counts as failed")
    compare.add_argument("--json", metavar="PATH", help="also write every run and the summary as JSON to PATH")
    compare.add_argument("--show-output", action="store_true",
                         help="show the program's stdout and stderr as it runs (by default they are not shown)")
    _program_options(compare)
    compare.set_defaults(func=_cmd_compare, parser=compare)
    return parser


#: Options of run/compare that take a value (the splitter must skip their values).
VALUE_OPTIONS = {"run": ("--json", "--timeline", "--plot", "--interval"), "compare": ("--json", "--runs", "--allocators", "--timeout")}


def _prog() -> str:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return "python -m zkalloc_np" if name in ("", "__main__.py", "-c") else name


def main(argv: Sequence[str] | None = None) -> int:
    """Parse the command line and run the command; its exit status."""
    parser = build_parser(_prog())
    words = sys.argv[1:] if argv is None else list(argv)
    program_args: list[str] = []
    if words[:1] and words[0] in VALUE_OPTIONS:
        ours, program_args = split_program_argv(words[1:], VALUE_OPTIONS[words[0]])
        words = [words[0], *ours]
    args = parser.parse_args(words)
    if args.command in VALUE_OPTIONS:
        args.program_args = program_args
    try:
        return int(args.func(args.parser, args))
    except BrokenPipeError:
        # Output piped into `head` and the like: stop quietly, as cat does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
