"""The priority lane's schedule (README "Priority lane"): when the lane's items go, and how large
standard parts are while it is busy.

Pure: counts, monotonic times and the lane flags of the parts in flight (oldest first) in,
decisions out. The apply step (dataflows/apply.py) reads the clock and the commit pipeline and
passes them; nothing here waits or commits.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

LANE_ACTIVE_S = 2.0  # the priority lane counts as busy this long after it last gave mutations
LANE_MIN_PART = 500  # standard parts are never made smaller than this for the lane
# Lane items board a standard part at most this often: each boarding is a lane release, which reads
# the whole waiting room (BENCHMARKS "Critical changes overtake a backlog"); a rider commits when
# the part it boards does, so boarding later within its wait costs it nothing.
LANE_BOARD_INTERVAL_S = 0.05


@dataclass(slots=True)
class LaneSchedule:
    """What the lane did lately: items read since its last flush, when it last gave any, and
    whether a standard part was handed over since the last lane part."""

    fresh: int = 0  # lane items admitted since its last flush
    seen: float = float("-inf")  # monotonic time the lane last gave items
    standard_since_lane: bool = True  # a standard part was handed over since the last lane part
    boarded: float = float("-inf")  # monotonic time lane items last boarded a standard part

    def read(self, count: int, now: float) -> None:
        """`count` (> 0) items were read from the lane at monotonic time `now`."""
        self.fresh += count
        self.seen = now

    def busy(self, now: float) -> bool:
        """The lane gave items less than LANE_ACTIVE_S before monotonic time `now`."""
        return now - self.seen < LANE_ACTIVE_S

    def flushed(self) -> None:
        """A flush took the lane's items that may go (the others wait for a later release)."""
        self.fresh = 0

    def boarded_at(self, now: float) -> None:
        """Lane items boarded a standard part at monotonic time `now`."""
        self.boarded = now
        self.handed_over(lane=True)

    def handed_over(self, lane: bool) -> None:
        """A part was handed to the commit thread: a lane part (`lane`: also lane items that boarded
        a standard part) or a standard one."""
        self.standard_since_lane = not lane

    def may_go(self, fresh: int, in_flight: Sequence[bool], boardable: bool = False,
               now: float = float("inf")) -> bool:
        """Lane items wait and the newest part in flight takes riders (`boardable`: they commit in
        its transaction, right after it, at no fixed cost of their own), at most every
        LANE_BOARD_INTERVAL_S (monotonic time `now`); or, while standard parts commit, one went
        since the last lane part:
        lane and standard parts alternate, so each lane part (a transaction, an audit export,
        acks: a fixed cost) rides on a standard one's time whatever the load; lane items read
        meanwhile join the next one. With no standard work at all, lane items go at once.

        `fresh`: items of both topics read since the last full flush; `in_flight`: the lane
        flags of the parts in flight, oldest first. Never while a lane part is the newest in
        flight: one lane part at the tail of the commit queue at most."""
        if not self.fresh:
            return False
        if boardable:
            return now - self.boarded >= LANE_BOARD_INTERVAL_S
        if in_flight and in_flight[-1]:
            return False
        idle = fresh <= self.fresh and all(in_flight)  # no standard work
        return self.standard_since_lane or idle


def standard_in_flight(in_flight: Iterable[bool]) -> int:
    """Standard parts among the parts in flight (their lane flags). Lane parts (small, at most one
    between two standard ones) take no slot of theirs, or a lane part at the head of the queue
    would hold the backlog back."""
    return sum(not lane for lane in in_flight)


def standard_cap(batch_size: int, lane_batch_size: int, lane_commit_target_s: float,
                 seconds_per_item: float, busy: bool) -> int:
    """The size of standard parts: while the lane is `busy`, what commits in about
    `lane_commit_target_s` at the last standard parts' `seconds_per_item` (0: not measured yet),
    at most `lane_batch_size` and at least LANE_MIN_PART (never above `batch_size`); else
    `batch_size`. Smaller parts keep the two a lane part may wait behind short."""
    if not busy:
        return batch_size
    cap = min(batch_size, lane_batch_size)
    if seconds_per_item:
        cap = min(cap, max(LANE_MIN_PART, int(min(cap, lane_commit_target_s / seconds_per_item))))  # no int(inf)
    return cap


def lane_blocked(in_flight: Iterable[bool], limit: int, may_go: bool) -> bool:
    """Nothing may go before a slot frees: every standard slot (`limit`) is taken and the lane may
    not go (`may_go`). Looking in on the parts in flight sooner than usual would only spin."""
    return standard_in_flight(in_flight) >= limit and not may_go


def no_standard_slot(in_flight: Iterable[bool], limit: int, patient: bool, lane_part: bool) -> bool:
    """While the lane is read (`patient`), a standard part that finds every slot taken is held
    for a later flush: the worker reads the lane on meanwhile instead of waiting."""
    return patient and not lane_part and standard_in_flight(in_flight) >= limit


def slot_taken(in_flight: Sequence[bool], limit: int, patient: bool, lane_part: bool) -> bool:
    """A part must wait for a part in flight to be collected before it is handed over. While the
    lane is read (`patient`) only standard parts count; a lane part (`lane_part`) may take one
    slot more: it waits behind at most the two batches in flight."""
    taken = standard_in_flight(in_flight) if patient else len(in_flight)
    return taken >= limit + (1 if lane_part else 0)
