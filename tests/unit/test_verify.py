"""`mutagg verify`'s pure parts: unaccounted offset runs and the --since argument."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mutagg.verify_checks import Scope, unaccounted
from mutagg.verify_cmd import since_moment


def test_runs_between_accounted_offsets_and_recorded_losses():
    assert unaccounted(0, 10, [0, 1, 4, 9], [(6, 8)]) == [(2, 4), (5, 6), (8, 9)]
    assert unaccounted(0, 5, [], []) == [(0, 5)]
    assert unaccounted(3, 6, [0, 1, 2, 3, 4, 5, 6, 7], []) == []
    assert unaccounted(0, 4, [], [(0, 100)]) == []
    assert unaccounted(5, 5, [], []) == []


@given(st.integers(0, 50), st.integers(0, 50), st.sets(st.integers(0, 120)),
       st.lists(st.tuples(st.integers(0, 110), st.integers(1, 10)), max_size=4))
def test_runs_are_exactly_the_uncovered_offsets(start, length, offsets, losses):
    end = start + length
    ranges = [(a, a + n) for a, n in losses]
    covered = set(offsets) | {o for a, b in ranges for o in range(a, b)}
    runs = unaccounted(start, end, sorted(offsets), ranges)
    flat = [o for a, b in runs for o in range(a, b)]
    assert flat == [o for o in range(start, end) if o not in covered]
    assert all(a < b for a, b in runs) and all(b1 < a2 for (_, b1), (a2, _) in pairwise(runs))


def test_since_takes_durations_and_timestamps():
    now = datetime(2026, 1, 10, 12, tzinfo=UTC)
    assert since_moment("7d", now) == now - timedelta(days=7)
    assert since_moment("36h", now) == now - timedelta(hours=36)
    assert since_moment("2026-01-01") == datetime(2026, 1, 1, tzinfo=UTC)
    assert since_moment("2026-01-01T05:00:00+02:00").utcoffset() == timedelta(hours=2)
    with pytest.raises(argparse.ArgumentTypeError):
        since_moment("last week")


def test_only_offsets_below_the_resume_point_are_settled():
    scope = Scope("in", {0: 10}, None)
    assert scope.settled(0, 9) and not scope.settled(0, 10)
    assert not scope.settled(1, 0) and not scope.settled(None, 1) and not scope.settled(0, None)
