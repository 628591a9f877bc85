"""Secret arrays: locked, guarded, never dumped, wiped on free.

    with zkalloc.secret():              # every array made here is secret
        witness = np.frombuffer(raw, dtype=np.uint64).copy()
    key = zkalloc.secret_zeros(4, np.uint64)

Each secret array gets its own mapping with a PROT_NONE guard page on both
sides, mlock (never swapped), MADV_DONTDUMP (never in a core dump) and
MADV_WIPEONFORK (a forked child reads zeros); on free it is wiped with
explicit_bzero, unlocked and unmapped.  It never enters the size-class cache.

What it cannot reach: copies.  A temporary numpy makes outside the block, a
value converted to a Python int, bytes a library copies into its own buffers,
registers: those are ordinary memory, as in every secret-memory allocator.
"""
from __future__ import annotations

import contextlib
import contextvars
import errno
import math
import operator
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _core, _handler_stack, _system
from ._arrays import data_address

_depth: contextvars.ContextVar[int] = contextvars.ContextVar("zkalloc_secret_depth", default=0)


class SecretMemoryError(MemoryError):
    """Secret memory could not get a protection it requires (strict mode)."""


class SecretWarning(RuntimeWarning):
    """strict=False: secret memory goes on without some protection."""


@dataclass(frozen=True)
class SecretInfo:
    """The protections one secret array has."""

    nbytes: int
    mapped_bytes: int       # its mapping, guard pages included
    guarded: bool
    locked: bool
    dontdump: bool
    wipeonfork: bool

    @property
    def fully_protected(self) -> bool:
        return self.guarded and self.locked and self.dontdump and self.wipeonfork


def secret_active() -> bool:
    """Whether this context is inside a secret() block."""
    return _depth.get() > 0


def _names(bits: int) -> list[str]:
    return [name for name, bit in _core.SECRET_PROTECTIONS.items() if bits & bit]


def _explain(failed: int, err: int, strict: bool) -> str:
    """A message naming what failed and how to fix it (strict) or that the
    block goes on without it (lenient)."""
    what = ", ".join(_names(failed)) or "mapping"
    reason = f"{errno.errorcode.get(err, err)}: {os.strerror(err)}" if err else "refused"
    text = f"secret memory: could not apply {what} ({reason})."
    if failed & _core.SECRET_PROTECTIONS["locked"]:
        soft, hard = _system.memlock_limit()
        text += (f" mlock is limited by RLIMIT_MEMLOCK, now {_fmt_limit(soft)} (hard {_fmt_limit(hard)}),"
                 " unless the process has CAP_IPC_LOCK. Raise it with `ulimit -l unlimited` (or a number of"
                 " KiB) in the shell that starts Python, LimitMEMLOCK= in a systemd unit, or"
                 " `--ulimit memlock=-1` for docker.")
    if strict:
        return text + " Or pass strict=False to go on without it."
    return text + " Going on without it (strict=False)."


def _fmt_limit(value: int) -> str:
    import resource
    return "unlimited" if value == resource.RLIM_INFINITY else f"{value} bytes"


def _check_protections(strict: bool) -> None:
    ok, err = _core.secret_probe()
    missing = _core.SECRET_ALL & ~ok
    if not missing:
        return
    if strict:
        raise SecretMemoryError(_explain(missing, err, strict))
    warnings.warn(_explain(missing, err, strict), SecretWarning, stacklevel=4)


@contextlib.contextmanager
def secret(strict: bool = True) -> Iterator[None]:
    """Give every numpy array created in this block (this thread/context, any
    size) secret memory.

    strict=True (the default): if a protection cannot be applied (usually
    mlock, against RLIMIT_MEMLOCK), raise SecretMemoryError naming the limit
    and how to raise it, at entry or at the allocation that hit it.
    strict=False: warn (SecretWarning) and go on; secret_info() says what
    each array got.  Inside a phase(), secret memory wins.
    """
    if not isinstance(strict, bool):
        raise TypeError(f"secret(strict): expected a bool, got {strict!r}")
    _check_protections(strict)
    outermost = _depth.get() == 0
    if outermost:
        _core.secret_block_reset()
    _depth.set(_depth.get() + 1)
    entry = _handler_stack.enter(_core.secret_capsules[strict])
    try:
        yield
    except MemoryError as exc:
        # The block's record, not the last allocation's: numpy may allocate
        # again after a failed realloc (np.fromstring does).
        failed, err, _ = _core.secret_block_failures()
        if failed and not isinstance(exc, SecretMemoryError):
            raise SecretMemoryError(_explain(failed, err, True)) from exc
        raise
    finally:
        _handler_stack.leave(entry)
        # A decrement, not ContextVar.reset(token): blocks entered in
        # generators may end in any order (see _handler_stack).
        _depth.set(max(_depth.get() - 1, 0))
    if outermost and not strict:
        _warn_block_failures()


def _warn_block_failures() -> None:
    """strict=False: one warning per block naming what its arrays lacked.
    It comes when the block ends: the allocations happen inside numpy's C
    code, some with the GIL released, where no warning can be raised."""
    failed, err, count = _core.secret_block_failures()
    if count:
        warnings.warn(f"{count} array(s) in this secret(strict=False) block got less than full "
                      f"protection. " + _explain(failed, err, False), SecretWarning, stacklevel=3)


#: The largest secret block the core maps (its largest size class).
_MAX_SECRET_BYTES = _core.class_bytes(_core.NCLASSES - 1)


def _check_shape(shape: Any, dtype: Any, caller: str) -> None:
    """ValueError naming `caller`'s shape when it is no shape (a float, a
    str), has a negative dimension, or is more than secret memory maps."""
    def dim(d: Any) -> int:
        if isinstance(d, bool):
            raise TypeError
        return operator.index(d)

    dims: tuple[int, ...]
    try:
        dims = (dim(shape),)
    except TypeError:
        try:
            dims = tuple(dim(d) for d in shape)
        except TypeError:
            raise ValueError(f"{caller}(shape): expected an int or a sequence of ints, got {shape!r}") from None
    if any(d < 0 for d in dims):
        raise ValueError(f"{caller}(shape): a dimension is negative in {shape!r}")
    nbytes = math.prod(dims) * np.dtype(dtype).itemsize
    if nbytes > _MAX_SECRET_BYTES:
        raise ValueError(f"{caller}(shape): {shape!r} of {np.dtype(dtype)} is {nbytes} bytes, more than the "
                         f"largest secret block ({_MAX_SECRET_BYTES} bytes)")


def secret_empty(shape: Any, dtype: Any = float, *, strict: bool = True) -> np.ndarray:
    """np.empty in secret memory (the contents are zeros: a fresh mapping).
    A bad shape (negative, too big, not ints) is a ValueError naming it."""
    _check_shape(shape, dtype, "secret_empty")
    with secret(strict=strict):
        return np.empty(shape, dtype)


def secret_zeros(shape: Any, dtype: Any = float, *, strict: bool = True) -> np.ndarray:
    """np.zeros in secret memory.  A bad shape is a ValueError naming it."""
    _check_shape(shape, dtype, "secret_zeros")
    with secret(strict=strict):
        return np.zeros(shape, dtype)


def secret_info(array: np.ndarray) -> SecretInfo | None:
    """The protections of a secret array (or of the secret array a view
    looks into); None when its memory is not secret."""
    address = data_address(array, "secret_info")
    raw = None if address is None else _core.secret_info(address)
    if raw is None:
        return None
    bits = raw["protections"]
    flags = {name: bool(bits & bit) for name, bit in _core.SECRET_PROTECTIONS.items()}
    return SecretInfo(nbytes=raw["data_bytes"], mapped_bytes=raw["mapped_bytes"], **flags)


def is_secret(array: np.ndarray) -> bool:
    """Whether the array's memory (its base's, for a view) is secret memory."""
    return secret_info(array) is not None
