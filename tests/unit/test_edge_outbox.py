"""The SQLite outbox on a local file: durable recording, restart recovery,
exactly-once application of acks, monotonic versions, one file per node."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.errors import InvalidMutation, OutboxError
from edge.outbox import Outbox
from edge.records import Ack, EdgeMutation, EntryState, Operation

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)


def _mutation(n: int, entity_id: str = "C1", operation: Operation = Operation.UPDATE, **changes) -> EdgeMutation:
    fields = dict(
        id=f"shop-01-{n}", edge_node_id="shop-01", entity_type="customer", entity_id=entity_id,
        operation=operation, attributes={} if operation is Operation.DELETE else {"name": f"v{n}"},
        base_version=0 if operation is Operation.CREATE else n, timestamp=NOW,
    )
    fields.update(changes)
    return EdgeMutation(**fields)


def _ack(mutation_id: str, status: str, version: int | None, entity_id: str = "C1") -> Ack:
    return Ack(mutation_id, status, "customer", entity_id, version, None)


@pytest.fixture
def path(tmp_path):
    return tmp_path / "shop-01.sqlite3"


def test_a_recorded_mutation_survives_reopening_byte_for_byte(path):
    mutation = _mutation(1, operation=Operation.CREATE)
    with Outbox(path, "shop-01") as outbox:
        entry = outbox.record(mutation)
    with Outbox(path, "shop-01") as reopened:
        (again,) = reopened.entries()
    assert again == entry
    assert again.state is EntryState.PENDING
    assert again.kafka_key == b"customer:C1"


def test_recording_is_idempotent_but_an_id_cannot_be_reused(path):
    with Outbox(path, "shop-01") as outbox:
        first = outbox.record(_mutation(1))
        assert outbox.record(_mutation(1)) == first
        with pytest.raises(InvalidMutation) as caught:
            outbox.record(_mutation(1, attributes={"name": "something else"}))
        assert caught.value.code == "DUPLICATE_ID"
        assert len(outbox.entries()) == 1


def test_invalid_mutations_are_never_recorded(path):
    with Outbox(path, "shop-01") as outbox:
        for bad in (
            _mutation(2, operation=Operation.DELETE, attributes={"name": "x"}),
            _mutation(3, priority=11),
            _mutation(4, timestamp=datetime(2026, 1, 1)),
            _mutation(5, edge_node_id="van-02"),
            _mutation(6, id=""),
            _mutation(7, attributes={"notes": "x" * 2000}),
        ):
            with pytest.raises(InvalidMutation):
                outbox.record(bad, max_bytes=1000)
        assert outbox.entries() == []


def test_an_outbox_belongs_to_one_node(path):
    Outbox(path, "shop-01").close()
    with pytest.raises(OutboxError):
        Outbox(path, "van-02")


def test_after_a_crash_unknown_deliveries_are_pending_again_and_delivered_ones_stay(path):
    outbox = Outbox(path, "shop-01")
    seqs = [outbox.record(_mutation(n, entity_id=f"C{n}")).seq for n in range(3)]
    outbox.mark_sent(seqs)
    outbox.mark_delivered([(seqs[0], 2, 41)])
    outbox.close()  # as good as a kill -9: every change above was committed
    with Outbox(path, "shop-01") as reopened:
        assert reopened.recovered == 2
        states = {e.seq: (e.state, e.attempts) for e in reopened.entries()}
        assert states == {
            seqs[0]: (EntryState.DELIVERED, 1), seqs[1]: (EntryState.PENDING, 1), seqs[2]: (EntryState.PENDING, 1),
        }
        assert [e.seq for e in reopened.sendable(10)] == seqs[1:]


def test_only_the_oldest_undelivered_change_of_an_entity_is_sendable(path):
    with Outbox(path, "shop-01") as outbox:
        a1, a2, b1 = (outbox.record(m).seq for m in (_mutation(1), _mutation(2), _mutation(3, entity_id="C9")))
        assert [e.seq for e in outbox.sendable(10)] == [a1, b1]
        outbox.mark_sent([a1, b1])
        assert outbox.sendable(10) == []
        outbox.mark_failed([a1])
        outbox.mark_delivered([(b1, 0, 7)])
        assert [e.seq for e in outbox.sendable(10)] == [a1]
        outbox.mark_sent([a1])
        outbox.mark_delivered([(a1, 0, 8)])
        assert [e.seq for e in outbox.sendable(10)] == [a2]


def test_acks_decide_entries_remove_applied_ones_and_teach_versions(path):
    with Outbox(path, "shop-01") as outbox:
        for n in range(4):
            outbox.record(_mutation(n, entity_id=f"C{n}"))
        report = outbox.apply_acks([
            _ack("shop-01-0", "APPLIED", 5, "C0"),
            _ack("shop-01-1", "CONFLICT", None, "C1"),
            _ack("shop-01-2", "REJECTED", None, "C2"),
            _ack("someone-else", "APPLIED", 9, "C3"),
        ], "status", {1: 10})
        assert (report.applied, report.removed, report.unknown) == (3, 1, 1)
        assert {e.mutation_id: e.state for e in outbox.entries()} == {
            "shop-01-1": EntryState.CONFLICT, "shop-01-2": EntryState.REJECTED, "shop-01-3": EntryState.PENDING,
        }
        assert outbox.known_version("customer", "C0") == 5
        assert outbox.known_version("customer", "C3") == 9
        assert outbox.known_version("customer", "C7") == 0
        assert outbox.ack_offsets("status") == {1: 10}
        # A late delivery report does not undo a decision.
        outbox.mark_delivered([(outbox.entry("shop-01-1").seq, 1, 3)])
        assert outbox.entry("shop-01-1").state is EntryState.CONFLICT


def test_a_resolution_ack_closes_the_held_conflict(path):
    with Outbox(path, "shop-01") as outbox:
        outbox.record(_mutation(1))
        outbox.apply_acks([_ack("shop-01-1", "CONFLICT", None)], "status", {0: 1})
        outbox.apply_acks([_ack("shop-01-1:resolution:1", "APPLIED", 4)], "status", {0: 2})
        assert outbox.entries() == []
        assert outbox.known_version("customer", "C1") == 4


def test_dismiss_drops_decided_entries_only(path):
    with Outbox(path, "shop-01") as outbox:
        outbox.record(_mutation(1))
        outbox.record(_mutation(2, entity_id="C2"))
        outbox.apply_acks([_ack("shop-01-1", "REJECTED", None)], "status", {})
        assert outbox.dismiss(["shop-01-1", "shop-01-2"]) == 1
        assert [e.mutation_id for e in outbox.entries()] == ["shop-01-2"]


def test_requeue_sends_again_what_the_job_never_decided(path):
    clock = iter(range(0, 10_000, 100)).__next__
    with Outbox(path, "shop-01", clock=lambda: float(clock())) as outbox:
        seq = outbox.record(_mutation(1)).seq
        outbox.mark_sent([seq])
        outbox.mark_delivered([(seq, 0, 1)])
        assert outbox.requeue_overdue(after_s=10_000, max_wait_s=10_000) == 0
        assert outbox.requeue_overdue(after_s=50, max_wait_s=50) == 1
        assert outbox.entry("shop-01-1").state is EntryState.PENDING


ack_batches = st.lists(
    st.lists(st.tuples(st.integers(0, 5), st.sampled_from(["APPLIED", "CONFLICT", "REJECTED"]),
                       st.one_of(st.none(), st.integers(1, 50))), max_size=6),
    max_size=6,
)


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=ack_batches)
def test_replaying_acks_changes_nothing_and_versions_never_go_back(tmp_path, batches):
    path = tmp_path / f"{uuid.uuid4().hex}.sqlite3"
    with Outbox(path, "shop-01") as outbox:
        for n in range(6):
            outbox.record(_mutation(n, entity_id=f"C{n % 2}"))
        highest: dict[str, int] = {}
        for batch in batches:
            acks = [_ack(f"shop-01-{n}", status, version, f"C{n % 2}") for n, status, version in batch]
            outbox.apply_acks(acks, "status", {0: len(batch)})
            for n, _status, version in batch:
                if version is not None:
                    highest[f"C{n % 2}"] = max(version, highest.get(f"C{n % 2}", 0))
            snapshot = outbox.entries()
            outbox.apply_acks(acks, "status", {0: 0})  # the same acks again, e.g. re-read after a crash
            assert outbox.entries() == snapshot
        for entity_id in ("C0", "C1"):
            assert outbox.known_version("customer", entity_id) == highest.get(entity_id, 0)
        assert outbox.ack_offsets("status").get(0, 0) == max([len(b) for b in batches] + [0])
