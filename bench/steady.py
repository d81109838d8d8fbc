"""The steady rate: a component's items over the span from its first output to its last.

The wall-time rate of a row counts its start-up (a JVM, a Bytewax worker, the first
connection and poll) as part of the work; the steady rate leaves it out. The span
runs from the first output (the pipeline's first committed batch, the peer's first
row written, the limit's and the naive path's first commit, the raw consumer's first
record) to the last one. All items are counted over it, those of the first output
too, so it flatters every row by the same one output in N (one batch in 200 at the
default run: 0.5 %).
"""

from __future__ import annotations

import time
from dataclasses import dataclass


def steady_seconds(first: float | None, last: float | None) -> float | None:
    """`last - first`, or None when there is no span to measure: fewer than two outputs at
    different moments (a run of one batch has no steady rate, only a wall-time one)."""
    if first is None or last is None or last <= first:
        return None
    return last - first


def steady_rate(items: int, seconds: float | None) -> float | None:
    """Items per second over the steady span, None without one."""
    return items / seconds if seconds else None


class OutputClock:
    """Marks the moment of each output (a commit, a record); `seconds` is the first-to-last span."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.last: float | None = None

    def mark(self, moment: float | None = None) -> None:
        now = time.perf_counter() if moment is None else moment
        if self.first is None:
            self.first = now
        self.last = now

    @property
    def seconds(self) -> float | None:
        return steady_seconds(self.first, self.last)


@dataclass(frozen=True)
class Timing:
    """A phase's wall time and its steady span (None: fewer than two outputs)."""

    seconds: float
    steady_seconds: float | None
