"""The priority lane's schedule (operators/lane_schedule.py): when lane parts go, how large
standard parts are while the lane is busy, and which commit slots a part may take."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from operators.lane_schedule import (
    LANE_ACTIVE_S,
    LANE_BOARD_INTERVAL_S,
    LANE_MIN_PART,
    LaneSchedule,
    lane_blocked,
    no_standard_slot,
    slot_taken,
    standard_cap,
    standard_in_flight,
)

LIMIT = 2  # sinks/commit_pipeline.py's IN_FLIGHT_LIMIT
in_flight_flags = st.lists(st.booleans(), max_size=4)


def test_the_lane_is_busy_for_a_while_after_it_last_gave_items():
    schedule = LaneSchedule()
    assert not schedule.busy(0.0)  # never read from: never busy
    schedule.read(3, 100.0)
    assert schedule.fresh == 3
    assert schedule.busy(100.0) and schedule.busy(100.0 + LANE_ACTIVE_S - 0.01)
    assert not schedule.busy(100.0 + LANE_ACTIVE_S)
    schedule.read(2, 105.0)
    assert schedule.fresh == 5 and schedule.busy(106.0)
    schedule.flushed()
    assert schedule.fresh == 0 and schedule.busy(106.0)  # a flush does not end the busy spell


def test_lane_parts_alternate_with_standard_parts():
    schedule = LaneSchedule()
    assert not schedule.may_go(fresh=10, in_flight=[])  # nothing of the lane waits
    schedule.read(1, 0.0)
    assert schedule.may_go(fresh=10, in_flight=[False, False])  # a standard part went (the start counts as one)
    schedule.handed_over(lane=True)
    assert not schedule.may_go(fresh=10, in_flight=[False, True])  # a lane part is the newest in flight
    assert not schedule.may_go(fresh=10, in_flight=[False])  # no standard part went since the last lane part
    schedule.handed_over(lane=False)
    assert schedule.may_go(fresh=10, in_flight=[False])
    assert not schedule.may_go(fresh=10, in_flight=[False, True])  # one lane part at the tail at most


def test_with_no_standard_work_lane_items_go_at_once():
    schedule = LaneSchedule()
    schedule.read(4, 0.0)
    schedule.handed_over(lane=True)
    schedule.read(1, 0.1)
    schedule.handed_over(lane=False)
    schedule.handed_over(lane=True)  # the last part handed over was the lane's ...
    assert schedule.may_go(fresh=5, in_flight=[])  # ... but nothing standard waits or commits
    assert not schedule.may_go(fresh=6, in_flight=[])  # a standard item waits: it goes first
    assert not schedule.may_go(fresh=5, in_flight=[False])  # a standard part commits: the lane rides on it next


def test_lane_items_board_a_part_that_takes_riders_whenever_they_wait():
    schedule = LaneSchedule()
    assert not schedule.may_go(fresh=10, in_flight=[False, False], boardable=True)  # nothing of the lane waits
    schedule.read(1, 0.0)
    schedule.handed_over(lane=True)  # no standard part went since the last lane items ...
    assert not schedule.may_go(fresh=10, in_flight=[False, False])
    assert schedule.may_go(fresh=10, in_flight=[False, False], boardable=True, now=5.0)  # ... riding costs none
    schedule.boarded_at(5.0)
    assert not schedule.may_go(fresh=10, in_flight=[False, False], boardable=True, now=5.0 + LANE_BOARD_INTERVAL_S / 2)
    assert schedule.may_go(fresh=10, in_flight=[False, False], boardable=True, now=5.0 + 2 * LANE_BOARD_INTERVAL_S)


@given(st.integers(0, 50), st.integers(0, 50), in_flight_flags, st.booleans())
def test_a_lane_part_never_goes_without_lane_items_or_behind_another_lane_part(lane_fresh, fresh, in_flight, since):
    schedule = LaneSchedule(fresh=lane_fresh, standard_since_lane=since)
    if schedule.may_go(fresh, in_flight):
        assert lane_fresh > 0
        assert not (in_flight and in_flight[-1])
        assert since or (fresh <= lane_fresh and all(in_flight))


def test_standard_parts_shrink_while_the_lane_is_busy():
    assert standard_cap(5000, 2500, 0.35, 0.001, busy=False) == 5000
    assert standard_cap(5000, 2500, 0.35, 0.0, busy=True) == 2500  # not measured yet: the lane's batch size
    assert standard_cap(5000, 2500, 0.35, 0.0001, busy=True) == 2500  # 3,500 would commit in time: capped
    assert standard_cap(5000, 2500, 0.25, 2 ** -13, busy=True) == 2048  # what commits in the target time
    assert standard_cap(5000, 2500, 0.35, 0.01, busy=True) == LANE_MIN_PART  # a slow database: never below it
    assert standard_cap(300, 2500, 0.35, 0.01, busy=True) == 300  # never above the batch size


@given(st.integers(1, 10_000), st.integers(1, 10_000), st.floats(0.01, 5.0),
       st.floats(0.0, 0.1, allow_subnormal=False), st.floats(0.0, 0.1, allow_subnormal=False))
def test_the_standard_cap_stays_in_its_bounds_and_falls_as_commits_slow(
        batch_size, lane_batch_size, target, seconds, slower_by):
    cap = standard_cap(batch_size, lane_batch_size, target, seconds, busy=True)
    assert min(batch_size, lane_batch_size, LANE_MIN_PART) <= cap <= min(batch_size, lane_batch_size)
    if seconds:
        assert standard_cap(batch_size, lane_batch_size, target, seconds + slower_by, busy=True) <= cap
    assert standard_cap(batch_size, lane_batch_size, target, seconds, busy=False) == batch_size


def test_lane_parts_take_no_standard_slot():
    assert standard_in_flight([]) == 0
    assert standard_in_flight([True, False, True]) == 1
    assert lane_blocked([False, False], LIMIT, may_go=False)
    assert not lane_blocked([False, False], LIMIT, may_go=True)
    assert not lane_blocked([False, True], LIMIT, may_go=False)


def test_a_standard_part_that_finds_no_slot_is_held_while_the_lane_is_read():
    assert no_standard_slot([False, False], LIMIT, patient=True, lane_part=False)
    assert not no_standard_slot([False, False], LIMIT, patient=True, lane_part=True)  # a lane part waits instead
    assert not no_standard_slot([False, False], LIMIT, patient=False, lane_part=False)  # without the lane: it waits
    assert not no_standard_slot([False, True, True], LIMIT, patient=True, lane_part=False)


def test_a_lane_part_may_take_one_slot_more():
    assert slot_taken([False, False], LIMIT, patient=False, lane_part=False)
    assert not slot_taken([False, False], LIMIT, patient=False, lane_part=True)
    assert slot_taken([False, False, True], LIMIT, patient=False, lane_part=True)
    assert not slot_taken([False, True], LIMIT, patient=True, lane_part=False)  # only standard parts count
    assert slot_taken([False, False], LIMIT, patient=True, lane_part=False)
    assert not slot_taken([False, False, True], LIMIT, patient=True, lane_part=True)


@given(in_flight_flags, st.booleans(), st.booleans())
def test_a_part_waits_behind_at_most_the_limit_and_a_lane_part_one_more(in_flight, patient, lane_part):
    counted = standard_in_flight(in_flight) if patient else len(in_flight)
    assert slot_taken(in_flight, LIMIT, patient, lane_part) == (counted >= LIMIT + lane_part)
    if no_standard_slot(in_flight, LIMIT, patient, lane_part):
        assert slot_taken(in_flight, LIMIT, patient, lane_part)  # held only where it would have to wait
