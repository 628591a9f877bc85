"""Every figure the README and the docs quote from the benchmark results matches
the results file it cites (bench/results/full.json).

- The marked tables (``<!-- results: FILE KIND -->``) are regenerated from
  their file by tools/results_tables.py and must equal what is committed.
- Every ratio in the README's prose (``3.01x``) is one of its table's.
- The figures in the prose of docs/benchmarks.md are derived here, one by
  one, from the records (CLAIMS), and must appear in the page as written.

When a results file is re-measured, ``python tools/results_tables.py``
rewrites the tables; the prose claims that fail name what to update.
"""
from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
try:
    import results_tables
    from bench import report
finally:
    sys.path.remove(str(ROOT / "tools"))

FULL = "bench/results/full.json"


def _text(name: str) -> str:
    return (ROOT / name).read_text()


def _flat(text: str) -> str:
    """Whitespace collapsed, so a figure may wrap across lines."""
    return re.sub(r"\s+", " ", text)


@pytest.mark.parametrize("name", results_tables.DOCUMENTS)
def test_every_marked_table_matches_its_results_file(name):
    if not (ROOT / name).exists():
        pytest.skip(f"no {name}")
    text = _text(name)
    for path, kind, committed in results_tables.tables(text):
        assert (ROOT / path).exists(), f"{name} cites {path}, which is not committed"
        expected = results_tables.KINDS[kind](results_tables.load(path))
        assert committed == expected, (f"{name}: the {kind} table no longer matches {path}; "
                                       "run python tools/results_tables.py")


def test_the_readme_has_its_measured_table_with_faults_and_rss():
    found = results_tables.tables(_text("README.md"))
    assert [(path, kind) for path, kind, _ in found] == [(FULL, "front"), ("bench/results/coverage.json", "coverage")]
    for _, _, table in found:
        header, first_row = table.splitlines()[0], table.splitlines()[2]
        assert ("faults" in header and "RSS" in header) or ("faults" in first_row and "MiB" in first_row)


def _prose(text: str) -> str:
    """`text` without fenced code and without its marked tables."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return results_tables.MARKER.sub("", text)


def test_every_ratio_in_the_readme_prose_is_one_of_its_table():
    text = _text("README.md")
    ratios = {r for _, _, table in results_tables.tables(text) for r in re.findall(r"\d+\.\d+x", table)}
    quoted = re.findall(r"\d+\.\d+x", _prose(text))
    assert quoted, "the README quotes no measured ratio"
    assert set(quoted) <= ratios, f"README ratios not in its results table: {set(quoted) - ratios}"


def test_the_readme_front_page_is_short_and_keeps_both_commands():
    text = _text("README.md")
    assert len(text.splitlines()) <= 125
    assert "pip install -e . && python -m zkalloc_np demo" in text
    assert 'pip install -e ".[test]" && python -m pytest' in text
    # the alias is introduced before it is used
    assert text.index("import zkalloc_np as zkalloc") < text.index("zkalloc.installed(")


# -- the prose of docs/benchmarks.md ----------------------------------------------------------

class Results:
    """The records of one results file, by (pattern, size label, allocator)."""

    def __init__(self, path: str) -> None:
        self.records = results_tables.load(path)

    def r(self, pattern: str, size: str, allocator: str) -> dict:
        return results_tables.cell(self.records, pattern, size)[allocator]

    def ms(self, pattern: str, size: str, allocator: str, key: str = "median_s") -> str:
        return report.ms(self.r(pattern, size, allocator)[key])

    def passes(self, pattern: str, size: str, allocator: str, key: str = "pass_cold_s") -> list[str]:
        return [report.ms(v) for v in self.r(pattern, size, allocator)[key]]

    def mib(self, pattern: str, size: str, allocator: str, key: str = "peak_rss_bytes") -> str:
        return str(int(self.r(pattern, size, allocator)[key]) >> 20)

    def faults(self, pattern: str, size: str, allocator: str, key: str = "cold_minflt") -> str:
        return f"{round(self.r(pattern, size, allocator)[key]):,}"

    def ratio(self, pattern: str, size: str, a: str, b: str, key: str = "median_s", digits: int = 2) -> str:
        """a's value of `key` over b's, as the docs write it: 0.90x."""
        return f"{self.r(pattern, size, a)[key] / self.r(pattern, size, b)[key]:.{digits}f}x"

    def speed(self, pattern: str, size: str, a: str, b: str) -> str:
        """a's speed relative to b's (b's time over a's): above 1 is faster."""
        return self.ratio(pattern, size, b, a)

    def gbs(self, pattern: str, size: str, allocator: str) -> str:
        return f"{self.r(pattern, size, allocator)['gb_per_s']:.1f}"




def _claims(x: Results) -> list[str]:
    sp, gr = ("stark_prove", "2^16"), ("grow", "512 MiB")
    return [
        # stark_prove
        f"**met**, {x.ms(*sp, 'zkalloc')} ms against tcmalloc's {x.ms(*sp, 'tcmalloc')}",
        f"Peak RSS **met**, {x.mib(*sp, 'zkalloc')} MiB, {x.ratio(*sp, 'zkalloc', 'default', 'peak_rss_bytes')} "
        f"numpy default's {x.mib(*sp, 'default')} (tcmalloc {x.mib(*sp, 'tcmalloc')}, tuned glibc "
        f"{x.mib(*sp, 'glibc-tuned')})",
        f"{x.faults(*sp, 'zkalloc')} in the cold round against tuned glibc's {x.faults(*sp, 'glibc-tuned')}, and "
        f"{x.faults(*sp, 'zkalloc', 'minflt_per_round')} per warm round",
        f"{x.ms(*sp, 'zkalloc', 'cold_s')} ms against tcmalloc's {x.ms(*sp, 'tcmalloc', 'cold_s')}",
        "zkalloc's passes at {}, {} and {} ms".format(*x.passes(*sp, "zkalloc")),
        "tcmalloc's at {}, {} and {}".format(*x.passes(*sp, "tcmalloc")),
        f"({x.faults(*sp, 'zkalloc')} faults against {x.faults(*sp, 'zkalloc-global')})",
        f"cold medians were {x.ms(*sp, 'zkalloc-global', 'cold_s')} and {x.ms(*sp, 'zkalloc-phase', 'cold_s')} ms",
        # grow
        f"cold **met** ({x.ms(*gr, 'zkalloc', 'cold_s')} ms, {x.ratio(*gr, 'zkalloc', 'glibc-tuned', 'cold_s')} "
        f"tuned glibc's, RSS {x.ratio(*gr, 'zkalloc', 'default', 'cold_rss_bytes')} the default's)",
        f"{x.ms(*gr, 'zkalloc')} ms per round against tcmalloc's {x.ms(*gr, 'tcmalloc')} "
        f"({x.ratio(*gr, 'zkalloc', 'tcmalloc')})",
        f"peak RSS {x.mib(*gr, 'zkalloc')} MiB, {x.ratio(*gr, 'zkalloc', 'default', 'peak_rss_bytes')} the "
        f"default's {x.mib(*gr, 'default')}",
        # idle
        f"RSS while idle {x.mib('idle', '3 s idle', 'zkalloc', 'idle_rss_bytes')} MiB against the default's "
        f"{x.mib('idle', '3 s idle', 'default', 'idle_rss_bytes')} "
        f"({x.ratio('idle', '3 s idle', 'zkalloc', 'default', 'idle_rss_bytes')})",
        # fft_rounds and fill
        f"met at 32 MiB ({x.speed('fft_rounds', '32 MiB', 'zkalloc', 'default')}) and 512 MiB "
        f"({x.speed('fill', '512 MiB', 'zkalloc', 'default')}) and **missed** at 128 MiB "
        f"({x.speed('fft_rounds', '128 MiB', 'zkalloc', 'default')})",
        # contention
        f"{x.gbs('contention', '1 thr', 'zkalloc')} GB/s at 1 thread and "
        f"{x.gbs('contention', '2 thr', 'zkalloc')} at 2",
        "mimalloc {} to {}.".format(*_range(x, "contention", ("1 thr", "2 thr"),
                                            ("default", "glibc-tuned", "jemalloc", "mimalloc"))),
        # ntt_prover
        f"({x.speed('ntt_prover', '2^18', 'zkalloc', 'tcmalloc')} tcmalloc, **missed**: "
        f"{x.ms('ntt_prover', '2^18', 'zkalloc')} against {x.ms('ntt_prover', '2^18', 'tcmalloc')} ms)",
        # msm
        f"{x.speed('msm_buckets', '6 MiB', 'zkalloc', 'glibc-tuned')} and "
        f"{x.speed('msm_compute', '6 MiB', 'zkalloc', 'glibc-tuned')} the best peer",
        f"{x.speed('msm_buckets', '6 MiB', 'zkalloc', 'default')} and "
        f"{x.speed('msm_compute', '6 MiB', 'zkalloc', 'default')} faster than the default",
        f"at c = 10 {x.speed('msm_windows', 'c=10', 'zkalloc', 'tcmalloc')} tcmalloc "
        f"({x.ms('msm_windows', 'c=10', 'zkalloc')} against {x.ms('msm_windows', 'c=10', 'tcmalloc')} ms)",
        f"at c = 14 {x.speed('msm_windows', 'c=14', 'zkalloc', 'glibc-tuned')} tuned glibc and "
        f"{x.speed('msm_windows', 'c=14', 'zkalloc', 'tcmalloc')} tcmalloc ({x.ms('msm_windows', 'c=14', 'zkalloc')} "
        f"against {x.ms('msm_windows', 'c=14', 'glibc-tuned')} and {x.ms('msm_windows', 'c=14', 'tcmalloc')} ms), "
        f"{x.speed('msm_windows', 'c=14', 'zkalloc', 'default')} faster than the default",
        "(passes of {}, {} and {} ms)".format(*x.passes("msm_windows", "c=16", "zkalloc", "pass_median_s")),
        # phase_burst
        f"**missed**: {x.ms('phase_burst', '6 MiB', 'zkalloc')} ms against tuned glibc's "
        f"{x.ms('phase_burst', '6 MiB', 'glibc-tuned')}, tcmalloc's {x.ms('phase_burst', '6 MiB', 'tcmalloc')} and "
        f"the ideal's {x.ms('phase_burst', '6 MiB', 'ideal')}",
        # small
        f"{x.speed('small', '800 B', 'zkalloc', 'default')} and {x.speed('small', '8 KiB', 'zkalloc', 'default')}, "
        f"{x.ms('small', '800 B', 'zkalloc')} against {x.ms('small', '800 B', 'default')} ms",
        # zkalloc-phase
        f"`msm_windows` c = 10 ({x.ratio('msm_windows', 'c=10', 'zkalloc-phase', 'zkalloc')}",
        f"c = 14 ({x.ratio('msm_windows', 'c=14', 'zkalloc-phase', 'zkalloc')}, within the",
    ]


def _range(x: Results, pattern: str, sizes: tuple[str, ...], names: tuple[str, ...]) -> tuple[str, str]:
    values = [x.r(pattern, s, n)["gb_per_s"] for s in sizes for n in names]
    return f"{min(values):.1f}", f"{max(values):.1f}"


@pytest.fixture(scope="module")
def full() -> Results:
    return Results(FULL)


def test_every_figure_of_the_benchmarks_prose_matches_the_results(full):
    page = _flat(_text("docs/benchmarks.md"))
    missing = [claim for claim in _claims(full) if _flat(claim) not in page]
    assert not missing, "docs/benchmarks.md no longer says what bench/results/full.json measured:\n" + \
        "\n".join(missing)


def test_the_benchmarks_bounds_hold(full):
    """The prose's 'within' statements, checked over every pattern they cover."""
    # fft_rounds and fill: zkalloc within 1.02x of the ideal's time everywhere
    for pattern, size, rows in report.groups(full.records):
        if pattern in ("fft_rounds", "fill"):
            assert rows["zkalloc"]["median_s"] / rows["ideal"]["median_s"] <= 1.025, (pattern, size)
    # zkalloc-phase: within 1.05x of installed()'s time on every pattern but msm_windows c = 10 and 14
    for pattern, size, rows in report.groups(full.records):
        label = report.size_label(pattern, size)
        if "zkalloc-phase" in rows and "zkalloc" in rows and (pattern, label) not in (
                ("msm_windows", "c=10"), ("msm_windows", "c=14")):
            assert rows["zkalloc-phase"]["median_s"] / rows["zkalloc"]["median_s"] < 1.055, (pattern, label)


def test_no_page_mentions_the_retired_background_worker():
    for name in ("README.md", "docs/benchmarks.md", "docs/getting-started.md", "docs/integrations.md",
                 "docs/supported.md"):
        text = _text(name)
        for word in ("zkalloc-bg", "zeroing ahead", "zeroes ahead", "faulting ahead", "ZKALLOC_BACKGROUND",
                     "worker_cpu"):
            assert word not in text, f"{name} mentions {word!r}"
        mentions = len(re.findall(r"background", text, re.I))
        assert mentions <= 1, f"{name} mentions the background worker {mentions} times"


# -- docs/coverage.md: what chose libc=keep ----------------------------------------------------

def test_the_libc_prose_of_the_coverage_page_matches_its_results():
    x = Results("bench/results/libc.json")
    groups = report.groups(x.records)
    keep_over_leave = [r["zkalloc-global"]["peak_rss_bytes"] / r["zkalloc-global-leave"]["peak_rss_bytes"]
                       for _, _, r in groups]
    over = [(p, s) for p, s, r in groups
            if r["zkalloc-global-leave"]["peak_rss_bytes"] / r["default"]["peak_rss_bytes"] > 1.10]
    claims = [f"within {min(keep_over_leave):.3f}–{max(keep_over_leave):.3f}x",
              *(f"{x.ratio(p, report.size_label(p, s), 'zkalloc-global', 'default', 'peak_rss_bytes')}"
                for p, s in over)]
    page = _flat(_text("docs/coverage.md"))
    missing = [c for c in claims if c not in page]
    assert not missing, f"docs/coverage.md no longer says what bench/results/libc.json measured: {missing}"
    paragraph = page[page.index("**Peak RSS, keep against leave"):]
    assert all(p in paragraph for p, _ in over), "a pattern over 1.10x the default's peak is not named"


# -- docs/benchmarks.md: the whole programs --------------------------------------------------

def test_the_whole_programs_prose_matches_its_results():
    from bench import wholeprog
    path = results_tables.WHOLEPROG_BEFORE   # the prose describes the first run; the table, the latest
    data = json.loads((ROOT / path).read_text())
    records = results_tables.load(path)
    rows = wholeprog.by_program(records)["numpy_core"]
    zk, base, tuned = rows["zkalloc-global"], rows["default"], rows["glibc-tuned"]
    loads = [v for r in records for v in r["pass_load_before"] + r["pass_load_after"]]
    claims = [
        f"went from {data['machine']['load_before'][0]:.1f} before the run up to {max(loads):.1f}",
        f"a median {statistics.median(v for r in records for v in r['pass_others_cores']):.1f} of the 2 cores",
        "28.5 s in the first, quieter pass, {:.1f} and {:.1f} s in the others".format(*sorted(base["pass_cpu_s"])[1:]),
        f"{zk['cpu_s']:.1f} s CPU against numpy default's {base['cpu_s']:.1f} ({zk['cpu_s'] / base['cpu_s']:.2f}x)",
        f"{zk['minflt'] / 1e6:.2f}M minor faults against tuned glibc's {tuned['minflt'] / 1e3:.0f}k",
        f"peak RSS of {int(zk['peak_rss_bytes']) >> 20} MiB against the default's "
        f"{int(base['peak_rss_bytes']) >> 20} ({zk['peak_rss_bytes'] / base['peak_rss_bytes']:.2f}x)",
    ]
    page = _flat(_text("docs/benchmarks.md"))
    missing = [c for c in claims if _flat(c) not in page]
    assert not missing, f"docs/benchmarks.md no longer says what {path} measured: {missing}"


def test_the_latest_whole_programs_prose_matches_its_results():
    from bench import wholeprog
    rows = wholeprog.by_program(results_tables.load("bench/results/wholeprog.json"))

    def peak(program: str, allocator: str) -> int:
        return int(rows[program][allocator]["peak_rss_bytes"]) >> 20

    def ratio(program: str) -> str:
        return f"{rows[program]['zkalloc-install']['peak_rss_bytes'] / rows[program]['default']['peak_rss_bytes']:.2f}x"

    claims = [
        f"{peak('scipy_fft', 'zkalloc-install')} MiB now against the default's {peak('scipy_fft', 'default')} "
        f"({ratio('scipy_fft')})",
        f"{rows['numpy_core']['zkalloc-install']['minflt'] / 1e3:.1f}k against at most",
        f"numpy's core tests {peak('numpy_core', 'zkalloc-install'):,} MiB against {peak('numpy_core', 'default'):,} "
        f"({ratio('numpy_core')},",
        f"numpy's default on numpy_core: {rows['numpy_core']['default']['cpu_s']:.1f} s here",
    ]
    page = _flat(_text("docs/benchmarks.md"))
    missing = [c for c in claims if _flat(c) not in page]
    assert not missing, f"docs/benchmarks.md no longer says what bench/results/wholeprog.json measured: {missing}"


# ---- numbers the prose takes from the code ----------------------------------

CORE = ROOT / "cython" / "zk"


def _define(file: str, name: str) -> int:
    """The value of `#define name <integer expression>` in a core file."""
    match = re.search(rf"^#define {name} (.+?)(?:\s*/\*.*)?$", (CORE / file).read_text(), re.M)
    assert match, f"{file} has no #define {name}"
    expression = re.sub(r"\((?:size_t|uint64_t)\)|(?<=\d)u\b", "", match.group(1))
    assert re.fullmatch(r"[\d\s()<+*-]+", expression), expression
    return int(eval(expression))


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift} {unit}"
    return f"{n} B"


def test_the_how_it_works_numbers_come_from_the_code():
    from zkalloc_np import _core
    page = _flat(_text("docs/how-it-works.md"))
    sizes = [_core.class_bytes(c) for c in range(_core.NCLASSES)]
    per_octave = sum(1 << 30 <= b < 1 << 31 for b in sizes)
    step = max(b / a for a, b in zip(sizes[per_octave:], sizes[per_octave + 1:]))   # past the page-step classes
    larger = _define("zk_cache.c", "LARGER_CLASSES")
    assert f"There are {per_octave} classes per power of two" in page
    assert f"rounding wastes at most {100 * (step - 1):g}%" in page
    assert f"run from {_size(sizes[0])} to {_size(sizes[-1])}" in page
    assert larger == 1 and f"class up (at most {step ** larger:g}x the bytes) whole" in page
    for comment in re.findall(r"at most ([\d.]+)x", (CORE / "zk_cache.c").read_text()):
        assert float(comment) == step ** larger, "zk_cache.c's comments"
    assert f"(of {_size(_define('zk_repurpose.c', 'PIECE_MIN_BYTES'))} and more, the largest first, " \
           f"at most {_define('zk_repurpose.c', 'MAX_PIECES')})" in page
    assert f"share {_size(_define('zk_heap.c', 'SHARED_SEGMENT_BYTES'))} segments" in page


def test_the_do_no_harm_policies_numbers_come_from_the_code():
    """The high-water margin, the refault threshold and the first-touch tries
    as the docs state them are the core's constants."""
    how, stats = _flat(_text("docs/how-it-works.md")), _flat(_text("docs/stats.md"))
    assert f"plus 1/{_define('zk_decay.c', 'RSS_MARGIN_SHARE')}" in stats
    assert f"`np.zeros` of {_size(_define('zk_zero.c', 'REFAULT_MIN_BYTES'))} and more" in how
    explore, most = _define("zk_thp.c", "EXPLORE"), _define("zk_thp.c", "MAX_EXPLORE")
    assert f"every {explore}th choice while it costs under twice as much, every {explore}·k²-th" in how
    assert f"(at most every {most:,}th)" in how


def test_the_how_it_works_layout_names_every_core_file():
    layout = _text("docs/how-it-works.md").partition("Layout:")[2]
    missing = [path.name for path in sorted(CORE.glob("*.c")) if f"`{path.name}`" not in layout]
    assert not missing, f"docs/how-it-works.md's layout does not name {missing}"
