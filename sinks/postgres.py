"""The Postgres sink: take a micro-batch, decide it against the locked rows, and
commit entity rows, ledger and conflicts in ONE transaction.

Contract: `commit(batch)` returns one `Outcome` per item, in order, and only
after the transaction that holds those outcomes has committed. Transient errors
are retried with backoff (an ambiguous COMMIT is settled by the ledger on the
retry); a batch that fails for a data reason is split until the bad mutations
are isolated and marked FAILED, and the rest commits.
"""

from __future__ import annotations

import gc
import logging
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime

import psycopg

from operators.conflicts import Decision, decide
from operators.entity_state import EntityState
from operators.strategies import CustomStrategy
from schemas.ddl import LEDGER_COLUMNS
from schemas.mutation import VALIDATION_REASONS, Mutation, Reason, Rejection, Status, is_dlq_replay
from schemas.registry import Registry
from sinks import entity_rows, ledger
from sinks.database import connect, retry_transient
from sinks.faults import NO_FAULTS, FaultInjector
from sinks.outcomes import (
    Batch,
    Item,
    Outcome,
    again,
    from_decision,
    from_ledger,
    item_id,
    rejected_decision,
    source_of,
)

log = logging.getLogger(__name__)

# Failures caused by the content of a batch: isolate the culprit, do not retry.
DATA_ERRORS = (psycopg.DataError, psycopg.IntegrityError, ValueError, ArithmeticError, TypeError)


class PostgresCommitter:
    """Owns one connection; every `commit` is one transaction (or, on a data error, several)."""

    def __init__(
        self,
        database_url: str,
        registry: Registry,
        custom_strategies: Mapping[str, CustomStrategy],
        deadline_s: float = 300.0,
        faults: FaultInjector = NO_FAULTS,
    ):
        self.faults = faults
        self.database_url = database_url
        self.registry = registry
        self.custom_strategies = custom_strategies
        self.deadline_s = deadline_s
        self._connection: psycopg.Connection | None = None
        self._prepared: psycopg.Connection | None = None
        self._plans: dict[str, entity_rows.TablePlan] = {}

    @property
    def connection(self) -> psycopg.Connection:
        if self._connection is None or self._connection.closed:
            connection = connect(self.database_url, self.deadline_s, "mutagg-committer")
            # One snapshot per transaction: the ledger look-up must see what the row locks saw.
            # Under READ COMMITTED a second instance could lock no row for an entity the first
            # was creating, then find the creation in the ledger once committed, and decide the
            # next update against the missing row. Now it retries (SerializationFailure or the
            # ledger's primary key) and sees both.
            connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            self._connection = connection
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def decided(self, mutation_ids: set[str]) -> set[str]:
        """Which of these ids the ledger already holds."""
        if not mutation_ids:
            return set()

        def query() -> set[str]:
            try:
                with self.connection.cursor() as cursor:
                    found = ledger.lookup(cursor, sorted(mutation_ids))
                self.connection.rollback()
                return set(found)
            except psycopg.OperationalError:
                self.close()
                raise

        return retry_transient(query, self.deadline_s, "PostgreSQL")

    def commit(self, batch: Batch, batch_id: str) -> list[Outcome]:
        try:
            return retry_transient(
                lambda: self._attempt(batch, batch_id), self.deadline_s, "PostgreSQL"
            )
        except DATA_ERRORS as exc:
            if len(batch.items) == 1:
                return self._quarantine(batch.items[0], batch_id, exc)
            middle = len(batch.items) // 2
            log.warning(
                "batch failed for a data reason; splitting",
                extra={"batch_id": batch_id, "size": len(batch.items), "error": str(exc)[:300]},
            )
            first = self.commit(Batch(batch.items[:middle]), f"{batch_id}.1")
            return first + self.commit(Batch(batch.items[middle:], batch.resume_offsets), f"{batch_id}.2")

    def _attempt(self, batch: Batch, batch_id: str) -> list[Outcome]:
        try:
            with _collector_paused():  # resumed after `_transaction` has let go of its working set
                outcomes = self._transaction(batch, batch_id)
            self.faults.hit("after_commit")
            self.faults.hit("drop_after_commit")
            return outcomes
        except psycopg.OperationalError:
            self.close()  # a broken connection is replaced on the retry
            raise
        except psycopg.errors.UniqueViolation as exc:
            # Another instance committed one of these ids meanwhile: the retry sees it in the ledger.
            raise psycopg.errors.SerializationFailure(str(exc)) from exc

    def _prepare(self, connection: psycopg.Connection) -> dict[str, entity_rows.TablePlan]:
        """Per connection, once: the statements of every entity type, and their staging tables
        (committed on their own, so a batch that rolls back cannot take them with it)."""
        if self._prepared is not connection:
            self._plans = {name: entity_rows.plan(t, connection) for name, t in self.registry.entity_types.items()}
            with connection.transaction(), connection.cursor() as cursor:
                cursor.execute(b"; ".join(p.stage for p in self._plans.values()))
            self._prepared = connection
        return self._plans

    def _transaction(self, batch: Batch, batch_id: str) -> list[Outcome]:
        connection = self.connection
        plans = self._prepare(connection)
        with connection.transaction(), connection.cursor() as cursor:
            # Per transaction, not per session: a setting lost with a session (a pooler, a
            # reset) would make the trigger take the job's writes for foreign ones, silently.
            cursor.execute("SET LOCAL mutagg.writer = 'job'")
            wanted: dict[str, set[str]] = defaultdict(set)
            for item in batch.items:
                if isinstance(item, Mutation):
                    wanted[item.entity_type].add(item.entity_id)
            # Rows first, ledger second: a second instance on the same input waits on
            # the row locks and then finds the first one's decisions in the ledger.
            states = {
                type_name: entity_rows.load_for_update(cursor, plans[type_name], entity_ids)
                for type_name, entity_ids in sorted(wanted.items())
            }
            ids = sorted({i for i in map(item_id, batch.items) if i is not None})
            known = ledger.lookup(cursor, ids)
            now = datetime.now(UTC).isoformat()
            decided_here: dict[str, Outcome] = {}
            outcomes: list[Outcome] = []
            ledger_rows, conflict_rows, duplicates, resolutions, revised = [], [], [], [], []
            touched: dict[str, dict[str, EntityState]] = defaultdict(dict)
            registry, custom = self.registry, self.custom_strategies
            for item in batch.items:
                is_mutation = isinstance(item, Mutation)
                source = item if is_mutation else source_of(item)
                mutation_id = item.id if is_mutation else item_id(item)
                earlier = known.get(mutation_id) if known and mutation_id is not None else None
                if earlier is not None and _revisable(item, earlier):
                    revised.append(mutation_id)
                    earlier = None
                if earlier is not None:
                    same = ledger.coordinates(source) == (
                        earlier.kafka_topic, earlier.kafka_partition, earlier.kafka_offset
                    )
                    if not same:
                        duplicates.append(source)
                    outcomes.append(from_ledger(source, earlier, "replayed" if same else "duplicate", now))
                    continue
                if mutation_id is not None and mutation_id in decided_here:
                    duplicates.append(source)
                    outcomes.append(again(source, decided_here[mutation_id]))
                    continue
                if is_mutation:
                    state = states[item.entity_type][item.entity_id]
                    version = state.version
                    decision = decide(state, item, plans[item.entity_type].entity_type, custom)
                    if state.version != version:  # only a written change moves the version
                        touched[item.entity_type][item.entity_id] = state
                else:
                    decision = rejected_decision(item)
                if mutation_id is not None:
                    ledger_rows.append(ledger.ledger_row(decision, source, registry, batch_id, now))
                    if decision.conflicts:
                        conflict_rows.extend(ledger.conflict_row(c, batch_id, now) for c in decision.conflicts)
                    if is_mutation and item.resolves and decision.status in _RESOLVING:
                        resolutions.extend((cid, item.id) for cid in item.resolves)
                outcome = from_decision(source, decision, batch_id, now)
                outcomes.append(outcome)
                if mutation_id is not None:
                    decided_here[mutation_id] = outcome
            for type_name in sorted(touched):
                entity_rows.upsert(cursor, plans[type_name], touched[type_name], self._mid_copy)
            ledger.revise(cursor, revised, batch_id)
            ledger.write(cursor, ledger_rows, conflict_rows)
            ledger.record_duplicates(cursor, duplicates, batch_id)
            ledger.close_resolved(cursor, resolutions)
            ledger.record_offsets(cursor, batch.resume_offsets, batch_id)
            self.faults.hit("before_commit")
        return outcomes

    def _mid_copy(self) -> None:
        self.faults.hit("mid_copy")

    def _quarantine(self, item: Item, batch_id: str, error: Exception) -> list[Outcome]:
        """Record one mutation that fails on its own as FAILED, in a transaction of its own."""
        source = source_of(item)
        mutation_id = item_id(item)
        log.error(
            "mutation quarantined after a database error",
            extra={"mutation_id": mutation_id, "batch_id": batch_id, "error": str(error)[:500]},
        )
        decision = Decision(
            mutation_id or "", Status.FAILED, Reason.DATABASE_ERROR,
            getattr(source, "entity_type", None), getattr(source, "entity_id", None), None,
            getattr(source, "edge_node_id", None),
        )
        now = datetime.now(UTC).isoformat()
        if mutation_id is None:
            return [from_decision(source, decision, batch_id, now)]
        row = dict(zip(LEDGER_COLUMNS, ledger.ledger_row(decision, source, self.registry, batch_id, now)))
        row["detail"] = f"{type(error).__name__}: {error}"[:2000]
        # The row that records a failure must not fail for the same reason.
        row = {k: v.replace("\x00", "\\x00") if isinstance(v, str) else v for k, v in row.items()}

        def write() -> list[Outcome]:
            try:
                with self.connection.transaction(), self.connection.cursor() as cursor:
                    known = ledger.lookup(cursor, [mutation_id])
                    if mutation_id in known:
                        return [from_ledger(source, known[mutation_id], "replayed", now)]
                    ledger.write(cursor, [tuple(row.values())], [])
                return [from_decision(source, decision, batch_id, now)]
            except psycopg.OperationalError:
                self.close()
                raise

        return retry_transient(write, self.deadline_s, "PostgreSQL")


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector for one transaction.

    A batch allocates some 10^5 small objects (row states, provenance, decisions) that
    all live until the transaction ends and then go by reference counting (they form no
    cycles). With the collector on, they outlive several young collections, are promoted,
    and set off full collections over the whole heap: about a third of the batch's CPU.
    The collector resumes after the batch (never left off by this function; with several
    committers in one process, the one that paused it resumes it).
    """
    paused = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if paused:
            gc.enable()


_RESOLVING = (Status.APPLIED, Status.CONFLICT)
"""Statuses with which a mutation carrying a resolution closes its conflicts."""


def _revisable(item: Item, earlier: ledger.LedgerEntry) -> bool:
    """A DLQ replay may decide anew an id whose message was rejected as invalid (e.g. before a registry fix)."""
    replayed = item.replayed if isinstance(item, Mutation) else isinstance(item, Rejection) and is_dlq_replay(item.raw)
    read_at = (earlier.kafka_topic, earlier.kafka_partition, earlier.kafka_offset)
    this_message = ledger.coordinates(source_of(item)) == read_at
    return (
        replayed and not this_message  # a crash replay of the re-submission itself changes nothing
        and earlier.status == Status.REJECTED.value and earlier.reason in VALIDATION_REASONS
    )
