"""Benchmark patterns.  Each module exposes PATTERN (its name), SIZES (default
sizes in bytes) and run(size, rounds, ideal) -> list of seconds per round."""
from . import fill

PATTERNS = {fill.PATTERN: fill}
