"""Batches decided ahead of their transaction (sinks/prepare_ahead.py) against the real
server: the same outcomes and rows as deciding inside the transaction, and a fall
back to that whenever an assumption no longer holds (a foreign write, an id decided
meanwhile by another instance)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import orjson
import psycopg
import pytest

from bench.commit import batches, outcome_values, table_rows
from mutagg.settings import DEFAULT_REGISTRY, Settings
from operators.strategies import CUSTOM_STRATEGIES
from schemas.mutation import Mutation, RawMessage, Rejection, decode
from schemas.registry import load_registry
from sinks.faults import FaultInjector
from sinks.outcomes import Batch
from sinks.postgres import PostgresCommitter
from sinks.prepare_ahead import PrepareAheadOn
from sinks.riders import riders_batch_id
from tests.integration.conftest import drop_schema, new_schema

pytestmark = pytest.mark.integration

REGISTRY = load_registry(DEFAULT_REGISTRY, custom_strategies=CUSTOM_STRATEGIES)
WAIT_S = 60.0  # a bound on waiting for the thread that decides ahead, not a pause


@pytest.fixture
def twin(settings: Settings) -> Iterator[Settings]:
    """A second migrated schema next to `settings`' one: the same work decided in the transaction."""
    schema = f"t_{uuid.uuid4().hex[:10]}"
    yield new_schema(settings, schema)
    drop_schema(settings, schema)


def message(offset: int, mutation_id: str, node: str, entity_id: str, operation: str, attributes: dict,
            base: int, entity_type: str = "customer") -> Mutation | Rejection:
    document = {
        "id": mutation_id, "edge_node_id": node, "entity_type": entity_type, "entity_id": entity_id,
        "operation_type": operation, "attributes": attributes, "base_version": base,
        "timestamp": f"2026-11-26T09:{offset // 60:02d}:{offset % 60:02d}Z", "priority": 5, "dependencies": [],
    }
    key = f"{entity_type}:{entity_id}".encode()
    raw = RawMessage("in", 0, offset, key, orjson.dumps(document), 1_795_700_000_000 + offset)
    return decode(raw, REGISTRY)


def mutations(*items: Mutation | Rejection) -> list[Mutation]:
    assert all(isinstance(i, Mutation) for i in items), items
    return list(items)


def committers(settings: Settings, twin: Settings) -> tuple[PostgresCommitter, PostgresCommitter]:
    """(decides ahead, into `settings`' schema; decides in the transaction, into `twin`'s)."""
    ahead = PrepareAheadOn(settings.database_url, REGISTRY, CUSTOM_STRATEGIES)
    return (PostgresCommitter(settings.database_url, REGISTRY, CUSTOM_STRATEGIES, ahead=ahead),
            PostgresCommitter(twin.database_url, REGISTRY, CUSTOM_STRATEGIES))


def on_both(settings: Settings, twin: Settings, statement: str) -> None:
    """A writer outside the job (no `mutagg.writer`): the trigger bumps versions and provenance."""
    for target in (settings, twin):
        with psycopg.connect(target.database_url, autocommit=True) as connection:
            connection.execute(statement)


def test_a_workload_decided_ahead_commits_what_deciding_in_the_transaction_commits(settings, twin):
    work = batches(4000, REGISTRY, 300)  # hot and cold entities, conflicts, deletes, duplicates, rejections
    ahead, plain = committers(settings, twin)
    for number, items in enumerate(work):
        ahead.ahead.announce(f"b{number}", items)
    try:
        for number, items in enumerate(work):
            first = ahead.commit(Batch(items, {("in", 0): number}), f"b{number}")
            second = plain.commit(Batch(items, {("in", 0): number}), f"b{number}")
            assert outcome_values(first) == outcome_values(second)
            assert all(o.processed_at for o in first)
        stats = dict(ahead.ahead.stats)
    finally:
        ahead.close()
        plain.close()
    assert stats.get("used", 0) >= len(work) // 2, stats  # the path under test was taken
    assert stats.get("stale", 0) == 0, stats  # nothing wrote meanwhile: every assumption held
    assert table_rows(settings) == table_rows(twin)


def test_lane_riders_commit_what_a_batch_of_their_own_right_after_their_part_commits(settings, twin):
    """Priority-lane items that boarded a part (sinks/commit_pipeline.py) are decided in its
    transaction after its items, with the part decided ahead: the same outcomes and rows as the part
    and then a batch of their own (named `riders_batch_id`), also where both write one entity, and
    the batch after them, decided ahead on the part's writes alone, still sees theirs."""
    work = batches(4000, REGISTRY, 300)  # hot entities: riders often write an entity their part wrote
    cuts = [(items[:len(items) * 2 // 3], items[len(items) * 2 // 3:]) for items in work]
    ahead, plain = committers(settings, twin)
    for number, (part, _) in enumerate(cuts):
        ahead.ahead.announce(f"b{number}", part)
    try:
        for number, (part, riders) in enumerate(cuts):
            first = ahead.commit(Batch(part, {("in", 0): number}, riders=riders), f"b{number}")
            second = plain.commit(Batch(part, {("in", 0): number}), f"b{number}")
            second += plain.commit(Batch(riders), riders_batch_id(f"b{number}"))
            assert outcome_values(first) == outcome_values(second)
        stats = dict(ahead.ahead.stats)
    finally:
        ahead.close()
        plain.close()
    assert stats.get("used", 0) >= 1, stats  # the path decided ahead was taken
    assert table_rows(settings) == table_rows(twin)


@pytest.mark.parametrize("foreign", ["written by the batch before", "read ahead"])
def test_a_foreign_write_after_deciding_ahead_is_seen(settings, twin, foreign):
    setup = mutations(message(0, "c3", "shop-1", "C3", "CREATE", {"name": "Cy", "balance": "1"}, 0))
    first = mutations(message(1, "c1", "shop-1", "C1", "CREATE", {"name": "Ada", "balance": "10"}, 0))
    second = mutations(
        message(2, "u1", "van-2", "C1", "UPDATE", {"name": "Ada V", "balance": "-1"}, 1),
        message(3, "u3", "van-2", "C3", "UPDATE", {"name": "Cy V", "balance": "-1"}, 1),
    )
    ahead, plain = committers(settings, twin)
    try:
        for committer in (ahead, plain):
            committer.commit(Batch(setup), "b0")
        ahead.ahead.announce("b1", first)
        ahead.ahead.announce("b2", second)
        ahead.commit(Batch(first), "b1")
        plain.commit(Batch(first), "b1")
        assert ahead.ahead.wait("b2", WAIT_S)  # decided while b1 wrote
        entity = "C1" if foreign == "written by the batch before" else "C3"
        on_both(settings, twin, f"UPDATE customer SET name = 'ERP', version = version + 1 WHERE id = '{entity}'")
        decided = ahead.commit(Batch(second), "b2")
        expected = plain.commit(Batch(second), "b2")
        stats = dict(ahead.ahead.stats)
    finally:
        ahead.close()
        plain.close()
    assert stats.get("stale") == 1 and "used" not in stats, stats
    assert outcome_values(decided) == outcome_values(expected)
    conflicted = {o.entity_id for o in decided if o.conflict_ids}
    assert entity in conflicted  # the foreign rename was seen: the van's rename met it
    assert customers(settings) == customers(twin)
    tables, twin_tables = table_rows(settings), table_rows(twin)
    # Entity rows hold the foreign writer's clock in their provenance: compared above without it.
    assert {t: r for t, r in tables.items() if t != "customer"} == {
        t: r for t, r in twin_tables.items() if t != "customer"}


def customers(settings: Settings) -> list[tuple]:
    with psycopg.connect(settings.database_url) as connection:
        return connection.execute("SELECT id, name, balance, version, deleted FROM customer ORDER BY id").fetchall()


def test_an_id_decided_meanwhile_by_another_instance_is_not_decided_twice(settings):
    first = mutations(message(1, "c1", "shop-1", "C1", "CREATE", {"name": "Ada", "balance": "10"}, 0))
    invalid = message(2, "bad-1", "van-2", "C9", "UPDATE", {"no_such_attribute": 1}, 1)
    assert isinstance(invalid, Rejection) and invalid.mutation_id == "bad-1"
    second = [invalid, *mutations(message(3, "u1", "van-2", "C1", "UPDATE", {"balance": "-1"}, 1))]
    ahead = PostgresCommitter(settings.database_url, REGISTRY, CUSTOM_STRATEGIES,
                              ahead=PrepareAheadOn(settings.database_url, REGISTRY, CUSTOM_STRATEGIES))
    other = PostgresCommitter(settings.database_url, REGISTRY, CUSTOM_STRATEGIES)
    try:
        ahead.ahead.announce("b1", first)
        ahead.ahead.announce("b2", second)
        ahead.commit(Batch(first), "b1")
        assert ahead.ahead.wait("b2", WAIT_S)  # decided ahead, `bad-1` assumed new
        other.commit(Batch([invalid]), "other-1")  # a second instance reads the same message first
        outcomes = ahead.commit(Batch(second), "b2")
    finally:
        ahead.close()
        other.close()
    rejected, updated = outcomes
    assert (rejected.kind, rejected.batch_id) == ("replayed", "other-1")  # recognised, not decided again
    assert (updated.kind, updated.status, updated.version) == ("decided", "APPLIED", 2)
    with psycopg.connect(settings.database_url) as connection:
        ledger = connection.execute("SELECT mutation_id, batch_id FROM mutation_log ORDER BY 1").fetchall()
        balance = connection.execute("SELECT balance, version FROM customer WHERE id = 'C1'").fetchone()
    assert ledger == [("bad-1", "other-1"), ("c1", "b1"), ("u1", "b2")]
    assert balance == (9, 2)


class ForeignWriteInside(FaultInjector):
    """Runs `statement` (a writer outside the job, committed at once) the next time a batch's
    transaction reaches `bug_in_decide`: after its snapshot, before it checks or writes a row."""

    def __init__(self, database_url: str):
        super().__init__(None)
        self.database_url = database_url
        self.statement: str | None = None

    def hit(self, point: str) -> None:
        if point == "bug_in_decide" and self.statement is not None:
            statement, self.statement = self.statement, None
            with psycopg.connect(self.database_url, autocommit=True) as connection:
                connection.execute(statement)


# What the batch decided ahead does with customer C1 (version 1, read ahead), and what a writer
# outside the job does to C1 before the batch commits.
CHANGES = {
    "a row it only reads": (  # rejected against version 1 (base 2 is ahead of it): applies at version 2
        ("UPDATE", {"name": "Ada V"}, 2),
        "UPDATE customer SET name = 'ERP', version = version + 1 WHERE id = 'C1'",
    ),
    "a row it writes": (  # the ERP's rename is seen: a conflict
        ("UPDATE", {"name": "Ada V", "balance": "-1"}, 1),
        "UPDATE customer SET name = 'ERP', version = version + 1 WHERE id = 'C1'",
    ),
    "a row it writes, deleted": (  # no row to update any more: ENTITY_NOT_FOUND
        ("UPDATE", {"name": "Ada V", "balance": "-1"}, 1),
        "DELETE FROM customer WHERE id = 'C1'",
    ),
    "a row it creates": (  # C2 is absent when read ahead; created by the ERP meanwhile
        ("CREATE", {"name": "Bo", "balance": "5"}, 0),
        "INSERT INTO customer (id, name, balance, version) VALUES ('C2', 'ERP', 7, 1)",
    ),
}


@pytest.mark.parametrize("when", ["before its transaction", "inside its transaction"])
@pytest.mark.parametrize("change", sorted(CHANGES))
def test_a_row_changed_after_it_was_read_ahead_is_seen_without_a_lock_taken_beforehand(settings, twin, change, when):
    # Rows a batch decided ahead writes are no longer locked before they are written: the write
    # checks each (sinks/entity_rows.py `write_checked`), and rows it only reads are share-locked.
    (operation, attributes, base), statement = CHANGES[change]
    entity = "C2" if operation == "CREATE" else "C1"
    setup = mutations(message(0, "c1", "shop-1", "C1", "CREATE", {"name": "Ada", "balance": "10"}, 0))
    first = mutations(message(1, "c3", "shop-1", "C3", "CREATE", {"name": "Cy", "balance": "1"}, 0))
    second = mutations(message(2, "m2", "van-2", entity, operation, attributes, base))
    faults = ForeignWriteInside(settings.database_url)
    ahead = PostgresCommitter(settings.database_url, REGISTRY, CUSTOM_STRATEGIES, faults=faults,
                              ahead=PrepareAheadOn(settings.database_url, REGISTRY, CUSTOM_STRATEGIES))
    plain = PostgresCommitter(twin.database_url, REGISTRY, CUSTOM_STRATEGIES)
    try:
        for committer in (ahead, plain):
            committer.commit(Batch(setup), "b0")
        ahead.ahead.announce("b1", first)
        ahead.ahead.announce("b2", second)
        ahead.commit(Batch(first), "b1")
        plain.commit(Batch(first), "b1")
        assert ahead.ahead.wait("b2", WAIT_S)  # decided while b1 wrote, against C1 at version 1
        if when == "before its transaction":
            on_both(settings, twin, statement)
        else:
            faults.statement = statement  # on `settings`' schema, once b2's transaction has begun
            with psycopg.connect(twin.database_url, autocommit=True) as connection:
                connection.execute(statement)
        decided = ahead.commit(Batch(second), "b2")
        expected = plain.commit(Batch(second), "b2")
        stats = dict(ahead.ahead.stats)
    finally:
        ahead.close()
        plain.close()
    assert faults.statement is None
    assert "used" not in stats, stats  # decided again, in the transaction
    if when == "before its transaction":
        assert stats.get("stale") == 1, stats
    assert outcome_values(decided) == outcome_values(expected)
    assert customers(settings) == customers(twin)
    tables, twin_tables = table_rows(settings), table_rows(twin)
    assert {t: r for t, r in tables.items() if t != "customer"} == {
        t: r for t, r in twin_tables.items() if t != "customer"}
    (outcome,) = decided
    assert (outcome.status, outcome.reason, bool(outcome.conflict_ids)) == {
        "a row it only reads": ("APPLIED", None, False),
        "a row it writes": ("APPLIED", None, True),
        "a row it writes, deleted": ("REJECTED", "ENTITY_NOT_FOUND", False),
        "a row it creates": ("APPLIED", None, True),
    }[change], outcome
