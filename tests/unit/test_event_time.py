"""Event time (what the dependency timeout is measured in) comes from Kafka timestamps,
which producers set: a record stamped well after the time it was read moves its
partition's event time only to that time plus `EVENT_TIME_LEAD_MS`."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from mutagg.settings import DEFAULT_REGISTRY
from operators.decode import EVENT_TIME_LEAD_MS, decode_chunk
from operators.sequencer import Sequencer
from operators.strategies import CUSTOM_STRATEGIES
from schemas.mutation import RawMessage, Reason
from schemas.registry import load_registry

REGISTRY = load_registry(DEFAULT_REGISTRY, custom_strategies=CUSTOM_STRATEGIES)
READ_MS = 1_795_700_000_000  # 2026-11-26
YEAR_MS = 366 * 86_400_000
TIMEOUT_MS = 600_000


def record(partition: int, offset: int, mutation_id: str, kafka_ms: int, dependencies=()) -> RawMessage:
    document = {
        "id": mutation_id, "edge_node_id": "van-1", "entity_type": "customer", "entity_id": mutation_id,
        "operation_type": "CREATE", "attributes": {"name": "A"}, "base_version": 0,
        "timestamp": "2026-11-26T00:00:00Z", "priority": 5, "dependencies": list(dependencies),
    }
    key = f"customer:{mutation_id}".encode()
    return RawMessage("in", partition, offset, key, orjson.dumps(document), kafka_ms)


@given(st.lists(st.integers(-1, READ_MS + EVENT_TIME_LEAD_MS), min_size=1, max_size=20))
def test_timestamps_up_to_the_lead_are_event_time_as_they_are(stamps):
    messages = [record(0, i, f"m{i}", ms) for i, ms in enumerate(stamps)]
    chunk = decode_chunk("in", 0, messages, REGISTRY, 1 << 20, read_ms=READ_MS)
    assert chunk.event_time_ms == max(stamps)
    assert decode_chunk("in", 0, messages, REGISTRY, 1 << 20).event_time_ms == max(stamps)  # no read time


def test_a_timestamp_far_ahead_of_reading_moves_event_time_only_to_the_lead():
    messages = [record(0, 0, "m0", READ_MS - 5), record(0, 1, "m1", READ_MS + YEAR_MS)]
    chunk = decode_chunk("in", 0, messages, REGISTRY, 1 << 20, read_ms=READ_MS)
    assert len(chunk.mutations) == 2  # the records themselves are valid: only event time is bounded
    assert chunk.event_time_ms == READ_MS + EVENT_TIME_LEAD_MS


def test_an_edge_clock_a_year_ahead_does_not_time_out_a_waiting_dependency():
    """As the apply step feeds the sequencer: the mutations, then each chunk's event time."""
    sequencer = Sequencer(dependency_timeout_ms=TIMEOUT_MS)
    chunks = [decode_chunk("in", 0, [record(0, 0, "waits", READ_MS, ["late"])], REGISTRY, 1 << 20, read_ms=READ_MS)]
    # The van with the wrong clock writes to every partition a moment later.
    chunks += [
        decode_chunk("in", p, [record(p, 1, f"van{p}", READ_MS + YEAR_MS)], REGISTRY, 1 << 20, read_ms=READ_MS + 1)
        for p in range(4)
    ]
    for chunk in chunks:
        sequencer.add(chunk.mutations, observe=False)
        sequencer.observe(chunk.topic, chunk.partition, chunk.event_time_ms)
    release = sequencer.release()
    assert release.rejected == []
    assert [m.id for m in sequencer.waiting] == ["waits"]
    # Ten minutes of real event time later, the timeout does apply.
    for p in range(4):
        sequencer.observe("in", p, READ_MS + TIMEOUT_MS)
    assert [(m.id, r) for m, r in sequencer.release().rejected] == [("waits", Reason.MISSING_DEPENDENCY)]
