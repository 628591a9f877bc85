"""Settings of the cache: parsing, validation, environment variables.

Every setting is process-wide (the cache is one per process).  Values are
validated twice: here for type and syntax (so the error names the setting or
the environment variable), and by the C core for range.
"""
from __future__ import annotations

import difflib
import os
import re
import threading
import warnings
from collections.abc import Mapping
from typing import Any

from . import _core

#: setting name -> environment variable read at import
ENV_VARS: dict[str, str] = {
    "cache_bytes": "ZKALLOC_CACHE_BYTES",
    "min_bytes": "ZKALLOC_MIN_BYTES",
    "hugepages": "ZKALLOC_HUGEPAGES",
    "lazy_zero_bytes": "ZKALLOC_LAZY_ZERO_BYTES",
    "thread_cache_bytes": "ZKALLOC_THREAD_CACHE_BYTES",
    "adaptive_zero": "ZKALLOC_ADAPTIVE_ZERO",
    "decay_ms": "ZKALLOC_DECAY_MS",
    "background": "ZKALLOC_BACKGROUND",
    "libc": "ZKALLOC_LIBC",   # issue 24
}
#: settings that are durations in milliseconds, not byte counts
DURATION_SETTINGS = frozenset({"decay_ms"})
_MS_RE = re.compile(r"^\s*(\d+)\s*(ms|s)?\s*$", re.IGNORECASE)
BOOLEAN_SETTINGS = frozenset({"adaptive_zero", "background"})
#: settings that take a word as well as a number: name -> {word: core value}
CHOICE_SETTINGS: dict[str, dict[str, int]] = {
    "hugepages": {"0": 0, "off": 0, "false": 0, "no": 0, "1": 1, "on": 1, "true": 1, "yes": 1, "auto": 2},
    "libc": {"keep": 1, "leave": 0},   # issue 24
}

#: Every other ZKALLOC_* variable this project reads (not a setting), and
#: who reads it.  Any ZKALLOC_* name in neither list is reported as unknown.
OTHER_ENV_VARS: dict[str, str] = {
    "ZKALLOC_LOG": "debug logging to stderr through the 'zkalloc_np' logger (1/0)",
    "ZKALLOC_CFLAGS": "build: extra C flags for the core (setup.py)",
    "ZKALLOC_LDFLAGS": "build: extra link flags for the extension (setup.py)",
    "ZKALLOC_SANITIZE": "build: sanitizers for the core (setup.py, tools/sanitize.sh)",
    "ZKALLOC_STRESS_OPS": "tests: operations per thread of the stress test",
    "ZKALLOC_STRESS_THREADS": "tests: threads of the stress test",
    "ZKALLOC_TEST_INSTALLED": "tests: the suite runs against an installed wheel, not the checkout (.ci/run)",
    "ZKALLOC_TEST_SOURCE_TREE": "tests: where the checkout is, for the installed-wheel check (.ci/run)",
}


class SettingsWarning(UserWarning):
    """A ZKALLOC_* environment variable was ignored at import: a bad value
    (the setting keeps its default) or a name that is not a setting."""

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

_sources: dict[str, str] = {name: "default" for name in ENV_VARS}
_lock = threading.Lock()


def parse_size(value: Any, what: str) -> int:
    """Bytes from an int or a string such as ``"512M"``, ``"2G"``, ``"64KiB"``
    (binary units).  Raises ValueError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ValueError(f"{what}: expected a byte count such as 1048576 or '512M', got {value!r}")
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if not match:
            raise ValueError(f"{what}: {value!r} is not a size (examples: 1048576, 64K, 512M, 2G)")
        value = int(match.group(1)) * _UNITS[match.group(2).upper()]
    if value < 0:
        raise ValueError(f"{what}: must not be negative, got {value}")
    return int(value)


def parse_bool(value: Any, what: str) -> bool:
    """True/False from a bool, 0/1, or on/off, yes/no, true/false strings."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"{what}: expected a boolean (1/0, on/off, true/false), got {value!r}")


def parse_choice(name: str, value: Any, what: str) -> int:
    """A CHOICE_SETTINGS value from a bool, an int the core accepts, or a word."""
    choices = CHOICE_SETTINGS[name]
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int) and value in set(choices.values()):
        return value
    if isinstance(value, str) and value.strip().lower() in choices:
        return choices[value.strip().lower()]
    words = "/".join(w for w in choices if not w.isdigit())
    raise ValueError(f"{what}: expected one of {words} (or {sorted(set(choices.values()))}), got {value!r}")


def parse_ms(value: Any, what: str) -> int:
    """Milliseconds from an int or a string such as ``"500"``, ``"500ms"``, ``"10s"``."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"{what}: expected milliseconds such as 10000, '500ms' or '10s', got {value!r}")
    if isinstance(value, str):
        match = _MS_RE.match(value)
        if not match:
            raise ValueError(f"{what}: {value!r} is not a duration (examples: 10000, 500ms, 10s)")
        value = int(match.group(1)) * (1000 if (match.group(2) or "").lower() == "s" else 1)
    ms = int(value)
    if ms < 0:
        raise ValueError(f"{what}: must not be negative, got {ms}")
    return ms


def _to_core_value(name: str, value: Any, what: str) -> int:
    if name in DURATION_SETTINGS:
        return parse_ms(value, what)
    if name in CHOICE_SETTINGS:
        return parse_choice(name, value, what)
    if name in BOOLEAN_SETTINGS:
        return int(parse_bool(value, what))
    return parse_size(value, what)


def _apply(values: dict[str, int], source: dict[str, str], what: dict[str, str]) -> None:
    """Range-check every value first, then set them all: a bad one changes nothing."""
    for name, number in values.items():
        low, high = _core.option_range(name)
        if not low <= number <= high:
            raise ValueError(f"{what[name]}: {number} is out of range [{low}, {high}]")
    for name, number in values.items():
        _core.option_set(name, number)
        _sources[name] = source[name]


def validate(settings: Mapping[str, Any]) -> dict[str, int]:
    """Check names, syntax and range of settings without applying them;
    returns them as the core's numbers.  ValueError naming the bad one."""
    unknown = sorted(set(settings) - set(ENV_VARS))
    if unknown:
        raise ValueError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(ENV_VARS))}")
    values = {name: _to_core_value(name, v, name) for name, v in settings.items()}
    for name, number in values.items():
        low, high = _core.option_range(name)
        if not low <= number <= high:
            raise ValueError(f"{name}: {number} is out of range [{low}, {high}]")
    return values


def configure(**settings: Any) -> dict[str, int]:
    """Change settings at run time; returns all settings after the change.

    cache_bytes: cap on idle bytes the cache holds (int or '512M'); lowering
        it evicts least recently used regions at once.
    min_bytes: smallest request the cache serves; smaller ones go to numpy's
        own allocator.
    hugepages: huge pages for fresh regions of 2 MiB and more: "auto"
        (default: measured, see How it works), 1/"on" (always MADV_HUGEPAGE)
        or 0/"off" (never).
    lazy_zero_bytes: np.zeros of at least this many bytes on a reused region
        drops its pages (MADV_DONTNEED) instead of memset; 0 = always memset.
    thread_cache_bytes: idle bytes one thread may keep without taking a lock.
    background: a background worker (one thread, SCHED_IDLE) faults the next
        region of a growing size class ahead, and zeroes freed regions of
        classes that serve np.zeros so the next np.zeros skips its memset
        (where the kernel can track writes: see ``info``); it uses a spare
        core only; off by default.
    decay_ms: an idle region no request took for this long is softened
        (MADV_FREE), after twice as long given back to the kernel; 0 = keep
        idle memory until release().  Default 10000 (10 s).
    adaptive_zero: np.zeros on a reused region of 256 KiB or more learns per
        size class whether its users touch few pages (then MADV_DONTNEED on
        4 KiB pages) or many (memset); off: always memset.
    libc: "keep" (default) or "leave": while install() is in effect, keep
        glibc's big blocks (np.fft scratch, C extensions' malloc) resident
        (mallopt M_MMAP_MAX=0 and a huge M_TRIM_THRESHOLD; malloc_trim at
        release() and decay; glibc's defaults back at uninstall()), or leave
        glibc alone.  A no-op where the C library is not glibc, and where the
        environment already tunes glibc (MALLOC_MMAP_MAX_ and friends).

    Raises ValueError naming the setting on an unknown name or a bad value;
    nothing is changed then.
    """
    values = validate(settings)
    with _lock:
        _apply(values, dict.fromkeys(values, "configure()"), {name: name for name in values})
    return current()


def current() -> dict[str, int]:
    """Every setting's value now (booleans as 0/1, hugepages as 0/1/2 = auto)."""
    return {name: _core.option_get(name) for name in ENV_VARS}


def sources() -> dict[str, str]:
    """Where each setting came from: 'default', 'env ZKALLOC_...', or 'configure()'."""
    with _lock:
        return dict(_sources)


def unknown_environment(environ: Mapping[str, str] | None = None) -> list[str]:
    """ZKALLOC_* names in the environment that zkalloc does not read, each
    as a message (with the closest known name, if one is close)."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    known = set(ENV_VARS.values()) | set(OTHER_ENV_VARS)
    problems = []
    for name in sorted(k for k in env if k.startswith("ZKALLOC_") and k not in known):
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.8)
        hint = f" (did you mean {close[0]}?)" if close else ""
        problems.append(f"{name} is not a zkalloc setting and is ignored{hint}")
    return problems


def _parse_environment(env: Mapping[str, str]) -> tuple[dict[str, int], dict[str, str], dict[str, str]]:
    """(good values, the variable of each, problems by setting): every
    ZKALLOC_* setting in `env`, parsed and range-checked one by one."""
    values: dict[str, int] = {}
    variables: dict[str, str] = {}
    problems: dict[str, str] = {}
    for name, var in ENV_VARS.items():
        if var not in env:
            continue
        what = f"{var}={env[var]!r}"
        try:
            number = _to_core_value(name, env[var], what)
            low, high = _core.option_range(name)
            if not low <= number <= high:
                raise ValueError(f"{what}: {number} is out of range [{low}, {high}]")
        except ValueError as exc:
            problems[name] = str(exc)
            continue
        values[name], variables[name] = number, var
    return values, variables, problems


def environment_problems(environ: Mapping[str, str] | None = None) -> list[str]:
    """Every problem with the ZKALLOC_* environment, one message each: bad
    values of settings, and names that are not settings.  Never raises."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    _, _, bad = _parse_environment(env)
    problems = [f"{msg}; ignored, {name} keeps its default" for name, msg in bad.items()]
    log = env.get("ZKALLOC_LOG")
    if log is not None and log.strip().lower() not in _TRUE | _FALSE:
        problems.append(f"ZKALLOC_LOG={log!r}: expected 1/0, on/off, true/false; ignored, logging stays off")
    return problems + unknown_environment(env)


def load_environment(environ: Mapping[str, str] | None = None, *, strict: bool = True) -> list[str]:
    """Apply the ZKALLOC_* environment variables.

    strict=True: a bad value raises ValueError naming the variable, and
    nothing is applied.  strict=False (what the import does): the good ones
    are applied, each bad value and each unknown ZKALLOC_* name gives one
    SettingsWarning, and the bad settings keep their defaults.  Returns the
    problems found (warned about when not strict)."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    values, variables, bad = _parse_environment(env)
    if strict and bad:
        raise ValueError(next(iter(bad.values())))
    with _lock:
        _apply(values, {name: f"env {var}" for name, var in variables.items()},
               {name: f"{var}={env[var]!r}" for name, var in variables.items()})
    problems = environment_problems(env)
    if not strict:
        for problem in problems:
            warnings.warn(problem, SettingsWarning, stacklevel=3)
    return problems


def apply_container_default(limit: Any = None) -> None:
    """Give cache_bytes its container-aware default, min(RAM/8, cgroup
    limit/8, 1 GiB), unless the environment or configure() set it.  Problems
    reading the cgroup files are warned about once and fall back to RAM."""
    from . import _container
    found = _container.memory_limit() if limit is None else limit
    for problem in found.problems:
        warnings.warn(f"zkalloc: reading the container's memory limit: {problem}", RuntimeWarning,
                      stacklevel=2)
    with _lock:
        if _sources["cache_bytes"] == "default":
            _core.option_set("cache_bytes", _container.default_cap(_container.ram_bytes(), found))
