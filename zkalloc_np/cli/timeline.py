"""``run --timeline FILE.json``: the program's memory over time, by phase;
``--plot FILE.png`` (or ``.svg``, ``.pdf``, ``.html``) draws it.

A sampler thread (plain Python, reading counters: never inside an
allocation) takes a sample every `interval` seconds: seconds since the
start, the cache's bytes in use and cached, the process's RSS, its minor and
major faults, the cache's hits and misses so far, and the phase open then
(the innermost, in any thread).  Phases are recorded as spans (name, start,
end, thread) from zkalloc_np._phase's enter/exit hook.  The JSON holds
``{"interval_s", "samples": [...], "phases": [...], "command"}``.

The plot: memory (in use, cached, RSS) over time with each phase as a
shaded band, and page faults per interval beside it.
"""
from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from .. import _core, _phase, _system
from .process import read_own

#: Seconds between samples unless --interval says otherwise.
DEFAULT_INTERVAL = 0.05
#: What --plot can write (matplotlib's formats, and one HTML page with the picture inside).
PLOT_FORMATS = (".png", ".svg", ".pdf", ".html")


@dataclass(frozen=True)
class Sample:
    """The process at one moment (t: seconds since the timeline started)."""

    t: float
    bytes_in_use: int
    bytes_cached: int
    rss_bytes: int
    minor_faults: int
    major_faults: int
    hits: int
    misses: int
    phase: str | None


@dataclass
class Span:
    """One phase, from its entry to its exit (end None while open)."""

    name: str
    start: float
    end: float | None
    thread: int


@dataclass
class Timeline:
    """Samples at a steady interval, and the phases' spans, of one run."""

    interval_s: float = DEFAULT_INTERVAL
    command: list[str] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    phases: list[Span] = field(default_factory=list)
    _t0: float = 0.0
    _open: list[Span] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        """Begin: the phase hook, and the sampler thread (a daemon)."""
        self._t0 = time.perf_counter()
        _phase.PHASE_HOOKS.append(self._on_phase)
        self.sample()
        self._thread = threading.Thread(target=self._run, name="zkalloc-timeline", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End: one last sample, the hook removed, open phases closed now."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        with contextlib.suppress(ValueError):
            _phase.PHASE_HOOKS.remove(self._on_phase)
        self.sample()
        now = self._now()
        with self._lock:
            for span in self._open:
                span.end = now
            self._open.clear()

    def _now(self) -> float:
        return time.perf_counter() - self._t0

    def _run(self) -> None:
        next_at = time.perf_counter()
        while True:
            next_at += self.interval_s   # a steady grid: a slow sample does not shift the next ones
            if self._stop.wait(max(0.0, next_at - time.perf_counter())):
                return
            self.sample()

    def _on_phase(self, event: str, name: str) -> None:
        now, thread = self._now(), threading.get_ident()
        with self._lock:
            if event == "enter":
                span = Span(name, now, None, thread)
                self.phases.append(span)
                self._open.append(span)
                return
            for span in reversed(self._open):   # the innermost open phase of that name in this thread
                if span.name == name and span.thread == thread:
                    span.end = now
                    self._open.remove(span)
                    return

    def sample(self) -> None:
        """Take one sample now."""
        raw = _core.stats_snapshot()
        own, _ = read_own()
        with self._lock:
            current = self._open[-1].name if self._open else None
            self.samples.append(Sample(self._now(), raw["bytes_in_use"], raw["bytes_cached"], _system.rss_bytes(),
                                       own.minor_faults, own.major_faults, raw["hits"], raw["misses"], current))

    def as_dict(self) -> dict[str, Any]:
        """What the JSON holds."""
        return {"command": self.command, "interval_s": self.interval_s,
                "samples": [asdict(s) for s in self.samples], "phases": [asdict(p) for p in self.phases]}

    def write(self, path: str) -> None:
        """The JSON file."""
        with open(path, "w") as f:
            json.dump(self.as_dict(), f, indent=1)


def check_plot_path(path: str) -> str | None:
    """Why --plot cannot write `path` (a short message), or None."""
    if not path.lower().endswith(PLOT_FORMATS):
        return f"--plot {path}: the name must end in one of {', '.join(PLOT_FORMATS)}"
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "--plot needs matplotlib: pip install matplotlib"
    return None


def plot(timeline: dict[str, Any], path: str) -> None:
    """Draw a timeline (as_dict() or the JSON) to `path`: memory over time
    with the phases as bands, and page faults per interval beside it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples: Sequence[dict[str, Any]] = timeline["samples"]
    t = [s["t"] for s in samples]
    mib = 1 / 2**20
    fig, (mem, faults) = plt.subplots(2, 1, figsize=(10, 6), sharex=True, height_ratios=(3, 1))
    for key, label in (("rss_bytes", "process RSS"), ("bytes_in_use", "cache: in use"),
                       ("bytes_cached", "cache: cached (idle)")):
        mem.plot(t, [s[key] * mib for s in samples], label=label)
    mem.set_ylabel("MiB")
    names = sorted({p["name"] for p in timeline["phases"]})
    colours = {name: plt.get_cmap("tab10")(i % 10) for i, name in enumerate(names)}
    end = t[-1] if t else 0.0
    for span in timeline["phases"]:
        for axis in (mem, faults):
            axis.axvspan(span["start"], span["end"] if span["end"] is not None else end,
                         color=colours[span["name"]], alpha=0.15, lw=0)
    for name in names:   # one legend entry per phase name
        mem.plot([], [], color=colours[name], alpha=0.4, lw=8, label=f"phase {name}")
    mem.legend(loc="upper left", fontsize="small")
    mem.set_title(" ".join(timeline.get("command") or []) or "zkalloc timeline")
    per = [b["minor_faults"] - a["minor_faults"] for a, b in zip(samples, samples[1:])]
    faults.bar(t[1:], per, width=timeline["interval_s"], align="edge", color="tab:red")
    faults.set_ylabel("minor faults\nper sample")
    faults.set_xlabel("seconds")
    fig.tight_layout()
    if path.lower().endswith(".html"):
        import base64
        import io
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=100)
        image = base64.b64encode(buffer.getvalue()).decode()
        with open(path, "w") as f:
            f.write(f"<!doctype html><title>zkalloc timeline</title><img alt='zkalloc timeline' "
                    f"src='data:image/png;base64,{image}'>\n")
    else:
        fig.savefig(path, dpi=100)
    plt.close(fig)


def progress(timeline: Timeline, out: Callable[[str], None], every_s: float = 5.0) -> threading.Thread:
    """A thread that reports, every `every_s` seconds while the program runs,
    how long it has run, its memory and its phase (a long run's progress)."""
    def report() -> None:
        while not timeline._stop.wait(every_s):
            with timeline._lock:
                last = timeline.samples[-1] if timeline.samples else None
            if last is not None:
                out(f"{last.t:.0f} s: RSS {last.rss_bytes / 2**20:.0f} MiB, in use {last.bytes_in_use / 2**20:.0f} "
                    f"MiB, cached {last.bytes_cached / 2**20:.0f} MiB, phase {last.phase or '-'}")

    thread = threading.Thread(target=report, name="zkalloc-timeline-progress", daemon=True)
    thread.start()
    return thread
