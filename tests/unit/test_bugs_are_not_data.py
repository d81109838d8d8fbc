"""A custom strategy's failure is its mutation's (FAILED, `STRATEGY_ERROR`, the error in the
ledger's `detail`), the rest of the batch decides as usual; any other error in deciding or
committing is a bug: `BatchFailed`, never quarantined as data (issue 16, point 8)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from operators.entity_state import EntityState, Provenance
from operators.strategies import ConflictContext, Resolution
from schemas.ddl import LEDGER_COLUMNS
from schemas.errors import BatchFailed
from schemas.mutation import Mutation, Operation, Reason, Status
from schemas.registry import parse_registry
from sinks import entity_rows
from sinks.decisions import decide_batch
from sinks.outcomes import Batch, Outcome
from sinks.postgres import PostgresCommitter

T0 = datetime(2026, 11, 26, 9, tzinfo=UTC)


def explode(context: ConflictContext) -> Resolution:
    raise ZeroDivisionError(f"no way to compare {context.incoming_value!r}")


def no_winner(context: ConflictContext) -> Resolution:
    return Resolution("nobody")


CUSTOM = {"explode": explode, "no_winner": no_winner}
REGISTRY = parse_registry(
    {"entity_types": {"gadget": {"attributes": {
        "colour": {"type": "string", "strategy": "explode"},
        "size": {"type": "integer", "strategy": "no_winner"},
        "name": {"type": "string"},
        "count": {"type": "integer", "strategy": "sum"},
    }}}},
    custom_strategies=CUSTOM,
)
PLANS = {name: entity_rows.plan(t) for name, t in REGISTRY.entity_types.items()}


def mutation(mutation_id: str, entity_id: str, attributes: dict, base: int, node: str = "n1") -> Mutation:
    return Mutation(
        id=mutation_id, edge_node_id=node, entity_type="gadget", entity_id=entity_id, operation=Operation.UPDATE,
        attributes=attributes, base_version=base, timestamp=T0, priority=5, dependencies=(), tenant_id=None,
        topic="in", partition=0, offset=len(mutation_id), kafka_timestamp_ms=int(T0.timestamp() * 1000),
    )


def written_by_other(version: int = 2) -> EntityState:
    """A gadget at `version` whose every attribute node n2 wrote last, at that version."""
    prov = Provenance(version, "m-n2", "n2", T0 - timedelta(hours=1), 5)
    values = {"colour": "red", "size": 3, "name": "old", "count": 10}
    return EntityState(version, False, values, dict.fromkeys(values, prov))


def ledger_of(decisions, mutation_id: str) -> dict:
    rows = [dict(zip(LEDGER_COLUMNS, row)) for row in decisions.ledger_rows]
    return next(row for row in rows if row["mutation_id"] == mutation_id)


@pytest.mark.parametrize(
    ("attributes", "detail"),
    [
        ({"colour": "blue", "name": "new", "count": 1}, "'explode' on 'colour' raised ZeroDivisionError: no way"),
        ({"size": 4, "name": "new", "count": 1}, "'no_winner' on 'size' returned Resolution(winner='nobody'"),
    ],
)
def test_a_failing_custom_strategy_fails_its_mutation_alone(attributes, detail):
    states = {"gadget": {"G1": written_by_other(), "G2": written_by_other()}}
    before = written_by_other()
    items = [
        mutation("bad", "G1", attributes, base=1),  # stale: every attribute conflicts
        mutation("after", "G1", {"name": "later"}, base=2),  # the failed one left G1 at version 2
        mutation("other", "G2", {"name": "fine", "count": 2}, base=1),
    ]
    decisions = decide_batch(items, states, {}, PLANS, REGISTRY, CUSTOM, "b1")

    bad, after, other = decisions.outcomes
    assert (bad.status, bad.reason, bad.version) == ("FAILED", Reason.STRATEGY_ERROR, None)
    row = ledger_of(decisions, "bad")
    assert (row["status"], row["reason"], row["version"]) == ("FAILED", "STRATEGY_ERROR", None)
    assert detail in row["detail"]
    assert not [c for c in decisions.conflict_rows if c[4] == "bad"]  # nothing of it is recorded or applied

    assert (after.status, after.reason, after.version) == ("APPLIED", None, 3)
    g1 = states["gadget"]["G1"]
    assert g1.values == {**before.values, "name": "later"}  # the failed mutation's `count` delta did not add
    assert (other.status, other.version) == ("APPLIED", 3)
    assert states["gadget"]["G2"].values["count"] == 12
    assert ledger_of(decisions, "other")["detail"] is None


def test_a_failing_strategy_alone_in_a_batch_touches_no_row():
    state = written_by_other()
    decisions = decide_batch(
        [mutation("bad", "G1", {"colour": "blue", "count": 5}, base=1)], {"gadget": {"G1": state}}, {},
        PLANS, REGISTRY, CUSTOM, "b1",
    )
    assert decisions.outcomes[0].status == Status.FAILED.value
    assert not any(decisions.touched.values())
    assert state == written_by_other()


def test_a_bug_while_deciding_raises_batch_failed_naming_the_mutation():
    state = written_by_other()
    state.values["count"] = "10"  # a value no row ever holds: adding a delta to it is a TypeError
    with pytest.raises(BatchFailed, match=r"batch b7, mutation m1: TypeError") as failed:
        decide_batch([mutation("m1", "G1", {"count": 1}, base=2)], {"gadget": {"G1": state}}, {},
                     PLANS, REGISTRY, CUSTOM, "b7")
    assert (failed.value.batch_id, failed.value.mutation_id) == ("b7", "m1")
    assert isinstance(failed.value.__cause__, TypeError)


class Recording(PostgresCommitter):
    """The committer's error handling, with each attempt's error chosen by the test (no database)."""

    def __init__(self, error_for):
        super().__init__("postgresql://unused", REGISTRY, CUSTOM, deadline_s=1)
        self.error_for = error_for
        self.quarantined: list[str] = []

    def _attempt(self, batch: Batch, batch_id: str, written=None) -> list[Outcome]:
        for item in batch.items:
            error = self.error_for(item.id)
            if error is not None:
                raise error
        return [Outcome(i, "decided", i.id, "APPLIED", None, "gadget", i.entity_id, 1, "n1", (), batch_id, "")
                for i in batch.items]

    def _quarantine(self, item, batch_id: str, error: Exception, written=None) -> list[Outcome]:
        self.quarantined.append(item.id)
        return [Outcome(item, "decided", item.id, "FAILED", Reason.DATABASE_ERROR, "gadget", item.entity_id, None,
                        "n1", (), batch_id, "")]


ITEMS = [mutation(f"m{i}", f"G{i}", {"name": "x"}, base=1) for i in range(4)]


def test_a_database_data_error_is_split_down_and_quarantined():
    committer = Recording(lambda mid: psycopg.errors.NumericValueOutOfRange("overflow") if mid == "m2" else None)
    outcomes = committer.commit(Batch(list(ITEMS)), "b1")
    assert [o.status for o in outcomes] == ["APPLIED", "APPLIED", "FAILED", "APPLIED"]
    assert committer.quarantined == ["m2"]


@pytest.mark.parametrize("error", [TypeError("bug"), ValueError("bug"), ArithmeticError("bug"), KeyError("bug")])
def test_a_python_error_stops_the_batch_and_is_never_quarantined(error):
    committer = Recording(lambda mid: error if mid == "m2" else None)
    with pytest.raises(BatchFailed, match=rf"batch b1: {type(error).__name__}") as failed:
        committer.commit(Batch(list(ITEMS)), "b1")
    assert failed.value.__cause__ is error
    assert committer.quarantined == []


def test_a_bug_found_while_splitting_names_the_part_and_stops():
    def error_for(mid: str):
        return {"m0": psycopg.errors.NumericValueOutOfRange("overflow"), "m3": TypeError("bug")}.get(mid)

    committer = Recording(error_for)
    with pytest.raises(BatchFailed, match=r"batch b1\.2: TypeError"):
        committer.commit(Batch(list(ITEMS)), "b1")
    assert committer.quarantined == ["m0"]  # quarantined in its own transaction before the bug showed

