"""The state a depot sees of the central job (edge/central.py), from the job's records
(mutagg/central_state.py): normal / behind / overloaded, unknown when nothing fresh is heard."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.central import (
    CentralState,
    InvalidStateRecord,
    Thresholds,
    classify,
    explain_central,
    parse_state_record,
)
from mutagg.central_state import state_record
from mutagg.refresher import LagSnapshot

LIMITS = Thresholds(behind_after_s=60.0, overloaded_after_s=600.0, silence_s=30.0)
NOW = 1_800_000_000.0


def published(delay_by_partition: dict[int, float | None], throttle=(False, []), at: float = NOW, process: int = 0):
    """A record exactly as the job publishes it, read back as the edge reads it."""
    oldest = {p: int((at - d) * 1000) for p, d in delay_by_partition.items() if d}
    unknown = frozenset(p for p, d in delay_by_partition.items() if d is None)
    snapshot = LagSnapshot(at, tuple(sorted(delay_by_partition)), oldest, unknown)
    value = orjson.dumps(state_record(snapshot, at, throttle, process, 10.0))
    return parse_state_record(f"mutagg/{process}".encode(), value)


@given(st.dictionaries(st.integers(0, 11), st.floats(0, 10_000, allow_nan=False), min_size=1, max_size=12))
def test_the_state_follows_the_largest_partition_delay(delays):
    view = classify([(published(delays), 100.0)], NOW, 100.0, LIMITS)
    worst = max(delays.values())
    assert view.delay_s == pytest.approx(worst, abs=0.01)
    expected = (CentralState.OVERLOADED if view.delay_s >= 600 else
                CentralState.BEHIND if view.delay_s >= 60 else CentralState.NORMAL)
    assert view.state is expected


def test_a_throttled_job_is_overloaded_whatever_its_delay():
    view = classify([(published({0: 1.0}, (True, ["replication_lag"])), 0.0)], NOW, 0.0, LIMITS)
    assert (view.state, view.throttled, view.reasons) == (CentralState.OVERLOADED, True, ("replication_lag",))
    assert "throttled: replication_lag" in explain_central(view, 3)
    assert "3 changes are queued, not lost" in explain_central(view, 3)


def test_processes_combine_to_the_worst_and_a_lag_of_unknown_age_is_behind():
    records = [(published({0: 5.0}, process=0), 0.0), (published({1: 700.0}, process=1), 0.0)]
    assert classify(records, NOW, 0.0, LIMITS).state is CentralState.OVERLOADED
    view = classify([(published({0: 5.0, 1: None}), 0.0)], NOW, 0.0, LIMITS)
    assert (view.state, view.delay_s) == (CentralState.BEHIND, None)


def test_nothing_fresh_heard_is_unknown():
    record = published({0: 700.0})
    assert classify([], NOW, 0.0, LIMITS).state is CentralState.UNKNOWN
    # Arrived too long ago (the job stopped publishing, or this node is offline) ...
    assert classify([(record, 0.0)], NOW, 31.0, LIMITS).state is CentralState.UNKNOWN
    # ... or just read, but published long ago (a stopped job's last record, read at start).
    assert classify([(published({0: 700.0}, at=NOW - 31), 0.0)], NOW, 0.0, LIMITS).state is CentralState.UNKNOWN
    assert classify([(record, 0.0)], NOW, 30.0, LIMITS).state is CentralState.OVERLOADED
    assert "kept here" in explain_central(classify([], NOW, 0.0, LIMITS), 2)


def test_records_that_are_not_state_records_are_refused():
    assert parse_state_record(b"mutagg/0", None) is None  # a tombstone: that process is gone
    for value in (b"nope", b"[]", b'{"published_at": "x", "interval_s": 10}',
                  b'{"published_at": 1, "interval_s": 10, "partitions": []}'):
        with pytest.raises(InvalidStateRecord):
            parse_state_record(b"mutagg/0", value)


def test_thresholds_must_be_ordered():
    with pytest.raises(ValueError):
        Thresholds(behind_after_s=700, overloaded_after_s=600)
