"""`Backoff`: how long a retry loop waits after each failure: exponential, capped, and jittered.

Jitter matters because every replica sees the same outage: without it they all retry in step and
hit the recovering API server (or Redis) together. Each wait is drawn uniformly between the minimum
and the current ceiling ("full jitter" with a floor), and the ceiling doubles up to the maximum.
"""

from __future__ import annotations

import random
from collections.abc import Callable

# (low, high) -> a number in [low, high]; `random.uniform`, or a fixed choice in tests.
Uniform = Callable[[float, float], float]


class Backoff:
    """The waits of one retry loop: `next()` after a failure, `reset()` after a success."""

    def __init__(self, min_s: float, max_s: float, *, factor: float = 2.0, uniform: Uniform = random.uniform) -> None:
        if not 0 < min_s <= max_s or factor < 1:
            raise ValueError(f"a backoff needs 0 < min_s <= max_s and factor >= 1, not {min_s}, {max_s}, {factor}")
        self.min_s, self.max_s, self.factor = min_s, max_s, factor
        self.uniform = uniform
        self.ceiling_s = min_s  # the longest the next wait may be

    def next(self) -> float:
        """The wait before the next attempt, in [min_s, max_s]; each call raises the ceiling."""
        drawn = self.uniform(self.min_s, self.ceiling_s)
        self.ceiling_s = min(self.ceiling_s * self.factor, self.max_s)
        return min(max(drawn, self.min_s), self.max_s)  # bounded whatever the random source returns

    def reset(self) -> None:
        """After a success: the next failure starts from the minimum again."""
        self.ceiling_s = self.min_s
