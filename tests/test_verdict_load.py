"""Verdicts that hold on a busy machine (issue 31.2): zkalloc_np._verdict.judge,
and compare's summary of synthetic records, on an idle and on a loaded machine."""
from __future__ import annotations

from zkalloc_np._verdict import (FASTER, LOADED_CPU_MARGIN, SAME, SLOWER, TOO_FEW, WITHHELD, Load, Samples,
                                 judge)
from zkalloc_np.cli.compare import RunRecord, rows, summarize
from zkalloc_np.cli.process import Resources, load_during, MachineSample

IDLE = Load(others_cores=0.1, steal_share=0.0, load_avg=0.3, cores=2)
BUSY = Load(others_cores=1.8, steal_share=0.0, load_avg=7.0, cores=2)
STOLEN = Load(others_cores=0.0, steal_share=0.2, load_avg=1.0, cores=2)

# issue 31's prover: median wall 1.32x faster, but the ranges overlap on a busy machine; CPU time
# (system 4.66 -> 0.68 s, user unchanged) and faults (977k -> 34k) fall far apart
BASE = Samples(wall_s=[9.8, 13.0, 16.5], cpu_s=[14.6, 14.7, 14.9], minor_faults=[970e3, 977e3, 981e3])
ZK = Samples(wall_s=[7.1, 9.8, 14.0], cpu_s=[10.6, 10.7, 10.8], minor_faults=[33e3, 34e3, 35e3])


def test_on_an_idle_machine_wall_time_decides_and_the_reason_names_every_measure():
    v = judge(BASE, ZK, IDLE)
    assert v.word == SAME and v.measure == "wall_s"
    assert "cpu_s: faster" in v.reason and "minor_faults: faster" in v.reason and "idle" in v.reason
    apart = Samples(wall_s=[1.0, 1.1, 1.2], cpu_s=[1.0, 1.1, 1.2], minor_faults=[10, 10, 10])
    assert judge(BASE, apart, IDLE).word == FASTER
    assert judge(apart, BASE, IDLE).word == SLOWER
    assert judge(BASE, apart, None).word == FASTER and "load not measured" in judge(BASE, apart, None).reason


def test_on_a_loaded_machine_cpu_time_decides_with_a_margin():
    for load in (BUSY, STOLEN):
        v = judge(BASE, ZK, load)
        assert v.word == FASTER and v.measure == "cpu_s", v
        assert "loaded" in v.reason and "CPU time" in v.reason and f"{LOADED_CPU_MARGIN:.0%}" in v.reason
        assert judge(ZK, BASE, load).word == SLOWER


def test_a_loaded_machine_withholds_a_verdict_within_the_margin():
    # wall times apart, CPU 8% apart: on an idle machine "faster"; loaded, within what the load can make
    base = Samples(wall_s=[2.0, 2.1, 2.2], cpu_s=[1.08, 1.09, 1.10], minor_faults=[100, 100, 100])
    other = Samples(wall_s=[1.5, 1.6, 1.7], cpu_s=[1.00, 1.00, 1.01], minor_faults=[100, 100, 100])
    assert judge(base, other, IDLE).word == FASTER
    v = judge(base, other, BUSY)
    assert v.word == WITHHELD and "within what the load can make" in v.reason and "wall_s: faster" in v.reason
    same = judge(base, base, BUSY)
    assert same.word == SAME and "loaded" in same.reason
    assert judge(Samples([1.0, 1.1]), Samples([0.5, 0.6]), BUSY).word == TOO_FEW
    assert judge(Samples([1.0, 1.1, 1.2]), Samples([0.5, 0.6, 0.7]), BUSY).word == WITHHELD   # no CPU times


def test_load_is_the_others_cores_and_the_stolen_share():
    import os
    hz = os.sysconf("SC_CLK_TCK")
    before = MachineSample(busy=0, steal=0, total=0, load_avg=2.0)
    after = MachineSample(busy=3 * hz, steal=hz // 10, total=4 * hz, load_avg=3.0)   # 2 s on 2 cores
    load = load_during(before, after, wall_s=2.0, own_cpu_s=1.0)
    assert abs(load.others_cores - 1.0) < 1e-9 and abs(load.steal_share - 0.025) < 0.01 and load.load_avg == 3.0
    assert load.loaded
    assert not load_during(None, after, 2.0, 1.0).loaded
    assert Load.worst([IDLE, BUSY, STOLEN]) == Load(1.8, 0.2, 7.0, 2) and Load.worst([]) is None


def _records(allocator: str, samples: Samples, load: Load) -> list[RunRecord]:
    return [RunRecord(allocator=allocator, round=i, ok=True, exit_code=0, signal=None, timed_out=False,
                      resources=Resources(w, c * 0.9, c * 0.1, int(f), 0, 100 << 20), load=load)
            for i, (w, c, f) in enumerate(zip(samples.wall_s, samples.cpu_s, samples.minor_faults))]


def test_compares_summary_reads_the_load_of_its_runs():
    idle = summarize(_records("default", BASE, IDLE) + _records("zkalloc", ZK, IDLE), ["default", "zkalloc"])
    assert idle["zkalloc"].verdict == SAME and "idle" in idle["zkalloc"].reason
    busy = summarize(_records("default", BASE, IDLE) + _records("zkalloc", ZK, BUSY), ["default", "zkalloc"])
    assert busy["zkalloc"].verdict == FASTER and "loaded" in busy["zkalloc"].reason
    assert busy["zkalloc"].cpu_s is not None and busy["zkalloc"].cpu_s.median == 10.7
