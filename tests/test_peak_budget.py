"""What made the peak, and budgets that fail fast: phases record what was
live at their peak (sites with track=True, classes, what was not theirs),
phase(budget=) and the process's budget setting refuse a request that would
go over, with nothing mapped, cached or counted, and the process carries on."""
from __future__ import annotations

import os
import threading

import numpy as np
import pytest

import zkalloc_np as zk
from zkalloc_np import _core, _peak
from conftest import MiB, run_python

HERE = os.path.abspath(__file__)


def line_of(marker: str) -> str:
    """'this file:line' of the line holding `marker` (a site as reports name it)."""
    with open(HERE) as f:
        for number, line in enumerate(f, 1):
            if marker in line and "line_of(" not in line:
                return f"{HERE}:{number}"
    raise AssertionError(marker)


def region(nbytes: int) -> int:
    return _core.class_bytes(_core.class_of(nbytes))


def test_peak_names_the_bytes_live_at_the_peak_and_where_they_came_from(fresh):
    with zk.phase("peak", track=True) as ph:
        gone = np.ones(MiB // 8)                 # site: gone, freed before the peak
        del gone
        a = np.ones(2 * MiB // 8)                # site: a
        b = np.zeros(4 * MiB // 8)               # site: b
        c = np.empty(8 * MiB // 8); c[:] = 1     # site: c
        total = a.sum() + b.sum() + c.sum()
        del a, b, c
        small = np.ones(MiB // 8)                # site: after, below the peak
        del small
    peak = ph.stats.peak
    assert total == (2 + 8) * MiB // 8
    assert peak is not None and peak.bytes == peak.peak_bytes == 14 * MiB == ph.stats.peak_bytes
    sites = {s.site: (s.bytes, s.arrays) for s in peak.by_site}
    assert sites == {line_of("# site: a"): (2 * MiB, 1), line_of("# site: b"): (4 * MiB, 1),
                     line_of("# site: c"): (8 * MiB, 1)}
    assert [s.site for s in peak.by_site] == [line_of("# site: c"), line_of("# site: b"), line_of("# site: a")]
    assert peak.by_class == {region(8 * MiB): 8 * MiB, region(4 * MiB): 4 * MiB, region(2 * MiB): 2 * MiB}
    assert peak.outside_bytes == 0 and peak.unlisted_bytes == 0
    assert "8.0 MiB in    1 array(s) from " + os.path.relpath(line_of("# site: c")) in str(peak)


def test_without_track_the_peak_has_sizes_but_no_sites(fresh):
    with zk.phase() as ph:
        a = np.ones(4 * MiB // 8)
        del a
    peak = ph.stats.peak
    assert peak is not None and peak.bytes == 4 * MiB
    assert [(s.site, s.bytes) for s in peak.by_site] == [("(unknown)", 4 * MiB)]


def test_nested_phases_each_have_their_own_peak(fresh):
    with zk.phase("outer", track=True) as outer:
        kept = np.ones(MiB // 8)                  # site: outer first
        with zk.phase("inner", track=True) as inner:
            big = np.ones(16 * MiB // 8)          # site: inner big
            del big
        more = np.ones(4 * MiB // 8)              # site: outer more
        del kept, more
    ip, op = inner.stats.peak, outer.stats.peak
    assert ip is not None and op is not None
    assert [(s.site, s.bytes) for s in ip.by_site] == [(line_of("# site: inner big"), 16 * MiB)]
    assert ip.outside_bytes == MiB and ip.by_phase == {"outer": MiB}   # the outer's array, live meanwhile
    assert op.bytes == 5 * MiB and op.outside_bytes == 0
    assert {s.site: s.bytes for s in op.by_site} == {line_of("# site: outer first"): MiB,
                                                     line_of("# site: outer more"): 4 * MiB}


def test_snapshots_stay_within_a_sixteenth_of_the_true_peak(fresh):
    """Snapshots are taken only on 1/16 growth (their cost): many small
    arrays make a peak the last snapshot may miss by less than that."""
    with zk.phase() as ph:
        arrays = [np.ones(64 * 1024 // 8) for _ in range(300)]
        del arrays
    peak = ph.stats.peak
    assert peak is not None and ph.stats.peak_bytes == 300 * 64 * 1024
    assert peak.peak_bytes == ph.stats.peak_bytes
    assert 16 * peak.peak_bytes <= 17 * peak.bytes <= 17 * peak.peak_bytes


# Each makes one 4 MiB array in the phase, from inputs made before it.
MAKERS = {
    "empty": lambda x, h: np.empty(4 * MiB, np.uint8),
    "zeros": lambda x, h: np.zeros(4 * MiB, np.uint8),
    "ufunc": lambda x, h: np.add(x, 1),
    "concatenate": lambda x, h: np.concatenate([h, h]),
}


@pytest.mark.parametrize("how", sorted(MAKERS))
def test_a_budget_refuses_the_request_that_would_go_over(fresh, how):
    x, half = np.ones(4 * MiB, np.uint8), np.ones(2 * MiB, np.uint8)
    before = zk.stats()
    with pytest.raises(zk.PhaseBudgetError) as caught:
        with zk.phase("prove", budget="8M", track=True) as ph:
            kept = np.ones(6 * MiB, np.uint8)      # site: kept under budget
            MAKERS[how](x, half)                     # over the budget
    err = caught.value
    assert isinstance(err, MemoryError) and isinstance(err.__cause__, MemoryError)
    assert (err.phase, err.budget, err.request_bytes, err.live_bytes) == ("prove", 8 * MiB, 4 * MiB, 6 * MiB)
    message = str(err)
    assert "phase 'prove'" in message and "8.0 MiB" in message and "4.0 MiB" in message
    assert line_of("# site: kept under budget") in message
    assert ph.stats.budget_refusals == 1 and ph.stats.budget == 8 * MiB
    del kept
    after = zk.stats()
    assert after.bytes_in_use == before.bytes_in_use   # nothing leaked, nothing of the refusal counted
    assert after.budget_refusals == before.budget_refusals + 1
    with zk.phase("prove", budget="8M") as again:     # the next request within the budget succeeds
        ok = np.ones(7 * MiB, np.uint8)
    assert ok.sum() == 7 * MiB and again.stats.budget_refusals == 0


def test_a_refused_request_maps_nothing(fresh):
    with zk.installed():
        warm = np.ones(MiB)
        del warm
    mapped = zk.stats().bytes_mapped
    with pytest.raises(zk.PhaseBudgetError):
        with zk.phase(budget="1M"):
            np.ones(2 * MiB)
    assert zk.stats().bytes_mapped == mapped
    zk.check()


def test_a_budget_error_caught_inside_the_phase_is_not_raised_again(fresh):
    with zk.phase(budget="1M") as ph:
        with pytest.raises(MemoryError):
            np.ones(2 * MiB)
        fine = np.ones(MiB // 16)
    assert ph.stats.budget_refusals == 1 and fine.sum() == MiB // 16


def test_a_budget_refused_with_the_gil_released_fails_in_that_thread(fresh, tmp_path):
    """np.fromfile in text mode grows its array with realloc while the GIL is
    released: the growth over the budget fails there, in that thread."""
    path = tmp_path / "numbers.txt"
    path.write_text(" ".join(["1.5"] * 200_000))   # 1.6 MB of float64
    zk.configure(min_bytes=4096)
    outcome: list[BaseException | int] = []

    def work() -> None:
        try:
            with zk.phase("read", budget="256K"):
                np.fromfile(path, sep=" ")
            outcome.append(0)
        except BaseException as exc:   # noqa: BLE001 - reported to the main thread
            outcome.append(exc)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert len(outcome) == 1 and isinstance(outcome[0], zk.PhaseBudgetError), outcome
    assert outcome[0].phase == "read"
    zk.check()
    with zk.phase("read", budget="4M"):
        assert np.fromfile(path, sep=" ").size == 200_000


def test_budget_validation():
    with pytest.raises(ValueError, match="phase\\(budget\\)"):
        zk.phase(budget="lots")
    with pytest.raises(ValueError, match="phase\\(budget\\)"):
        zk.phase(budget=-1)
    with pytest.raises(ValueError, match="phase\\(budget\\)"):
        zk.phase(budget=zk._settings.OPTIONS["budget"].max + 1)


def test_a_phase_budget_of_0_is_none_as_for_the_setting(fresh):
    """budget=0 means "no budget" for the setting; phase(budget=0) too (it was refused)."""
    with zk.phase(budget=0) as ph:
        a = np.ones(4 * MiB)
    assert ph.stats.budget == 0 and ph.stats.budget_refusals == 0 and a.sum() == 4 * MiB
    assert zk.phase(budget=None).budget == 0
    with pytest.warns(zk.SettingsWarning, match=r"phase\(budget\): .* more than this machine's memory"):
        zk.phase(budget="100T")


def test_the_process_budget_from_the_environment():
    result = run_python("""
        import numpy as np, zkalloc_np as zk
        zk.install()
        a = np.ones(8 << 20, np.uint8)
        try:
            b = np.ones(16 << 20, np.uint8)
            print("allocated")
        except MemoryError:
            print("refused", zk.stats().budget_refusals)
        c = np.ones(4 << 20, np.uint8)
        print("then", int(c.sum()), zk.settings()["budget"])
        """, env={"ZKALLOC_BUDGET": "16M"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["refused", "1", "then", str(4 * MiB), str(16 * MiB)]


def test_a_bad_process_budget_warns_and_keeps_none():
    result = run_python("import zkalloc_np as zk; print(zk.settings()['budget'])", env={"ZKALLOC_BUDGET": "lots"})
    assert result.returncode == 0, result.stderr
    assert "SettingsWarning: ZKALLOC_BUDGET='lots'" in result.stderr and result.stdout.strip() == "0"


def test_fork_inside_a_tracked_phase():
    result = run_python("""
        import os, numpy as np, zkalloc_np as zk
        with zk.phase("parent", track=True, budget="64M") as ph:
            a = np.ones(4 << 20, np.uint8)
            pid = os.fork()
            if pid == 0:
                try:
                    b = np.ones(8 << 20, np.uint8)
                    peak = ph.stats.peak
                    try:
                        c = np.ones(64 << 20, np.uint8)
                        code = 5
                    except MemoryError:
                        code = 0 if peak.bytes == 12 << 20 else 6
                    zk.check()
                    os._exit(code)
                except BaseException:
                    os._exit(4)
            status = os.waitpid(pid, 0)[1]
        print(os.WEXITSTATUS(status), ph.stats.peak.bytes)
        """, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["0", str(4 * MiB)]


PEAK_SCRIPT = """
import json, sys, tracemalloc
import numpy as np
import zkalloc_np as zk

tracemalloc.start(30)

def column(n):
    return np.ones(n, np.uint8)                     # site: columns (inside column())

trace = np.ones(8 << 20, np.uint8)                  # site: trace
columns = [column(1 << 20) for _ in range(6)]
with zk.phase("commit"):
    tree = np.zeros(16 << 20, np.uint8)             # site: tree
    snap = tracemalloc.take_snapshot()               # the peak: everything above is alive
    del tree
del trace, columns
after = np.ones(1 << 20)                            # site: after the peak, smaller

# tracemalloc's view at the peak: numpy's data allocations by the first frame outside numpy
numpy_dir = np.__file__.rsplit("/", 1)[0]
sites = {}
for t in snap.filter_traces([tracemalloc.DomainFilter(True, np.lib.tracemalloc_domain)]).traces:
    frame = next(f for f in reversed(t.traceback) if not f.filename.startswith(numpy_dir))
    key = f"{frame.filename}:{frame.lineno}"
    sites[key] = sites.get(key, 0) + t.size
json.dump(sites, open(sys.argv[1], "w"))
"""


def test_run_peak_names_the_same_sites_as_tracemalloc_at_the_peak(tmp_path):
    import json
    import subprocess
    import sys
    script = tmp_path / "prover.py"
    script.write_text(PEAK_SCRIPT)
    ours, theirs = tmp_path / "run.json", tmp_path / "tracemalloc.json"
    done = subprocess.run([sys.executable, "-m", "zkalloc_np", "run", "--peak", "--json", str(ours), str(script),
                           str(theirs)], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "what made the peak (run --peak)" in done.stderr and "by phase: commit" in done.stderr
    peak = json.load(open(ours))["peak"]
    traced = json.load(open(theirs))
    top = {s["site"]: s["bytes"] for s in peak["by_site"][:3]}
    expected = sorted(traced.items(), key=lambda kv: kv[1], reverse=True)[:3]
    assert len(expected) == 3 and top == dict(expected)   # same sites, same bytes (exact class sizes)
    lines = script.read_text().splitlines()
    assert [lines[int(s.rsplit(":", 1)[1]) - 1].split("# site: ")[1] for s in top] == [
        "tree", "trace", "columns (inside column())"]
    assert peak["by_phase"] == {"commit": 16 * MiB, "": 14 * MiB}
    assert peak["bytes"] >= 30 * MiB


# ---- requested bytes, and who asked: numpy's arrays or Python's bytes objects ----

BYTES_AT_THE_PEAK = """\
import numpy as np
arrays = [np.ones(5 << 20, np.uint8) for _ in range(2)]   # site: arrays
source = np.ones(32 << 20, np.uint64)                     # site: source
blob = source.tobytes()                                   # site: blob
del source, arrays, blob
after = np.ones(1 << 20, np.uint8)                        # after the peak, smaller
"""


def test_run_peak_reports_a_tobytes_in_requested_bytes_as_a_bytes_object(tmp_path):
    """run --peak (process tracking, no phase): a 256 MiB tobytes() is 256 MiB
    in one bytes object, not its 288 MiB region in one 'array'."""
    import json
    import subprocess
    import sys
    script = tmp_path / "prog.py"
    script.write_text(BYTES_AT_THE_PEAK)
    out = tmp_path / "run.json"
    done = subprocess.run([sys.executable, "-m", "zkalloc_np", "run", "--peak", "--json", str(out), str(script)],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = BYTES_AT_THE_PEAK.splitlines()
    site = {marker: f"prog.py:{next(n for n, l in enumerate(lines, 1) if f'# site: {marker}' in l)}"
            for marker in ("arrays", "source", "blob")}
    assert region(256 * MiB + 33) > 256 * MiB   # else this test would not tell the two apart
    assert f"256.0 MiB in    1 bytes object(s) from {site['blob']}" in done.stderr
    assert f"256.0 MiB in    1 array(s) from {site['source']}" in done.stderr
    assert f"10.0 MiB in    2 array(s) from {site['arrays']}" in done.stderr
    peak = json.load(open(out))["peak"]
    rows = {row["site"].rsplit("/", 1)[-1]: row for row in peak["by_site"]}
    blob = rows[site["blob"]]
    assert (blob["bytes_objects"], blob["arrays"], blob["other"]) == (1, 0, 0)
    assert 256 * MiB < blob["bytes"] < 256 * MiB + 4096   # the request: the data and the object's header
    assert rows[site["source"]]["bytes"] == 256 * MiB and rows[site["arrays"]]["bytes"] == 10 * MiB
    assert rows[site["arrays"]]["arrays"] == 2 and rows[site["arrays"]]["bytes_objects"] == 0
    assert peak["bytes"] == sum(row["bytes"] for row in peak["by_site"])   # requested, all of it
    assert peak["in_use_bytes"] >= region(256 * MiB + 33) + 256 * MiB + 2 * region(5 * MiB)   # regions


def test_a_tracked_phase_names_bytes_objects_and_arrays_in_requested_bytes(fresh):
    zk.install()
    with zk.phase("mixed", track=True) as ph:
        blob = bytes(5 * MiB)                    # site: a bytes object
        grown = bytearray(3 * MiB)               # site: a bytearray, grown
        grown.extend(bytes(3 * MiB))
        a = np.ones(5 * MiB, np.uint8)           # site: an array
    peak = ph.stats.peak
    assert peak is not None
    rows = {s.site: s for s in peak.by_site}
    b = rows[line_of("# site: a bytes object")]
    assert (b.arrays, b.bytes_objects, b.other) == (0, 1, 0) and 5 * MiB < b.bytes < 5 * MiB + 4096
    assert rows[line_of("# site: an array")] == zk.SiteBytes(line_of("# site: an array"), 5 * MiB, 1)
    text = str(peak)
    assert f"in    1 bytes object(s) from {os.path.relpath(line_of('# site: a bytes object'))}" in text
    assert f"5.0 MiB in    1 array(s) from {os.path.relpath(line_of('# site: an array'))}" in text
    del blob, grown, a


def test_run_peak_keeps_a_resized_bytearrays_requested_bytes(fresh):
    """A realloc keeps the block's requester and records its new size."""
    zk.install()
    _core.track_process(True)
    try:
        grown = bytearray(3 * MiB)               # site: grown in place or moved
        grown.extend(bytes(6 * MiB))
        rows = {s.site: s for s in _peak.report(_core.process_peak(), None, 0).by_site}
    finally:
        _core.track_process(False)
    row = rows[line_of("# site: grown in place or moved")]
    assert row.bytes_objects == 1 and row.arrays == 0
    assert 9 * MiB < row.bytes <= 9 * MiB + 9 * MiB // 8 + 1   # the grown request (CPython adds at most 1/8)
    del grown


def test_a_region_allocated_before_tracking_counts_at_its_class_as_a_block(fresh):
    zk.install()
    before = np.ones(5 * MiB, np.uint8)          # untracked: no requester, no site
    _core.track_process(True)
    try:
        after = np.ones(6 * MiB, np.uint8)       # site: tracked
        rep = _peak.report(_core.process_peak(), None, 0)
    finally:
        _core.track_process(False)
    rows = {s.site: s for s in rep.by_site}
    assert rows["(unknown)"].other == 1 and rows["(unknown)"].bytes == region(5 * MiB)
    assert rows[line_of("# site: tracked")].arrays == 1 and rows[line_of("# site: tracked")].bytes == 6 * MiB
    assert "block(s) from (unknown)" in str(rep)
    del before, after
