"""Helpers of tools/sanitize.sh's Python modes.

  python tools/sanitizer_check.py build EXTENSION.so
      Check that every compile unit of the extension that is zkalloc's own (the core's
      cython/zk/*.c, the caller probe cython/zkpy/zk_py.c and the Cython-generated _core.c)
      was compiled with -fsanitize=address (gcc records each unit's flags in DW_AT_producer).
      Exit 1, naming the units, if not.

  python tools/sanitizer_check.py reports DIR
      List the sanitizer reports written under DIR (the runtimes' log_path files, <prefix>.<pid>),
      each with the test it came from (tests/conftest.py records that in DIR/tests.<pid>), the
      process, its headline and its first frames in zkalloc's code.  Exit 1 if there is any.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass

#: A report's first line: ASan's "ERROR: AddressSanitizer: ...", a runtime "CHECK failed", or UBSan's
#: "file:line:col: runtime error: ...".
HEADLINE = re.compile(r"^(?:==\d+==)?(?:ERROR: )?(?:Address|Leak|UndefinedBehavior)Sanitizer: (?!DEADLYSIGNAL).*"
                      r"|^.*runtime error: .*$", re.M)
FRAME = re.compile(r"^\s*#(\d+) 0x[0-9a-f]+ in (\S+) (\S+)", re.M)
OURS = re.compile(r"cython/zk(py)?/|_core\.(c|pyx)|zkalloc_np")


def compile_units(so: str) -> list[tuple[str, str]]:
    """(name, producer) of each compile unit with debug information in `so`."""
    out = subprocess.run(["readelf", "--debug-dump=info", so], capture_output=True, text=True, check=True).stdout
    units = []
    for cu in out.split("Compilation Unit @")[1:]:
        producer = re.search(r"DW_AT_producer\s*:\s*(?:\([^)]*\):\s*)?(.*)", cu)
        name = re.search(r"DW_AT_name\s*:\s*(?:\([^)]*\):\s*)?(.*)", cu)
        if producer and name:
            units.append((name.group(1).strip(), producer.group(1).strip()))
    return units


def check_build(so: str) -> int:
    """0 when zkalloc's compile units in `so`, _core.c among them, have -fsanitize=address."""
    ours = [(n, p) for n, p in compile_units(so) if n.endswith("_core.c") or OURS.search(n) or n.startswith("zk_")]
    plain = [n for n, p in ours if "-fsanitize=address" not in p]
    has_cython = any(n.endswith("_core.c") for n, _ in ours)
    print(f"{os.path.basename(so)}: {len(ours)} compile unit(s) of zkalloc's, "
          f"{len(ours) - len(plain)} with -fsanitize=address; the Cython-generated _core.c "
          f"{'is' if has_cython else 'is NOT'} among them")
    if plain or not has_cython:
        print("not sanitized: " + ", ".join(plain or ["_core.c (no debug information)"]), file=sys.stderr)
        return 1
    return 0


@dataclass
class Report:
    """One sanitizer report: where it was written, its headline, our frames."""

    test: str
    pid: str
    headline: str
    frames: list[str]


def attribution(directory: str) -> tuple[list[tuple[str, str, int, int]], dict[str, str]]:
    """What tests/conftest.py recorded: (test, file, from, to) for each report
    file that grew during a test, and the last test each pytest process
    started (a process that a report stopped records no growth)."""
    grew: list[tuple[str, str, int, int]] = []
    last: dict[str, str] = {}
    for name in os.listdir(directory):
        if not name.startswith("tests."):
            continue
        pid = name.split(".", 1)[1]
        with open(os.path.join(directory, name)) as f:
            for line in f:
                kind, test, *rest = line.rstrip("\n").split("\t")
                if kind == "start":
                    last[pid] = test
                elif kind == "grew":
                    grew.append((test, rest[0], int(rest[1]), int(rest[2])))
    return grew, last


def parse(directory: str) -> list[Report]:
    """Every report in the log files under `directory`, with its test."""
    grew, last = attribution(directory)

    def test_of(name: str, pid: str, offset: int) -> str:
        for test, file, start, end in grew:
            if file == name and start <= offset < end:
                return test
        return last.get(pid, "(outside a test)")

    reports = []
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if not os.path.isfile(path) or name.startswith("tests."):
            continue
        pid = name.rpartition(".")[2]
        with open(path, errors="replace") as f:
            text = f.read()
        starts = [m.start() for m in HEADLINE.finditer(text)]
        if not starts and text.strip():   # never drop a file the runtime wrote
            reports.append(Report(test_of(name, pid, 0), pid, text.strip().splitlines()[0][:200], []))
        for i, start in enumerate(starts):
            body = text[start:starts[i + 1] if i + 1 < len(starts) else len(text)]
            headline = HEADLINE.match(text, start)
            frames = [f"{m.group(2)} {m.group(3)}" for m in FRAME.finditer(body)]
            ours = [f for f in frames if OURS.search(f)] or frames
            reports.append(Report(test_of(name, pid, start), pid, headline.group(0).strip() if headline else "?",
                                  ours[:4]))
    return reports


def list_reports(directory: str) -> int:
    """Print the reports under `directory`; 1 when there is any."""
    reports = parse(directory) if os.path.isdir(directory) else []
    if not reports:
        print(f"sanitizer reports: none (in {directory})")
        return 0
    distinct: dict[str, list[Report]] = {}
    for r in reports:
        distinct.setdefault(re.sub(r"==\d+==|0x[0-9a-f]+|pc \S+|\bT\d+\b", "", r.headline) + " @ " +
                            (r.frames[0] if r.frames else ""), []).append(r)
    print(f"sanitizer reports: {len(reports)} in {directory}, {len(distinct)} distinct")
    for key, group in distinct.items():
        print(f"\n* {group[0].headline}")
        for frame in group[0].frames:
            print(f"    {frame}")
        tests = sorted({f"{r.test} (pid {r.pid})" for r in group})
        print(f"  from {len(tests)} test(s) (and process): " + "; ".join(tests[:12]) + (" ..." if len(tests) > 12 else ""))
    return 1


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("build", "reports"):
        print(__doc__, file=sys.stderr)
        return 2
    return check_build(argv[1]) if argv[0] == "build" else list_reports(argv[1])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
