"""The apply step's window (operators/window.py): when a flush is due, and when Bytewax wakes
the step next."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from operators.window import IN_FLIGHT_POLL, WAITING_CHECK, Window

T0 = datetime(2026, 12, 7, tzinfo=UTC)
MS = timedelta(milliseconds=1)
times = st.integers(0, 5_000).map(lambda ms: T0 + ms * MS)
maybe_times = st.none() | times


def test_the_window_opens_once_and_a_flush_closes_it():
    window = Window(200 * MS)
    window.open(T0)
    window.open(T0 + 50 * MS)  # open already: it keeps its closing time
    assert window.closes == T0 + 200 * MS
    window.fresh = 7
    window.flush_at = T0
    assert window.full(7) and not window.full(8)
    window.flushed()
    assert (window.fresh, window.closes, window.flush_at) == (0, None, None)
    window.open(T0 + 300 * MS)
    assert window.closes == T0 + 500 * MS


def test_a_flush_is_due_once_its_time_has_come():
    window = Window(200 * MS)
    assert not window.due(T0)  # not asked for
    window.flush_at = T0 + 10 * MS
    assert not window.due(T0 + 9 * MS)
    assert window.due(T0 + 10 * MS) and window.due(T0 + 11 * MS)


def test_the_flush_time_follows_what_waits():
    window = Window(200 * MS)
    assert window.schedule(T0, lane_may_go=False, rejections=False, waiting=False) is None
    assert window.schedule(T0, lane_may_go=True, rejections=False, waiting=False) == T0  # the lane: at once
    window.flush_at = None
    window.fresh = 1
    assert window.schedule(T0, False, False, False) == T0  # read, but no window open yet: now
    window.open(T0)
    assert window.schedule(T0 + 5 * MS, False, False, False) == T0 + 200 * MS  # when the window closes
    window.flushed()
    assert window.schedule(T0, False, rejections=True, waiting=False) == T0  # rejections alone go too
    window.flushed()
    assert window.schedule(T0, False, False, waiting=True) == T0 + WAITING_CHECK  # held: checked every 500 ms
    assert window.schedule(T0 + 100 * MS, False, False, waiting=True) == T0 + WAITING_CHECK  # kept, not pushed on
    long = Window(2000 * MS)
    assert long.schedule(T0, False, False, waiting=True) == T0 + 2000 * MS  # a longer window checks less often


@given(times, maybe_times, maybe_times, st.integers(0, 3), st.booleans(), st.booleans(), st.booleans())
def test_the_step_is_woken_by_its_flush_time_or_to_look_in_on_parts_in_flight(
        now, flush_at, closes, fresh, lane_may_go, rejections, waiting):
    window = Window(200 * MS, fresh, closes, flush_at)
    scheduled = window.schedule(now, lane_may_go, rejections, waiting)
    assert scheduled == window.flush_at
    if lane_may_go:
        assert scheduled == now
    elif fresh or rejections:
        assert scheduled == (closes or now)
    elif waiting:
        assert scheduled == (flush_at or now + max(window.length, WAITING_CHECK))
    elif not (fresh or rejections or waiting):
        assert scheduled is None
    assert window.wake_at(now, in_flight=False, blocked=False) == scheduled
    assert window.wake_at(now, in_flight=False, blocked=True) == scheduled
    woken = window.wake_at(now, in_flight=True, blocked=False)
    assert woken == (now + IN_FLIGHT_POLL if scheduled is None else min(now + IN_FLIGHT_POLL, scheduled))
    assert window.wake_at(now, in_flight=True, blocked=True) == now + IN_FLIGHT_POLL  # no earlier: it would spin
