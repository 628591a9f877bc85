"""Where an array's data lives: the buffer a view's data belongs to (a leaf
module: numpy only)."""
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
