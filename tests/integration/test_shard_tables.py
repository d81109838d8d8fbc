"""The partitioned commit's shared tables in PostgreSQL (sinks/shard_tables.py) against the
in-memory reference (`SharedTables` of operators/shard_view.py): the runs of tests/shard_runs.py,
each shard on its own connection (some commits it is not told of: it forgets, and writes all
again), every read and every transaction's answer (after the committer's retries) equal to the
reference's; an id's time folded with its duplicates'; any characters in ids; the job's role.
Then what only concurrent transactions show: shards claiming the same ids wait for each other in
one order, never deadlock, and never both win an id, whichever committed after whose snapshot.

Long form (CI runs SHARD_SQL_EXAMPLES=20):
    SHARD_SQL_EXAMPLES=300 PYTHONPATH=. .venv/bin/python -m pytest tests/integration/test_shard_tables.py -q
"""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace

import psycopg
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from psycopg import errors

from mutagg.settings import Settings
from operators.shard_view import FIRST, Batch, Held, Publication, SharedTables, View
from schemas.mutation import Mutation, Operation
from sinks import ledger
from sinks.shard_tables import ShardTables, cluster_run
from tests.integration.conftest import query, wait_for
from tests.integration.test_roles import Roles, roles  # noqa: F401 (a fixture)
from tests.shard_runs import coordinates, drive, item_id, shard_logs
from tests.unit.test_sequencer_partitions import T0, T0_MS

EXAMPLES = int(os.environ.get("SHARD_SQL_EXAMPLES", "20"))
TABLES = "shard_marks, shard_held, shard_claims, dependency_cycles, mutation_log, mutation_duplicates"


def connect(settings: Settings) -> psycopg.Connection:
    """A committer's connection: REPEATABLE READ (sinks/postgres.py)."""
    connection = psycopg.connect(settings.database_url)
    connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    return connection


@pytest.fixture
def shard_connections(settings: Settings) -> Iterator[dict[str, psycopg.Connection]]:
    connections = {f"s{n}": connect(settings) for n in range(3)}
    yield connections
    for connection in connections.values():
        connection.close()


def normal(view: View) -> tuple:
    """A view with each publication's held rows in one order (a set, in effect)."""
    publications = {shard: (dict(p.marks), sorted(p.held, key=lambda h: (h.topic, h.partition, h.offset)), p.ended)
                    for shard, p in view.publications.items()}
    return publications, dict(view.decided), view.cycles


class Mirrored(SharedTables):
    """`SharedTables`, every read and transaction of which is also done in PostgreSQL through
    each shard's `ShardTables` on its own connection, and must answer the same. A transaction
    that commits writes its batch's ledger rows minimally and its duplicates as the job does;
    after some (drawn by `rng`) the shard does not learn that it committed (`forget`, as after a
    connection lost at COMMIT)."""

    def __init__(self, connections: dict[str, psycopg.Connection], rng: random.Random):
        super().__init__()
        self.connections = connections
        self.sql = {shard: ShardTables(shard) for shard in connections}
        self.rng = rng

    def read(self, shard: str, wanted) -> View:
        wanted = set(wanted)
        expected = super().read(shard, wanted)
        connection = self.connections[shard]
        with connection.transaction(), connection.cursor() as cursor:
            view = self.sql[shard].read(cursor, wanted)
        assert normal(view) == normal(expected)
        return view

    def publish(self, shard: str, publication: Publication) -> set[str]:
        expected = super().publish(shard, publication)
        assert self._transaction(shard, [], publication, (), [], []) == expected
        return expected

    def commit(self, shard: str, batch: Batch) -> set[str]:
        duplicates = len(self.duplicates)
        expected = set(super().commit(shard, batch))
        commits = [(item, verdict) for item, verdict in batch.firsts if item_id(item) is not None]
        firsts = [(item_id(item), _partition(item)) for item, _ in commits]
        # The batch's rows whatever the reference answered: a first copy's COPY into the ledger is
        # what meets another's committed first copy (the claims do not look there at first).
        lost = self._transaction(shard, firsts, batch.publication, batch.cycles, commits, self.duplicates[duplicates:])
        assert lost == expected
        return expected

    def _transaction(self, shard, firsts, publication, cycles, commits, duplicates) -> set[str]:
        """One transaction, retried as the committer retries (a UniqueViolation of the ledger is
        a SerializationFailure there): its answer."""
        connection, tables = self.connections[shard], self.sql[shard]
        while True:
            try:
                with connection.transaction() as transaction, connection.cursor() as cursor:
                    lost = tables.write(cursor, firsts, publication, cycles)
                    if lost:
                        raise psycopg.Rollback(transaction)
                    write_ledger(cursor, commits)
                    ledger.record_duplicates(cursor, duplicates, "b")
                break
            except (errors.SerializationFailure, errors.UniqueViolation):
                event("a transaction was retried")
        if not lost:
            if self.rng.random() < 0.2:
                tables.forget()
            else:
                tables.committed(publication)
        return lost


def _partition(item) -> tuple[str, int]:
    return (item.topic, item.partition) if isinstance(item, Mutation) else (item.raw.topic, item.raw.partition)


def write_ledger(cursor: psycopg.Cursor, commits: list) -> None:
    """The ledger rows of first copies committed, as little of them as the shared tables read."""
    rows = [(item_id(item), "APPLIED" if verdict is None else "REJECTED", *_partition(item), coordinates(item)[1],
             item.kafka_timestamp_ms if isinstance(item, Mutation) else item.raw.timestamp_ms)
            for item, verdict in commits]
    if rows:
        cursor.execute(
            "INSERT INTO mutation_log (mutation_id, status, kafka_topic, kafka_partition, kafka_offset, "
            "kafka_timestamp) SELECT i, s, t, p, o, to_timestamp(k / 1000.0) FROM unnest(%s::text[], %s::text[], "
            "%s::text[], %s::int[], %s::bigint[], %s::bigint[]) AS u(i, s, t, p, o, k)",
            tuple(map(list, zip(*rows))))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raws=shard_logs(), data=st.data(), rng=st.randoms(use_true_random=False))
def test_the_tables_answer_as_the_reference_does(settings, shard_connections, raws, data, rng):
    with psycopg.connect(settings.database_url, autocommit=True) as connection:
        connection.execute(f"TRUNCATE {TABLES}")
    drive(raws, data, Mirrored(shard_connections, rng))
    # Every shard ran to the end: nothing is held, so no claim is left either.
    assert query(settings, "SELECT count(*) FROM shard_held") == [(0,)]
    assert query(settings, "SELECT count(*) FROM shard_claims") == [(0,)]


def test_an_ids_time_is_its_earliest_committed_copys(settings, shard_connections):
    """A duplicate may carry an earlier Kafka timestamp than the copy the ledger took (read in
    another partition, or re-sent with an older one): the read folds it in."""
    connection = shard_connections["s0"]
    first = Mutation(id="x", edge_node_id="n", entity_type="t", entity_id="e", operation=Operation.UPDATE,
                     attributes={}, base_version=1, timestamp=T0, priority=1, dependencies=(), tenant_id=None,
                     topic="in", partition=0, offset=4, kafka_timestamp_ms=T0_MS + 5_000)
    with connection.transaction(), connection.cursor() as cursor:
        write_ledger(cursor, [(first, None)])
        cursor.execute("INSERT INTO mutation_log (mutation_id, status) VALUES ('y', 'APPLIED')")
        ledger.record_duplicates(cursor, [(replace(first, partition=1, kafka_timestamp_ms=T0_MS + 1_000), True),
                                          (replace(first, offset=9, kafka_timestamp_ms=T0_MS + 9_000), False)], "b")
    with connection.transaction(), connection.cursor() as cursor:
        view = ShardTables("s0").read(cursor, ["x", "y", "z"])
    assert view.decided == {"x": T0_MS + 1_000, "y": 0}  # y: no time recorded, as ledger.read_times says


def test_any_id_goes_through_as_it_is(settings, shard_connections):
    """Ids, dependencies and entities with the characters COPY and array literals escape."""
    odd = ['t\tab', 'back\\slash', 'quo"te', 'new\nline', 'com,ma{}', "NULL", ""]
    rows = tuple(Held(i, 7, (i, "d,\"{x}"), "in", 0, n, None if n % 2 else ("t", i), FIRST) for n, i in enumerate(odd))
    publication = Publication({("in", 0): 7}, rows)
    mine, theirs = ShardTables("s0"), ShardTables("s1")
    for _ in range(2):  # the first write is careful; the next one COPYs its claims
        assert attempt(shard_connections["s0"], mine, [(f"{i}!", ("in", 0)) for i in odd], publication) == set()
        with shard_connections["s1"].transaction(), shard_connections["s1"].cursor() as cursor:
            view = theirs.read(cursor, [f"{i}!" for i in odd])
        assert sorted(view.publications["s0"].held, key=lambda h: h.offset) == list(rows)
        assert set(view.decided) == {f"{i}!" for i in odd}
        assert set(claims(settings)) == set(odd)
        with psycopg.connect(settings.database_url, autocommit=True) as connection:
            connection.execute("DELETE FROM mutation_log")


# -- concurrent transactions ---------------------------------------------------------------------

def holding(partition: int, ids: list[str]) -> Publication:
    """A shard of one partition that holds first copies of `ids`."""
    return Publication({("in", partition): 1_000}, tuple(
        Held(i, 1_000, (), "in", partition, offset, ("t", i), FIRST) for offset, i in enumerate(ids)))


def attempt(connection: psycopg.Connection, tables: ShardTables, firsts, publication: Publication,
            ledger_rows: bool = True) -> set[str]:
    """One transaction of a shard: write, then (if it won) its first copies' ledger rows; commit."""
    with connection.transaction() as transaction, connection.cursor() as cursor:
        lost = tables.write(cursor, firsts, publication)
        if lost:
            raise psycopg.Rollback(transaction)
        if ledger_rows and firsts:
            cursor.execute("INSERT INTO mutation_log (mutation_id, status, kafka_topic, kafka_partition) "
                           "SELECT i, 'APPLIED', 'in', %s FROM unnest(%s::text[]) AS u(i)",
                           (firsts[0][1][1], [i for i, _ in firsts]))
    if not lost:
        tables.committed(publication)
    return lost


def retried(action: Callable[[], set[str]]) -> tuple[set[str], int]:
    """`action` until it ends without a SerializationFailure (as the committer retries); its
    answer and the failures it took. A deadlock is not retried: it fails the test."""
    failures = 0
    while True:
        try:
            return action(), failures
        except (errors.SerializationFailure, errors.UniqueViolation):  # the committer: one as the other
            failures += 1


def waiting_for_a_lock(settings: Settings, connection: psycopg.Connection) -> bool:
    pid = connection.info.backend_pid
    return query(settings, "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s", (pid,)) == [
        (True,)]


def claims(settings: Settings) -> dict[str, int]:
    return dict(query(settings, "SELECT mutation_id, kafka_partition FROM shard_claims"))


def test_a_claim_waits_for_the_transaction_holding_the_id_and_then_loses(settings, shard_connections):
    a, b = shard_connections["s0"], shard_connections["s1"]
    mine, theirs = ShardTables("s0"), ShardTables("s1")
    with a.transaction(), a.cursor() as cursor:
        assert mine.write(cursor, [], holding(0, ["x1", "x3", "x5"])) == set()
        answer: dict[str, tuple[set[str], int]] = {}
        claimer = threading.Thread(target=lambda: answer.setdefault("b", retried(
            lambda: attempt(b, theirs, [], holding(1, ["x0", "x3", "x4", "x5", "x6"])))))
        claimer.start()
        wait_for(lambda: waiting_for_a_lock(settings, b), 30, "the other shard to wait for this one's claims")
    mine.committed(holding(0, ["x1", "x3", "x5"]))
    claimer.join(60)
    assert not claimer.is_alive()
    assert answer["b"] == ({"x3", "x5"}, 1)  # its snapshot predates the commit: retried, then lost
    assert claims(settings) == {"x1": 0, "x3": 0, "x5": 0}


def test_a_first_copy_committed_after_a_claimers_snapshot_wins(settings, shard_connections):
    """The committed id's claims row is gone with its transaction: the claimer learns of the
    ledger row from the ledger's primary key, not from its snapshot."""
    a, b = shard_connections["s0"], shard_connections["s1"]
    mine, theirs = ShardTables("s0"), ShardTables("s1")
    b.execute("SELECT 1")  # b's snapshot
    assert attempt(a, mine, [("x", ("in", 0))], holding(0, [])) == set()
    with pytest.raises(errors.SerializationFailure):
        theirs.write(b.cursor(), [], holding(1, ["x"]))
    b.rollback()
    assert retried(lambda: attempt(b, theirs, [], holding(1, ["x"]))) == ({"x"}, 0)
    assert claims(settings) == {}


def test_a_claim_committed_after_a_first_copys_snapshot_wins(settings, shard_connections):
    a, b = shard_connections["s0"], shard_connections["s1"]
    mine, theirs = ShardTables("s0"), ShardTables("s1")
    a.execute("SELECT 1")  # a's snapshot
    assert attempt(b, theirs, [], holding(1, ["x"])) == set()
    with pytest.raises(errors.SerializationFailure):
        mine.write(a.cursor(), [("x", ("in", 0))], holding(0, []))
    a.rollback()
    assert retried(lambda: attempt(a, mine, [("x", ("in", 0))], holding(0, []))) == ({"x"}, 0)
    assert claims(settings) == {"x": 1}


def test_a_claim_waits_for_a_first_copy_being_committed_and_then_loses(settings, shard_connections):
    a, b = shard_connections["s0"], shard_connections["s1"]
    mine, theirs = ShardTables("s0"), ShardTables("s1")
    answer: dict[str, tuple[set[str], int]] = {}
    with a.transaction(), a.cursor() as cursor:
        assert mine.write(cursor, [("x", ("in", 0))], holding(0, [])) == set()
        cursor.execute("INSERT INTO mutation_log (mutation_id, status, kafka_topic, kafka_partition) "
                       "VALUES ('x', 'APPLIED', 'in', 0)")
        claimer = threading.Thread(target=lambda: answer.setdefault("b", retried(
            lambda: attempt(b, theirs, [], holding(1, ["w", "x"])))))
        claimer.start()
        wait_for(lambda: waiting_for_a_lock(settings, b), 30, "the other shard to wait for this one's first copy")
    claimer.join(60)
    assert not claimer.is_alive()
    assert answer["b"] == ({"x"}, 1)
    assert claims(settings) == {}


def together(start: threading.Barrier, answers: dict[str, set[str]], shard: str, connection: psycopg.Connection,
             tables: ShardTables, firsts, publication: Publication) -> None:
    start.wait()
    answers[shard] = retried(lambda: attempt(connection, tables, firsts, publication))[0]


def test_shards_claiming_overlapping_ids_at_once_never_deadlock_nor_both_win(settings, shard_connections):
    """Rounds of two shards claiming sets that overlap, started together (one holds its ids, the
    other commits some as first copies and holds the rest): waits, retries, one winner per id."""
    rng = random.Random(7)
    for round_ in range(12):
        ids = [f"r{round_}-{n}" for n in range(600)]
        left, right = rng.sample(ids, 400), rng.sample(ids, 400)
        sides = {
            "s0": (ShardTables("s0"), [], holding(0, left)),
            "s1": (ShardTables("s1"), [(i, ("in", 1)) for i in right[:200]], holding(1, right[200:])),
        }
        start = threading.Barrier(2)
        answers: dict[str, set[str]] = {}
        threads = [threading.Thread(target=together, args=(start, answers, shard, shard_connections[shard], *side))
                   for shard, side in sides.items()]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in threads)
        overlap = set(left) & set(right)
        assert sorted(len(answers[s]) == 0 for s in sides) == [False, True]  # one committed, one lost
        loser = next(s for s in sides if answers[s])
        assert answers[loser] == overlap
        winner_ids = set(left) if loser == "s1" else set(right[200:])
        assert {i for i, p in claims(settings).items() if i.startswith(f"r{round_}-")} == winner_ids


def test_the_jobs_role_may_do_all_of_it(roles: Roles):  # noqa: F811 (the fixture imported)
    """Claims (held and first copies, the ledger probe), the held rows' change, marks, cycles,
    the read: as the least-privileged role `mutagg roles grant` makes."""
    with connect(roles.job_settings) as a, connect(roles.job_settings) as b:
        mine, theirs = ShardTables("0of2"), ShardTables("1of2")
        assert attempt(a, mine, [("f", ("in", 0))], holding(0, ["h", "g"])) == set()
        with b.transaction(), b.cursor() as cursor:
            assert theirs.write(cursor, [], holding(1, ["h2"]), [("h", ("in", 0)), ("g", ("in", 0))]) == set()
        theirs.committed(holding(1, ["h2"]))
        assert attempt(a, mine, [("h", ("in", 0))], holding(0, ["g"])) == set()
        with a.transaction(), a.cursor() as cursor:
            view = mine.read(cursor, ["f", "h", "nothing"])
        assert cluster_run(roles.job_settings.database_url, 10, start=True) > 0  # prunes cycle rows too
    assert set(view.decided) == {"f", "h"}
    assert [h.mutation_id for h in view.publications["1of2"].held] == ["h2"]
    assert view.cycles == {("g", ("in", 0))}  # h's row went with h's commit


def test_cycle_rows_go_once_their_member_is_decided(settings, shard_connections):
    """A member's commit deletes its own row (not another partition's copy's); a cluster's start
    deletes every row whose id the ledger has (one a shard wrote while the member committed)."""
    a, b = shard_connections["s0"], shard_connections["s1"]
    mine, theirs = ShardTables("s0"), ShardTables("s1")
    assert attempt(a, mine, [], holding(0, ["m", "n"])) == set()
    with b.transaction(), b.cursor() as cursor:
        found = [("m", ("in", 0)), ("n", ("in", 0)), ("m", ("in", 5))]
        assert theirs.write(cursor, [], holding(1, []), found) == set()
    theirs.committed(holding(1, []))
    assert attempt(a, mine, [("m", ("in", 0))], holding(0, ["n"])) == set()
    rows = "SELECT mutation_id, kafka_partition FROM dependency_cycles ORDER BY 1, 2"
    assert query(settings, rows) == [("m", 5), ("n", 0)]
    cluster_run(settings.database_url, 10, start=True)
    assert query(settings, rows) == [("n", 0)]
