"""The apply step's window: what was read since the last flush, and when the next flush is due.

Pure: times and counts in, the flush time and the next wake-up (Bytewax's `notify_at`) out. The
apply step (dataflows/apply.py) passes the clock and what the sequencer and the commit pipeline
hold; nothing here reads them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

WAITING_CHECK = timedelta(milliseconds=500)  # held mutations: dependency timeouts are checked this often
IN_FLIGHT_POLL = timedelta(milliseconds=10)  # a part in flight is looked in on this often: its acks wait for it


@dataclass(slots=True)
class Window:
    """What was read since the last flush commits once the window closes (`closes`: `length` after
    it opened); `flush_at` is when the step asked to be woken to flush (None: not asked)."""

    length: timedelta
    fresh: int = 0  # items of both topics read since the last full flush
    closes: datetime | None = None
    flush_at: datetime | None = None

    def open(self, now: datetime) -> None:
        """Items were read at `now`: the window closes `length` later, unless it is open already."""
        if self.closes is None:
            self.closes = now + self.length

    def full(self, size: int) -> bool:
        """At least `size` items were read: a part's worth flushes without waiting for the window."""
        return self.fresh >= size

    def due(self, now: datetime) -> bool:
        """The flush the step asked to be woken for is due at `now`."""
        return self.flush_at is not None and self.flush_at <= now

    def flushed(self) -> None:
        """A full flush took everything read: the next item opens a new window."""
        self.closes = None
        self.flush_at = None
        self.fresh = 0

    def schedule(self, now: datetime, lane_may_go: bool, rejections: bool, waiting: bool) -> datetime | None:
        """Set and return when the next flush is due: at once if the priority lane may go; when
        the window closes if items or rejections wait to be committed (`rejections`); for what
        waits for a dependency or an unpublished event time (`waiting`), every window but at
        most every WAITING_CHECK, keeping a time already set; else never."""
        if lane_may_go:
            self.flush_at = now
        elif self.fresh or rejections:
            self.flush_at = self.closes or now
        elif waiting:
            self.flush_at = self.flush_at or now + max(self.length, WAITING_CHECK)
        else:
            self.flush_at = None
        return self.flush_at

    def wake_at(self, now: datetime, in_flight: bool, blocked: bool) -> datetime | None:
        """When the step is woken next (after `schedule`): at the flush time; with parts `in_flight`
        within IN_FLIGHT_POLL too (their acks should not wait for the next flush), and only then if
        nothing may go before a slot frees (`blocked`: an earlier flush would only spin)."""
        if not in_flight:
            return self.flush_at
        poll = now + IN_FLIGHT_POLL
        if blocked:
            return poll
        return poll if self.flush_at is None else min(poll, self.flush_at)
