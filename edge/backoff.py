"""Exponential backoff with jitter for resending while the network is down.

The ceiling doubles (by `factor`) per consecutive failure up to `cap_s`; the delay
is drawn from the upper `jitter` share of the ceiling, so a fleet of nodes that
lost the network together does not come back in lockstep.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    base_s: float = 0.5
    factor: float = 2.0
    cap_s: float = 60.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if not (self.base_s > 0 and self.factor >= 1 and self.cap_s >= self.base_s and 0 <= self.jitter <= 1):
            raise ValueError(f"invalid backoff {self}")

    def ceiling(self, attempt: int) -> float:
        """Largest delay after `attempt` consecutive failures (0 = the first)."""
        if attempt <= 0:
            return self.base_s
        if self.factor == 1:
            return self.base_s
        # Compare exponents, not powers: factor ** attempt overflows for long outages.
        if attempt >= math.log(self.cap_s / self.base_s, self.factor):
            return self.cap_s
        return min(self.cap_s, self.base_s * self.factor**attempt)

    def delay(self, attempt: int, unit: float) -> float:
        """The delay for `attempt`, with `unit` in [0, 1) choosing within the jitter band."""
        ceiling = self.ceiling(attempt)
        return ceiling * (1.0 - self.jitter + self.jitter * min(max(unit, 0.0), 1.0))

    def schedule(self, attempts: int, rng: random.Random) -> list[float]:
        return [self.delay(attempt, rng.random()) for attempt in range(attempts)]
