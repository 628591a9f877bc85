"""The one noise rule (zkalloc_np._verdict), shared by compare and the benchmarks."""
from __future__ import annotations

import pytest

from zkalloc_np.cli import compare as _compare
from zkalloc_np.cli.process import Resources
from zkalloc_np._verdict import (FASTER, MET, MISSED, NOISE, SAME, SLOWER, TOO_FEW, Samples, judge, scaled,
                                 separated, verdict, within)


def test_faster_and_slower_only_when_the_ranges_do_not_overlap():
    base = Samples(wall_s=[1.0, 1.1, 1.2], cpu_s=[2.0, 2.0, 2.1])
    assert verdict(base, Samples([0.7, 0.8, 0.99])).word == FASTER
    assert verdict(base, Samples([1.21, 1.3, 1.4])).word == SLOWER
    v = verdict(base, Samples([0.9, 1.0, 1.5]))
    assert v.word == SAME and v.measure == "wall_s" and "overlap" in v.reason
    assert verdict(base, Samples([1.0, 1.1], cpu_s=[1.0, 1.0])).word == TOO_FEW


def test_the_measure_is_the_callers_choice():
    base = Samples(wall_s=[1.0, 1.1, 1.2], cpu_s=[2.0, 2.0, 2.1], minor_faults=[10, 11, 12])
    other = Samples(wall_s=[1.0, 1.1, 1.2], cpu_s=[1.5, 1.6, 1.7], minor_faults=[20, 21, 22])
    assert verdict(base, other).word == SAME
    assert verdict(base, other, measure="cpu_s").word == FASTER
    assert verdict(base, other, measure="minor_faults").word == SLOWER
    with pytest.raises(ValueError, match="unknown measure"):
        verdict(base, other, measure="rss")


def test_compare_decides_by_the_shared_rule():
    """compare's verdicts are the rule's own (judge), word and reason."""
    walls = {"default": [1.0, 1.1, 1.2], "zkalloc": [0.5, 0.6, 0.7], "tcmalloc": [1.0, 1.1, 1.2]}
    runs = {a: [_compare.RunRecord(allocator=a, round=i, ok=True, exit_code=0, signal=None, timed_out=False,
                                   resources=Resources(w, w, 0.0, 100, 0, 1 << 20)) for i, w in enumerate(ws)]
            for a, ws in walls.items()}
    summary = _compare.summarize([r for rs in runs.values() for r in rs], list(walls))
    for name, word in (("zkalloc", FASTER), ("tcmalloc", SAME)):
        expected = judge(_compare.samples(runs["default"]), _compare.samples(runs[name]))
        assert (summary[name].verdict, summary[name].reason, expected.word) == (expected.word, expected.reason, word)
    assert _compare.SAME is SAME


def test_a_target_is_met_missed_or_missed_within_the_spread():
    assert within([1.0, 1.02], scaled([1.0, 1.0], 1.05)).word == MET
    assert within([1.2, 1.3], scaled([1.0, 1.05], 1.05)).word == MISSED      # every pass beyond every bound
    assert within([1.15, 1.25], scaled([1.0, 1.2], 1.05)).word == NOISE     # bounds 1.05-1.26 reach 1.15
    assert within([2.0], [1.0], medians=(0.9, 1.0)).word == MET             # a record's own medians decide MET
    with pytest.raises(ValueError):
        within([], [1.0])
    assert separated([1.0], [2.0]) and not separated([1.0, 2.0], [2.0]) and not separated([], [1.0])
