"""small: arrays below min_bytes, which zkalloc hands to numpy's own
allocator.  Measures what the routing costs: 1000 expressions of two small
temporaries per round.  No ideal variant (every allocator does the same work)."""
from __future__ import annotations

import numpy as np

from ._pattern import Body, Pattern

EXPRESSIONS = 1000


def prepare(size: int, ideal: bool = False) -> Body:
    """The body of one round."""
    n = size // 8

    def body() -> None:
        for _ in range(EXPRESSIONS):
            a = np.ones(n)
            b = a + 1.0
            del a, b
    return body


PATTERN = Pattern("small", (800, 8192), prepare, test_size=800)
