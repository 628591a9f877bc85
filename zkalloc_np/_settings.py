"""Settings of the cache: parsing, validation, environment variables.

Every setting is process-wide (the cache is one per process).  The core's
one table (cython/zk/zk_options.c, read as _core.OPTIONS) gives each
setting its kind (bytes, duration, bool, choice), its bounds and its words;
this module parses and validates a value by its kind, once (parse_setting),
naming the setting or the environment variable in the error, and then
stores every value and applies what the changes do, in one place (_apply).
"""
from __future__ import annotations

import difflib
import numbers
import os
import re
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Literal, TypedDict, cast

from . import _core
from ._forksafe import fork_safe_lock

if TYPE_CHECKING:
    from typing_extensions import Unpack


@dataclass(frozen=True)
class Option:
    """One setting, as the core's table describes it: kind one of bytes,
    duration (milliseconds), bool, choice; the values the core accepts,
    min to max; for a choice, the words of the values min, min+1, ...,
    each with its aliases, the first how it reads back."""

    name: str
    kind: str
    min: int
    max: int
    words: tuple[tuple[str, ...], ...] | None

    @property
    def env_var(self) -> str:
        return f"ZKALLOC_{self.name.upper()}"


#: Every setting, in the core's order.
OPTIONS: dict[str, Option] = {
    name: Option(name, info["kind"], info["min"], info["max"],
                 tuple(info["words"]) if info["words"] is not None else None)
    for name, info in _core.OPTIONS.items()
}
#: setting name -> environment variable read at import.
ENV_VARS: dict[str, str] = {name: option.env_var for name, option in OPTIONS.items()}

HugePages = Literal["off", "on", "auto"]


class Settings(TypedDict):
    """Every setting's value, as settings() reads them back: sizes in bytes,
    decay_ms in milliseconds, hugepages and libc as their words,
    adaptive_zero a bool."""

    min_bytes: int
    cache_bytes: int
    hugepages: HugePages
    lazy_zero_bytes: int
    thread_cache_bytes: int
    adaptive_zero: bool
    decay_ms: int
    budget: int
    libc: Literal["keep", "leave"]


class SettingsArgs(TypedDict, total=False):
    """What configure() and install() accept for each setting."""

    min_bytes: int | str
    cache_bytes: int | str
    hugepages: HugePages | bool | int
    lazy_zero_bytes: int | str
    thread_cache_bytes: int | str
    adaptive_zero: bool | int | str
    decay_ms: int | str
    budget: int | str
    libc: Literal["keep", "leave"] | bool | int


#: Every other ZKALLOC_* variable this project reads (not a setting), and
#: who reads it.  Any ZKALLOC_* name in neither list is reported as unknown.
OTHER_ENV_VARS: dict[str, str] = {
    "ZKALLOC_LOG": "debug logging to stderr through the 'zkalloc_np' logger (1/0)",
    "ZKALLOC_SUBPROCESS": "install zkalloc in every Python process started with it (1, or a folder for reports)",
    "ZKALLOC_CFLAGS": "build: extra C flags for the core (setup.py)",
    "ZKALLOC_LDFLAGS": "build: extra link flags for the extension (setup.py)",
    "ZKALLOC_SANITIZE": "build: sanitizers for the core (setup.py, tools/sanitize.sh)",
    "ZKALLOC_STRESS_OPS": "tests: operations per thread of the stress test",
    "ZKALLOC_STRESS_THREADS": "tests: threads of the stress test",
    "ZKALLOC_TEST_INSTALLED": "tests: the suite runs against an installed wheel, not the checkout (.ci/run)",
    "ZKALLOC_TEST_SOURCE_TREE": "tests: where the checkout is, for the installed-wheel check (.ci/run)",
}


class SettingsWarning(UserWarning):
    """A setting was accepted or ignored with a doubt: a ZKALLOC_* variable
    ignored at import (a bad value, the setting keeps its default, or a name
    that is not a setting), or a size larger than the machine's memory."""


_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)
_MS_RE = re.compile(r"^\s*(\d+)\s*(ms|s)?\s*$", re.IGNORECASE)
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}

_sources: dict[str, str] = {name: "default" for name in ENV_VARS}
_lock = fork_safe_lock()


def parse_size(value: Any, what: str) -> int:
    """Bytes from an int or a string such as ``"512M"``, ``"1.5G"``,
    ``"64KiB"`` (binary units; a fraction must come to whole bytes).
    Raises ValueError naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        if (isinstance(value, float) and value.is_integer()
                or isinstance(value, numbers.Integral) and not isinstance(value, bool)):
            value = int(value)   # 1048576.0, np.int64(1048576); np.bool_ is no Integral
        else:
            raise ValueError(f"{what}: expected a byte count such as 1048576 or '512M', got {value!r}")
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if not match:
            raise ValueError(f"{what}: {value!r} is not a size (examples: 1048576, 64K, 512M, 1.5G)")
        exact = Fraction(match.group(1)) * _UNITS[match.group(2).upper()]
        if exact.denominator != 1:
            raise ValueError(f"{what}: {value!r} is not a whole number of bytes")
        value = int(exact)
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


def parse_ms(value: Any, what: str) -> int:
    """Milliseconds from an int or a string such as ``"500"``, ``"500ms"``, ``"10s"``."""
    if isinstance(value, bool) or not isinstance(value, (int, str, numbers.Integral)):
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


def _parse_choice(option: Option, value: Any, what: str) -> int:
    """A choice from one of its words (or an alias), a bool, or the core's number."""
    words = option.words or ()
    if isinstance(value, bool) or (isinstance(value, int) and option.min <= value <= option.max):
        return int(value)
    if isinstance(value, str):
        for number, aliases in enumerate(words, start=option.min):
            if value.strip().lower() in aliases:
                return number
    raise ValueError(f"{what}: expected one of {'/'.join(w[0] for w in words)}, got {value!r}")


_PARSERS: dict[str, Callable[[Option, Any, str], int]] = {
    "bytes": lambda option, value, what: parse_size(value, what),
    "duration": lambda option, value, what: parse_ms(value, what),
    "bool": lambda option, value, what: int(parse_bool(value, what)),
    "choice": _parse_choice,
}


def parse_setting(name: str, value: Any, what: str) -> int:
    """The core's number for `value` of setting `name`, parsed by the
    setting's kind and checked against its bounds: the one place every
    value is validated.  ValueError naming `what` (the setting, the
    variable, or a phase's argument)."""
    option = OPTIONS[name]
    number = _PARSERS[option.kind](option, value, what)
    if not option.min <= number <= option.max:
        raise ValueError(f"{what}: {number} is out of range [{option.min}, {option.max}]")
    return number


def implausible(name: str, number: int, what: str) -> str | None:
    """Why a size is doubtful: more than this machine's memory (a typo such
    as 100T for 100G is taken as it is written).  None when it is plausible."""
    ram = _ram_bytes()
    if OPTIONS[name].kind != "bytes" or not ram or number <= ram:
        return None
    from ._format import fmt_bytes
    return f"{what}: {fmt_bytes(number)} is more than this machine's memory ({fmt_bytes(ram)}); taken as given"


def _ram_bytes() -> int:
    from ._container import ram_bytes
    return ram_bytes()


def unknown_setting(name: str) -> str:
    """The message for a name that is not a setting, with the closest one."""
    close = difflib.get_close_matches(name, list(OPTIONS), n=1, cutoff=0.6)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"unknown setting {name!r}{hint}; known: {', '.join(sorted(OPTIONS))}"


def _apply(values: dict[str, int], source: dict[str, str]) -> None:
    """Store every (validated) value, then apply what each change does now."""
    for name, number in values.items():
        _core.option_store(name, number)
        _sources[name] = source[name]
    for name in values:
        _core.option_apply(name)


def validate(settings: Mapping[str, Any], stacklevel: int = 2) -> dict[str, int]:
    """Check names, syntax and range of settings without applying them;
    returns them as the core's numbers.  ValueError naming the bad one (a
    misspelt name with the closest setting); a size larger than the
    machine's memory gives a SettingsWarning (stacklevel: of the warning,
    counted from validate's caller)."""
    for name in settings:
        if name not in OPTIONS:
            raise ValueError(unknown_setting(name))
    values = {name: parse_setting(name, v, name) for name, v in settings.items()}
    for name, number in values.items():
        doubt = implausible(name, number, name)
        if doubt:
            warnings.warn(doubt, SettingsWarning, stacklevel=stacklevel + 1)
    return values


def _warn_useless(values: Mapping[str, int], stacklevel: int) -> None:
    """Settings that are valid but can have no effect together."""
    now = {name: _core.option_get(name) for name in ("cache_bytes", "thread_cache_bytes")}
    now.update({k: v for k, v in values.items() if k in now})
    if "thread_cache_bytes" in values and now["thread_cache_bytes"] > now["cache_bytes"]:
        from ._format import fmt_bytes
        warnings.warn(f"thread_cache_bytes={fmt_bytes(now['thread_cache_bytes'])} is more than cache_bytes="
                      f"{fmt_bytes(now['cache_bytes'])}: a thread's idle regions count against cache_bytes, "
                      f"so a thread holds at most {fmt_bytes(now['cache_bytes'])}", SettingsWarning,
                      stacklevel=stacklevel + 1)


def configure(**settings: Unpack[SettingsArgs]) -> Settings:
    """Change settings at run time; returns all settings after the change.

    cache_bytes: cap on idle bytes the cache holds (int or '512M', '1.5G');
        lowering it evicts idle regions at once, oldest first.
    min_bytes: smallest request the cache serves; smaller ones go to numpy's
        own allocator.
    hugepages: huge pages for fresh regions of 2 MiB and more: "auto"
        (default: measured, see How it works), "on" (always MADV_HUGEPAGE)
        or "off" (never); True/False and 1/0 also work.
    lazy_zero_bytes: np.zeros of at least this many bytes on a reused region
        drops its pages (MADV_DONTNEED) instead of memset; 0 = always memset.
    thread_cache_bytes: idle bytes one thread may keep without taking a lock
        (they count against cache_bytes: more than it warns).
    decay_ms: an idle region no request took for this long is softened
        (MADV_FREE), after twice as long given back to the kernel; 0 = keep
        idle memory until release().  Default 10000 (10 s).
    adaptive_zero: np.zeros on a reused region of 256 KiB or more learns per
        size class whether its users touch few pages (then MADV_DONTNEED on
        4 KiB pages) or many (memset); off: always memset.
    budget: the cache's bytes in use (regions, all threads) may not exceed
        it: a request that would is refused (numpy's MemoryError) and counted
        in stats().budget_refusals; 0 (default) = no budget.  Checked on
        the cache's requests only (min_bytes and up, not numpy's small ones
        or resizes), per request: threads racing may pass it by a region
        each.  phase(budget=...) is the per-phase budget.
    libc: "keep" (default) or "leave": while install() is in effect, keep
        glibc's big blocks (np.fft scratch, C extensions' malloc) resident
        (mallopt M_MMAP_MAX=0 and a huge M_TRIM_THRESHOLD; malloc_trim at
        release() and decay; glibc's defaults back at uninstall()), or leave
        glibc alone.  A no-op where the C library is not glibc, and where the
        environment already tunes glibc (MALLOC_MMAP_MAX_ and friends).

    A misspelt name is a ValueError naming the closest setting (and a type
    checker's error), a bad value a ValueError naming the setting; nothing
    is changed then.  A size larger than the machine's memory is taken, with
    a SettingsWarning.
    """
    return configure_from(settings, stacklevel=3)


def configure_from(settings: Mapping[str, Any], stacklevel: int = 2) -> Settings:
    """configure() with the settings in a mapping (install(**settings), the
    Dask plugin, saved settings()), with the same errors.
    stacklevel: of its warnings, counted from configure_from's caller."""
    values = validate(settings, stacklevel + 1)
    with _lock:
        _apply(values, dict.fromkeys(values, "configure()"))
    _warn_useless(values, stacklevel + 1)
    return current()


def _read_back(name: str, number: int) -> Any:
    option = OPTIONS[name]
    if option.kind == "choice" and option.words is not None:
        return option.words[number - option.min][0]
    if option.kind == "bool":
        return bool(number)
    return number


def current() -> Settings:
    """Every setting's value now, the way it is written (hugepages "auto",
    adaptive_zero True): configure(**settings()) sets them all again."""
    return cast(Settings, {name: _read_back(name, _core.option_get(name)) for name in ENV_VARS})


def sources() -> dict[str, str]:
    """Where each setting came from: 'default', 'env ZKALLOC_...', or 'configure()'."""
    with _lock:
        return dict(_sources)


def known_env_vars() -> frozenset[str]:
    """Every ZKALLOC_* name zkalloc reads or knows: settings and the project's other variables."""
    return frozenset(ENV_VARS.values()) | frozenset(OTHER_ENV_VARS)


def unknown_environment(environ: Mapping[str, str] | None = None) -> list[str]:
    """ZKALLOC_* names in the environment that zkalloc does not read, each
    as a message (with the closest known name, if one is close)."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    known = known_env_vars()
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
        try:
            values[name] = parse_setting(name, env[var], f"{var}={env[var]!r}")
        except ValueError as exc:
            problems[name] = str(exc)
            continue
        variables[name] = var
    return values, variables, problems


def environment_problems(environ: Mapping[str, str] | None = None) -> list[str]:
    """Every problem with the ZKALLOC_* environment, one message each: bad
    values of settings, sizes larger than the machine's memory, and names
    that are not settings.  Never raises."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    good, variables, bad = _parse_environment(env)
    problems = [f"{msg}; ignored, {name} keeps its default" for name, msg in bad.items()]
    problems += [doubt for name, number in good.items()
                 if (doubt := implausible(name, number, f"{variables[name]}={env[variables[name]]!r}"))]
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
        _apply(values, {name: f"env {var}" for name, var in variables.items()})
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
            _apply({"cache_bytes": _container.default_cap(_container.ram_bytes(), found)}, {"cache_bytes": "default"})
