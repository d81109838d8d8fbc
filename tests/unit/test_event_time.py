"""Event time (what the dependency timeout is measured in) comes from Kafka timestamps,
which producers set. With `event_time_lead_s` set, the job caps a chunk's event time
at its read time plus the lead (dataflows/aggregator.py): a record stamped well after
it was read then moves its partition's event time only that far."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mutagg.settings import DEFAULT_REGISTRY, load_settings
from operators.decode import decode_chunk, event_time_cap
from operators.sequencer import Sequencer
from operators.strategies import CUSTOM_STRATEGIES
from schemas.errors import ConfigError
from schemas.mutation import RawMessage, Reason
from schemas.registry import load_registry

REGISTRY = load_registry(DEFAULT_REGISTRY, custom_strategies=CUSTOM_STRATEGIES)
READ_MS = 1_795_700_000_000  # 2026-11-26
YEAR_MS = 366 * 86_400_000
TIMEOUT_MS = 600_000
LEAD_MS = 60_000
CAP = READ_MS + LEAD_MS


def record(partition: int, offset: int, mutation_id: str, kafka_ms: int, dependencies=()) -> RawMessage:
    document = {
        "id": mutation_id, "edge_node_id": "van-1", "entity_type": "customer", "entity_id": mutation_id,
        "operation_type": "CREATE", "attributes": {"name": "A"}, "base_version": 0,
        "timestamp": "2026-11-26T00:00:00Z", "priority": 5, "dependencies": list(dependencies),
    }
    key = f"customer:{mutation_id}".encode()
    return RawMessage("in", partition, offset, key, orjson.dumps(document), kafka_ms)


@given(st.lists(st.integers(-1, CAP), min_size=1, max_size=20))
def test_timestamps_up_to_the_cap_are_event_time_as_they_are(stamps):
    messages = [record(0, i, f"m{i}", ms) for i, ms in enumerate(stamps)]
    chunk = decode_chunk("in", 0, messages, REGISTRY, 1 << 20, event_time_cap_ms=CAP)
    assert chunk.event_time_ms == max(stamps)
    assert decode_chunk("in", 0, messages, REGISTRY, 1 << 20).event_time_ms == max(stamps)  # no cap


def test_a_timestamp_far_ahead_of_reading_moves_event_time_only_to_the_cap():
    messages = [record(0, 0, "m0", READ_MS - 5), record(0, 1, "m1", READ_MS + YEAR_MS)]
    chunk = decode_chunk("in", 0, messages, REGISTRY, 1 << 20, event_time_cap_ms=CAP)
    assert len(chunk.mutations) == 2  # the records themselves are valid: only event time is bounded
    assert chunk.event_time_ms == CAP
    assert decode_chunk("in", 0, messages, REGISTRY, 1 << 20).event_time_ms == READ_MS + YEAR_MS  # off: the log


def test_the_cap_is_the_read_time_plus_the_lead_and_none_when_off():
    assert event_time_cap(READ_MS, 60.0) == CAP
    assert event_time_cap(READ_MS, 0.0) is None
    assert event_time_cap(None, 60.0) is None  # a heartbeat: no records read


def test_an_edge_clock_a_year_ahead_does_not_time_out_a_waiting_dependency():
    """As the apply step feeds the sequencer: the mutations, then each chunk's event time."""
    sequencer = Sequencer(dependency_timeout_ms=TIMEOUT_MS)

    def read(partition: int, raw: RawMessage, read_ms: int):
        return decode_chunk("in", partition, [raw], REGISTRY, 1 << 20, event_time_cap_ms=event_time_cap(read_ms, 60))

    chunks = [read(0, record(0, 0, "waits", READ_MS, ["late"]), READ_MS)]
    # The van with the wrong clock writes to every partition a moment later.
    chunks += [read(p, record(p, 1, f"van{p}", READ_MS + YEAR_MS), READ_MS + 1) for p in range(4)]
    for chunk in chunks:
        sequencer.add(chunk.mutations, observe=False)
        sequencer.observe(chunk.topic, chunk.partition, chunk.event_time_ms)
    release = sequencer.release()
    assert release.rejected == []
    assert [m.id for m in sequencer.waiting] == ["waits"]
    # Ten minutes of real event time later (and one millisecond: past the limit), the timeout does apply.
    for p in range(4):
        sequencer.observe("in", p, READ_MS + TIMEOUT_MS + 1)
    assert [(m.id, r) for m, r in sequencer.release().rejected] == [("waits", Reason.MISSING_DEPENDENCY)]


def test_the_lead_is_a_setting_off_by_default():
    assert load_settings(environ={}).event_time_lead_s == 0
    assert load_settings(environ={"MUTAGG_EVENT_TIME_LEAD_S": "60"}).event_time_lead_s == 60
    with pytest.raises(ConfigError, match="event_time_lead_s"):
        load_settings(environ={"MUTAGG_EVENT_TIME_LEAD_S": "-1"})
