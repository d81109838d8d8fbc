"""Sending again what the job never answered (issue 20, item 5): after acks were lost to
the status topic's retention (a gap the listener found), and after a bound without one;
the wait doubles per resend and is capped; a v1 outbox file gains what this needs."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge import store
from edge.errors import OutboxError
from edge.outbox import Outbox
from edge.records import Ack, EdgeMutation, EntryState, Operation
from edge.transitions import requeue_wait

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
TOPIC = "edge.mutation-status"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _mutation(n: int) -> EdgeMutation:
    return EdgeMutation(f"van-07-{n}", "van-07", "customer", f"C{n}", Operation.UPDATE, {"name": f"v{n}"}, 1, NOW)


def _delivered(outbox: Outbox, n: int) -> int:
    seq = outbox.record(_mutation(n)).seq
    outbox.mark_sent([seq])
    outbox.mark_delivered([(seq, 0, n)])
    return seq


def _resend(outbox: Outbox, mutation_id: str) -> None:
    seq = outbox.entry(mutation_id).seq
    outbox.mark_sent([seq])
    outbox.mark_delivered([(seq, 0, 99)])


def _states(outbox: Outbox) -> dict[str, EntryState]:
    return {e.mutation_id: e.state for e in outbox.entries()}


@given(st.integers(0, 200), st.floats(0.001, 1e6), st.floats(0.001, 1e7))
def test_the_wait_grows_with_each_resend_and_stays_within_its_bounds(requeues, after_s, max_wait_s):
    wait = requeue_wait(requeues, after_s, max_wait_s)
    assert after_s <= wait <= max(after_s, max_wait_s)
    assert requeue_wait(requeues + 1, after_s, max_wait_s) >= wait


def test_an_unanswered_entry_is_sent_again_after_a_wait_that_doubles_up_to_the_cap(tmp_path):
    clock = Clock()
    with Outbox(tmp_path / "van.sqlite3", "van-07", clock=clock) as outbox:
        _delivered(outbox, 1)
        resent_at = []
        for _ in range(60):  # ten minutes in ten-second steps, resending whatever is requeued
            clock.now += 10
            if outbox.requeue_overdue(after_s=30, max_wait_s=120):
                resent_at.append(clock.now - 1000)
                assert _states(outbox) == {"van-07-1": EntryState.PENDING}
                _resend(outbox, "van-07-1")
        # 30 s, then 60 s, then 120 s (the cap) between resends.
        assert resent_at[:4] == [30, 90, 210, 330]
        assert {b - a for a, b in pairwise(resent_at[2:])} == {120}
        outbox.apply_acks([Ack("van-07-1", "APPLIED", "customer", "C1", 2, None)], TOPIC, {0: 5})
        clock.now += 10_000
        assert outbox.requeue_overdue(after_s=30, max_wait_s=120) == 0  # decided: nothing to resend


def test_after_a_gap_what_stays_unanswered_once_read_to_the_end_is_sent_again_once(tmp_path):
    clock = Clock()
    path = tmp_path / "van.sqlite3"
    with Outbox(path, "van-07", clock=clock) as outbox:
        for n in range(4):
            _delivered(outbox, n)
        outbox.apply_acks([], TOPIC, {2: 10})
        clock.now += 5
        outbox.note_ack_gap(TOPIC, 2, lost_from=10, resume_at=40, read_to=45)
        assert outbox.ack_offsets(TOPIC) == {2: 40}
        clock.now += 5
        _delivered(outbox, 4)  # delivered after the gap was seen: its ack is still to come
        assert outbox.requeue_after_gaps(TOPIC, 2) == 0  # not read to the end yet
    with Outbox(path, "van-07", clock=clock) as outbox:  # a restart in between forgets nothing
        assert outbox.ack_gaps(TOPIC) == [(2, 10, 40, None)]
        # Reading on, acks for two of them were still there.
        acks = [Ack("van-07-0", "APPLIED", "customer", "C0", 2, None),
                Ack("van-07-1", "REJECTED", "customer", "C1", None, "FUTURE_BASE_VERSION")]
        outbox.apply_acks(acks, TOPIC, {2: 45})
        assert outbox.requeue_after_gaps(TOPIC, 2) == 2
        assert _states(outbox) == {"van-07-1": EntryState.REJECTED, "van-07-2": EntryState.PENDING,
                                   "van-07-3": EntryState.PENDING, "van-07-4": EntryState.DELIVERED}
        assert outbox.ack_gaps(TOPIC) == [(2, 10, 40, 2)]
        _resend(outbox, "van-07-2")
        assert outbox.requeue_after_gaps(TOPIC, 2) == 0  # the gap is closed


def test_a_gap_with_nothing_left_to_read_requeues_at_once_and_a_recreated_topic_moves_back(tmp_path):
    with Outbox(tmp_path / "van.sqlite3", "van-07", clock=Clock()) as outbox:
        _delivered(outbox, 1)
        outbox.apply_acks([], TOPIC, {0: 500})
        outbox.note_ack_gap(TOPIC, 0, lost_from=500, resume_at=0, read_to=0)  # the topic was made anew
        assert outbox.ack_offsets(TOPIC) == {0: 0}
        assert outbox.requeue_after_gaps(TOPIC, 0) == 1


def test_decisions_a_person_must_see_are_listed_reported_once_and_readable_from_the_file(tmp_path):
    path = tmp_path / "van.sqlite3"
    with Outbox(path, "van-07", clock=Clock()) as outbox:
        for n in range(4):
            _delivered(outbox, n)
        outbox.apply_acks([
            Ack("van-07-0", "APPLIED", "customer", "C0", 2, None),
            Ack("van-07-1", "REJECTED", "customer", "C1", None, "FUTURE_BASE_VERSION"),
            Ack("van-07-2", "CONFLICT", "customer", "C2", None, None, ("k1",)),
        ], TOPIC, {0: 3})
        attention = outbox.needing_attention(unreported_only=True)
        assert [(e.mutation_id, e.state, e.reason, e.conflict_ids) for e in attention] == [
            ("van-07-1", EntryState.REJECTED, "FUTURE_BASE_VERSION", ()),
            ("van-07-2", EntryState.CONFLICT, None, ("k1",))]
        outbox.mark_reported(["van-07-1"])
        assert [e.mutation_id for e in outbox.needing_attention(unreported_only=True)] == ["van-07-2"]
        assert len(outbox.needing_attention()) == 2
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT mutation_id, status, reason, conflict_ids, reported_at IS NOT NULL "
                          "FROM erp_outcomes ORDER BY mutation_id").fetchall()
    assert rows == [("van-07-1", "REJECTED", "FUTURE_BASE_VERSION", "", 1), ("van-07-2", "CONFLICT", None, "k1", 0)]


V1_OUTBOX = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, mutation_id TEXT NOT NULL UNIQUE, entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL, payload BLOB NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    kafka_partition INTEGER, kafka_offset INTEGER, reason TEXT, entity_version INTEGER,
    conflict_ids TEXT NOT NULL DEFAULT '', recorded_at REAL NOT NULL, updated_at REAL NOT NULL);
INSERT INTO meta VALUES ('edge_node_id', 'van-07'), ('schema_version', '1');
INSERT INTO outbox (mutation_id, entity_type, entity_id, payload, state, recorded_at, updated_at)
    VALUES ('van-07-1', 'customer', 'C1', x'7b7d', 'DELIVERED', 1.0, 1.0);
"""


def test_an_outbox_file_of_schema_1_is_upgraded_in_place(tmp_path):
    path = tmp_path / "van.sqlite3"
    with sqlite3.connect(path) as db:
        db.executescript(V1_OUTBOX)
    with Outbox(path, "van-07", clock=Clock()) as outbox:
        assert [e.mutation_id for e in outbox.entries()] == ["van-07-1"]
        assert outbox.requeue_overdue(after_s=10, max_wait_s=10) == 1
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == (
            str(store.SCHEMA_VERSION),)
        assert db.execute("SELECT requeues FROM outbox").fetchone() == (1,)


def test_an_outbox_file_of_a_newer_schema_is_refused(tmp_path):
    path = tmp_path / "van.sqlite3"
    Outbox(path, "van-07").close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(OutboxError, match="newer than this client"):
        Outbox(path, "van-07")
