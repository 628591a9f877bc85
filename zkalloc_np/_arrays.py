"""Where an object's data lives: the buffer a view's data belongs to, the
block of a bytes or bytearray (a leaf module: numpy only)."""
from __future__ import annotations

import numpy as np


def data_owner(array: np.ndarray) -> np.ndarray | None:
    """The array whose buffer `array` views (itself if it owns its data)."""
    while not array.flags.owndata:
        base = array.base
        if not isinstance(base, np.ndarray):
            return None   # a view of bytes, mmap, another buffer protocol object
        array = base
    return array


def data_address(array: np.ndarray, caller: str) -> int | None:
    """Address of the buffer an array's data lives in (its base's, for a
    view); None when no numpy array owns it.  TypeError naming `caller` for
    anything but an ndarray."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{caller}() takes a numpy.ndarray, not {type(array).__name__}")
    owner = data_owner(array)
    return None if owner is None else owner.__array_interface__["data"][0]


def block_address(obj: object, caller: str) -> int | None:
    """Address of the allocation holding obj's data: an ndarray's
    buffer (its base's, for a view; a bytes' it views), a ``bytes`` object
    itself (CPython allocates header and data as one block), a
    ``bytearray``'s buffer.  None when no such block can be named.
    TypeError naming `caller` for anything else."""
    if isinstance(obj, np.ndarray):
        owner = data_owner(obj)
        if owner is not None:
            return int(owner.__array_interface__["data"][0])
        base = obj.base
        while isinstance(base, (np.ndarray, memoryview)):
            base = base.base if isinstance(base, np.ndarray) else base.obj
        return block_address(base, caller) if isinstance(base, (bytes, bytearray)) else None
    if isinstance(obj, bytes):
        return id(obj)
    if isinstance(obj, bytearray):
        return int(np.frombuffer(obj, np.uint8).__array_interface__["data"][0]) if len(obj) else None
    raise TypeError(f"{caller}() takes a numpy.ndarray, bytes or bytearray, not {type(obj).__name__}")
