"""Benchmark patterns.  Each module exposes PATTERN (its name), SIZES (default
sizes in bytes) and run(size, rounds, ideal) -> list of seconds per round."""
from . import fill, first_touch, small, zeros

PATTERNS = {p.PATTERN: p for p in (fill, zeros.dense, zeros.sparse, first_touch, small)}
