"""Settings of the cache: parsing, validation, environment variables.

Every setting is process-wide (the cache is one per process).  Values are
validated twice: here for type and syntax (so the error names the setting or
the environment variable), and by the C core for range.
"""
from __future__ import annotations

import os
import re
import threading
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
}
BOOLEAN_SETTINGS = frozenset({"adaptive_zero"})
#: settings that take a word as well as a number: name -> {word: core value}
CHOICE_SETTINGS: dict[str, dict[str, int]] = {
    "hugepages": {"0": 0, "off": 0, "false": 0, "no": 0, "1": 1, "on": 1, "true": 1, "yes": 1, "auto": 2},
}

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
    return value


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


def _to_core_value(name: str, value: Any, what: str) -> int:
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
    adaptive_zero: np.zeros on a reused region of 256 KiB or more learns per
        size class whether its users touch few pages (then MADV_DONTNEED on
        4 KiB pages) or many (memset); off: always memset.

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


def load_environment(environ: Mapping[str, str] | None = None) -> None:
    """Apply the ZKALLOC_* environment variables; raises ValueError naming the
    variable on a bad value (at import, before any array is touched)."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    present = {name: var for name, var in ENV_VARS.items() if var in env}
    what = {name: f"{var}={env[var]!r}" for name, var in present.items()}
    values = {name: _to_core_value(name, env[var], what[name]) for name, var in present.items()}
    with _lock:
        _apply(values, {name: f"env {var}" for name, var in present.items()}, what)
