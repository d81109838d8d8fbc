"""Outbox state rules, and the ordering argument behind them: whatever the
transport does (loses a message, reports a failure for a message it wrote, writes
a timed-out message after later ones), the first copy of each id in the broker
log keeps every entity's recorded order, and nothing recorded is lost."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.errors import IllegalTransition
from edge.records import EntryState, OutboxEntry
from edge.transitions import (
    FINAL,
    UNDELIVERED,
    Event,
    after_ack,
    after_event,
    known_version,
    resolved_mutation_id,
    sendable,
)

states = st.sampled_from(list(EntryState))
events = st.sampled_from(list(Event))
statuses = st.sampled_from(["APPLIED", "CONFLICT", "REJECTED", "FAILED", "DUPLICATE", "SOMETHING_NEW"])


def _step(state: EntryState, action) -> EntryState:
    kind, value = action
    if kind == "ack":
        return after_ack(state, value)
    try:
        return after_event(state, value)
    except IllegalTransition:
        return state


actions = st.lists(st.one_of(st.tuples(st.just("event"), events), st.tuples(st.just("ack"), statuses)), max_size=30)


@given(states, actions)
def test_a_decision_is_final_whatever_happens_after_it(state, history):
    decided = None
    for action in history:
        state = _step(state, action)
        if decided is not None:
            assert state == decided
        elif state in FINAL:
            decided = state


@given(st.sampled_from([s for s in EntryState if s not in FINAL]),
       st.sampled_from(["APPLIED", "CONFLICT", "REJECTED", "FAILED"]))
def test_the_first_acknowledgement_decides_an_undecided_entry(state, status):
    assert after_ack(state, status) == EntryState(status)


@given(states)
def test_unknown_or_duplicate_statuses_change_nothing(state):
    assert after_ack(state, "DUPLICATE") == state
    assert after_ack(state, "SOMETHING_NEW") == state


def test_transport_events():
    assert after_event(EntryState.PENDING, Event.SEND) is EntryState.IN_FLIGHT
    assert after_event(EntryState.IN_FLIGHT, Event.DELIVERED) is EntryState.DELIVERED
    assert after_event(EntryState.IN_FLIGHT, Event.DELIVERY_FAILED) is EntryState.PENDING
    assert after_event(EntryState.IN_FLIGHT, Event.RESTART) is EntryState.PENDING
    assert after_event(EntryState.DELIVERED, Event.RESTART) is EntryState.DELIVERED
    assert after_event(EntryState.DELIVERED, Event.REQUEUE) is EntryState.PENDING
    assert after_event(EntryState.APPLIED, Event.DELIVERED) is EntryState.APPLIED
    for state in (EntryState.IN_FLIGHT, EntryState.DELIVERED, EntryState.CONFLICT):
        with pytest.raises(IllegalTransition):
            after_event(state, Event.SEND)
    with pytest.raises(IllegalTransition):
        after_event(EntryState.PENDING, Event.DELIVERED)


@given(st.lists(st.one_of(st.none(), st.integers(0, 10**6)), max_size=20))
def test_the_known_version_is_the_largest_acknowledged(versions):
    known = None
    for version in versions:
        known = known_version(known, version)
    seen = [v for v in versions if v is not None]
    assert known == (max(seen) if seen else None)


def test_resolution_ids_name_the_held_mutation():
    assert resolved_mutation_id("van-01-42:resolution:1") == "van-01-42"
    assert resolved_mutation_id("a:resolution:b:resolution:12") == "a:resolution:b"
    assert resolved_mutation_id("van-01-42") is None
    assert resolved_mutation_id(":resolution:1") is None
    assert resolved_mutation_id("x:resolution:one") is None


def _entries(keys: list[int]) -> list[OutboxEntry]:
    return [
        OutboxEntry(seq, f"m{seq}", "customer", f"C{key}", b"{}", EntryState.PENDING)
        for seq, key in enumerate(keys, start=1)
    ]


@given(st.lists(st.integers(0, 4), max_size=40), st.data())
def test_sendable_takes_the_oldest_undelivered_entry_of_each_entity_only(keys, data):
    entries = [replace(e, state=data.draw(states)) for e in _entries(keys)]
    chosen = sendable(entries)
    assert len({e.entity_key for e in chosen}) == len(chosen)
    assert [e.seq for e in chosen] == sorted(e.seq for e in chosen)
    for entry in chosen:
        assert entry.state is EntryState.PENDING
        assert not any(
            other.entity_key == entry.entity_key and other.seq < entry.seq and other.state in UNDELIVERED
            for other in entries
        )


OUTCOMES = ["delivered", "lost", "written_but_reported_failed", "written_late"]


@given(st.lists(st.integers(0, 3), min_size=1, max_size=30), st.data())
def test_first_copies_in_the_broker_keep_each_entity_in_recorded_order(keys, data):
    """A model of the sender over a faulty transport: per round, every sendable entry
    is produced and its fate drawn; 'written_late' is librdkafka's timeout gap (the
    broker gets the message after later ones)."""
    entries = {e.seq: e for e in _entries(keys)}
    log: list[OutboxEntry] = []
    late: list[OutboxEntry] = []
    for round_no in range(200):
        if all(e.state is EntryState.DELIVERED for e in entries.values()):
            break
        batch = sendable(entries.values())
        for entry in batch:
            entries[entry.seq] = replace(entry, state=after_event(entry.state, Event.SEND))
        for entry in batch:
            # After a while the network holds, so the run always ends.
            outcome = data.draw(st.sampled_from(OUTCOMES)) if round_no < 50 else "delivered"
            if outcome in ("delivered", "written_but_reported_failed"):
                log.append(entry)
            elif outcome == "written_late":
                late.append(entry)
            event = Event.DELIVERED if outcome == "delivered" else Event.DELIVERY_FAILED
            entries[entry.seq] = replace(entries[entry.seq], state=after_event(entries[entry.seq].state, event))
        if late and data.draw(st.booleans()):
            log.append(late.pop(data.draw(st.integers(0, len(late) - 1))))
    log.extend(late)

    assert all(e.state is EntryState.DELIVERED for e in entries.values())
    first_seen: dict[str, int] = {}
    for position, entry in enumerate(log):
        first_seen.setdefault(entry.mutation_id, position)
    assert set(first_seen) == {e.mutation_id for e in entries.values()}  # nothing lost
    recorded = defaultdict(list)
    for entry in sorted(entries.values(), key=lambda e: e.seq):
        recorded[entry.entity_key].append(entry.mutation_id)
    for ids in recorded.values():
        assert sorted(ids, key=first_seen.__getitem__) == ids
