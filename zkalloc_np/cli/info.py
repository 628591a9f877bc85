"""``python -m zkalloc_np info``: what numpy, the kernel and zkalloc's settings
look like in this process."""
from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .. import _core, _raw, _settings, _system
from .._format import fmt_bytes
from .._stats import thp_policy

#: what install() puts through the cache, or keeps resident, and what it does not.
COVERED = (
    "numpy array data (NEP 49 handler) of min_bytes and more: from the cache (install() and installed())",
    "Python's raw domain (PyMem_RawMalloc) of min_bytes and more: ndarray.tobytes(), bytes, bytearray, "
    "b''.join(), hashlib inputs, numpy's cast buffers (and, from numpy 2.5, its default's data): from the "
    "cache (install() only)",
    "libc malloc's big blocks (np.fft/pocketfft scratch, numba arrays, C extensions): NOT through the cache, "
    "kept resident by glibc with libc=keep (install() only; glibc only)",
)
NOT_COVERED = (
    "requests below min_bytes (Python objects, small arrays): Python's and numpy's own allocators",
    "the PyMem/PyObject domains' small objects (pymalloc arenas) and mmap'd files (np.memmap, mmap)",
    "libc blocks under libc=leave, on a C library other than glibc, or where the environment tunes glibc",
    "with libc=keep, threads' big blocks go to glibc's main heap (a thread's own arena cannot hold them "
    "without mmap): a lock shared by the threads that allocate them",
    "a raw block that starts below min_bytes and grows by realloc (bytearray +=, io.BytesIO) stays with "
    "Python's allocator",
    "anything allocated by installed() blocks outside numpy (installed() is numpy-only)",
)


def _default_handler_state() -> str:
    """What numpy's default handler capsule runs now."""
    if _core.default_points_at_zkalloc():
        return "zkalloc (process-wide install on)"
    return "numpy's functions" if _core.default_points_at_numpy() else "pass-through (after uninstall())"


def _limit(value: int) -> str:
    return "unlimited" if value < 0 or value >= 2**62 else fmt_bytes(value)


def _container_limit() -> dict[str, Any]:
    from dataclasses import asdict

    from .._container import memory_limit
    return asdict(memory_limit())


def subprocess_hook() -> str | None:
    """Where the ZKALLOC_SUBPROCESS start-up hook (zkalloc_np_subprocess.pth) is
    installed, or None (a checkout never installed: Python children are then
    not covered)."""
    import site
    folders = [*site.getsitepackages(), site.getusersitepackages()]
    return next((os.path.join(d, "zkalloc_np_subprocess.pth") for d in folders
                 if os.path.exists(os.path.join(d, "zkalloc_np_subprocess.pth"))), None)


def info(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Everything ``info`` prints, as a dict."""
    import numpy as np
    from numpy._core.multiarray import get_handler_name

    from .. import __version__
    env = os.environ if environ is None else environ
    soft, hard = _system.memlock_limit()
    sources = _settings.sources()
    known = _settings.known_env_vars()
    return {
        "zkalloc_version": __version__,
        "numpy_version": np.__version__,
        "numpy_build_version": _core.NUMPY_BUILD_VERSION,
        "handler_in_effect": get_handler_name(),
        "default_handler": _default_handler_state(),
        "thp_enabled": _system.thp_mode("enabled"),
        "thp_defrag": _system.thp_mode("defrag"),
        "memlock_soft": soft,
        "memlock_hard": hard,
        "memlock_exempt": _system.memlock_exempt(),
        "cache_cap_bytes": _settings.current()["cache_bytes"],
        "memory_limit": _container_limit(),
        "cache_cap_source": sources["cache_bytes"],
        "settings": _settings.current(),
        "setting_sources": sources,
        "env": {k: v for k, v in sorted(env.items()) if k in known},
        "env_unknown": sorted(k for k in env if k.startswith("ZKALLOC_") and k not in known),
        "env_problems": _settings.environment_problems(env),
        "raw_domain": _raw.raw_status(),
        "libc": _raw.libc_status(),
        "subprocess_hook": subprocess_hook(),
        "subprocess_switch": env.get("ZKALLOC_SUBPROCESS"),
        "covered": list(COVERED),
        "not_covered": list(NOT_COVERED),
    }


def info_lines(environ: Mapping[str, str] | None = None) -> list[str]:
    """The report ``info`` prints, one line per item."""
    d = info(environ)
    source = d["cache_cap_source"]
    if source == "default":
        source = "default: min(RAM/8, container limit/8, 1 GiB)"
    limit = d["memory_limit"]
    lines = [
        f"zkalloc-np {d['zkalloc_version']}, numpy {d['numpy_version']}",
        f"numpy: running {d['numpy_version']}, extension built against {d['numpy_build_version']}",
        f"handler in effect here: {d['handler_in_effect']}; numpy's default handler points at: {d['default_handler']}",
        f"transparent huge pages: enabled={d['thp_enabled']}, defrag={d['thp_defrag']}",
        f"memlock limit: soft {_limit(d['memlock_soft'])}, hard {_limit(d['memlock_hard'])}"
        + ("; this process has CAP_IPC_LOCK (root), which is exempt from it: secret arrays lock whatever their size"
           if d["memlock_exempt"] else ""),
        f"cache cap: {fmt_bytes(d['cache_cap_bytes'])} ({source})",
        "container memory limit: " + (f"{fmt_bytes(limit['bytes'])} (from {limit['source']})"
                                      if limit["bytes"] is not None else limit["source"]),
        "settings:",
    ]
    for name, value in d["settings"].items():
        if isinstance(value, (bool, str)):
            shown = str(value)
        elif _settings.OPTIONS[name].kind == "duration":
            shown = f"{value} ms" + (" (off)" if value == 0 else "")
        else:
            shown = f"{value} ({fmt_bytes(value)})"
        lines.append(f"  {name} = {shown}  [{d['setting_sources'][name]}]")
    hook = d["subprocess_hook"]
    switch = d["subprocess_switch"]
    lines.append("Python children (ZKALLOC_SUBPROCESS, set by run and compare): "
                 + (f"start-up hook {hook}" if hook else "start-up hook NOT installed (pip install the package)")
                 + (f"; the switch is set here: {switch}" if switch else "; the switch is not set here"))
    lines.append(f"Python raw domain: {d['raw_domain']}")
    lines.append(f"libc malloc: {d['libc']}")
    lines.append("covered by install():")
    lines += [f"  {item}" for item in d["covered"]]
    lines.append("not covered:")
    lines += [f"  {item}" for item in d["not_covered"]]
    lines += thp_policy_lines()
    if d["env"]:
        lines.append("from the environment: " + ", ".join(f"{k}={v}" for k, v in d["env"].items()))
    else:
        lines.append("from the environment: none (ZKALLOC_* unset)")
    if d["env_problems"]:
        lines.append("problems with the environment (each ignored):")
        lines += [f"  {problem}" for problem in d["env_problems"]]
    return lines


def thp_policy_lines() -> list[str]:
    """What the first-touch policy (hugepages=auto) has measured so far in
    this process: cost per MiB of faulting fresh memory, per size range."""
    lines = ["first-touch cost measured in this process (fresh np.empty >= 2 MiB of classes shown to write their arrays whole, faulted at once):"]
    rows = thp_policy()
    if not any(r.samples_small or r.samples_huge for r in rows):
        return lines + ["  no sample yet (none is taken before a class of 2 MiB or more has shown that it writes its arrays whole)"]
    for r in rows:
        def cost(ns: int, n: int) -> str:
            return f"{ns / 1e3:.0f} us/MiB ({n} samples)" if n else "not sampled"
        lines.append(f"  {r.range}: 4 KiB pages {cost(r.ns_per_mib_small, r.samples_small)}, "
                     f"huge pages {cost(r.ns_per_mib_huge, r.samples_huge)}; choice now: {r.choice}")
    return lines
