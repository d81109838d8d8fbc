"""The Postgres sink: take a micro-batch, decide it against the locked rows (or check the
decision made ahead of it, sinks/prepare_ahead.py), and commit entity rows, ledger and
conflicts in ONE transaction.

Contract: `commit(batch)` returns one `Outcome` per item, in order, and only
after the transaction that holds those outcomes has committed. Transient errors
are retried with backoff (an ambiguous COMMIT is settled by the ledger on the
retry); a batch that fails for a data reason (a data error of the database) is
split until the bad mutations are isolated and marked FAILED, and the rest
commits. Any other error is a bug, not data: `BatchFailed`, and the job stops.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import psycopg

from operators.conflicts import Decision
from operators.strategies import CustomStrategy
from schemas.ddl import LEDGER_COLUMNS
from schemas.errors import BatchFailed, ClaimLost, MutaggError
from schemas.mutation import Reason, Status
from schemas.registry import Registry
from sinks import entity_rows, fence, ledger
from sinks.database import connect, dropped_on_error, retry_transient
from sinks.decisions import BatchDecisions, Written, decide_batch, wanted_entities
from sinks.decisions import write as write_decisions
from sinks.faults import NO_FAULTS, FaultInjector
from sinks.gc_pause import collector_paused
from sinks.outcomes import Batch, Item, Outcome, decided_ids, from_decision, from_ledger, item_id, source_of
from sinks.prepare_ahead import PREPARE_AHEAD_OFF, PrepareAhead, Prepared
from sinks.riders import riders_batch_id

if TYPE_CHECKING:
    from operators.shard_view import Publication, View
    from sinks.shard_tables import ShardTables

log = logging.getLogger(__name__)

# Failures caused by the content of a batch: isolate the culprit, do not retry. Only the
# database's: a TypeError or ValueError of Python is a bug, and quarantining good mutations
# for it would hide it (a custom strategy's failure is decided as STRATEGY_ERROR instead).
DATA_ERRORS = (psycopg.DataError, psycopg.IntegrityError)


class PostgresCommitter:
    """Owns one connection; every `commit` is one transaction (or, on a data error, several)."""

    def __init__(
        self,
        database_url: str,
        registry: Registry,
        custom_strategies: Mapping[str, CustomStrategy],
        deadline_s: float = 300.0,
        faults: FaultInjector = NO_FAULTS,
        ahead: PrepareAhead = PREPARE_AHEAD_OFF,
        run_id: str | None = None,
        tables: ShardTables | None = None,
    ):
        """With `ahead` on, batches announced to it in commit order are decided ahead
        (sinks/prepare_ahead.py); with it off, or for a batch not announced, in their transaction.
        With a `run_id`, each batch transaction is counted and every new connection checked
        against the count (sinks/fence.py): a database that lost commits raises `DatabaseBehind`.
        With `tables` (a shard of the input), each batch writes its `SharedWrite` first, and
        `read_shared`/`publish` serve the shard's sequencing (operators/shard_view.py)."""
        self.tables = tables
        self.committed = fence.first_mark(run_id) if run_id else None
        self.faults = faults
        self.ahead = ahead
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
            try:
                fence.check(connection, self.committed, "after connecting")  # a failover may have lost commits
            except BaseException:
                connection.close()
                raise
            self._connection = connection
        return self._connection

    def verify_held(self, mark: fence.CommitMark, where: str) -> None:
        """Raise `DatabaseBehind` unless the database holds `mark`'s commits (e.g. a snapshot's)."""
        retry_transient(lambda: fence.check(self.connection, mark, where), self.deadline_s, drop=self.drop_connection)

    def close(self) -> None:
        self.ahead.close()
        self.drop_connection()

    def drop_connection(self) -> None:
        """Close the connection (after an error on it): the next use opens a new one."""
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        if self.tables is not None:
            self.tables.forget()  # what the shard published is known again only by rewriting it

    def decided(self, mutation_ids: set[str]) -> dict[str, int]:
        """Which of these ids the ledger already holds, with the Kafka timestamp (ms) each was read with."""
        if not mutation_ids:
            return {}

        def query() -> dict[str, int]:
            with self.connection.cursor() as cursor:
                found = ledger.read_times(cursor, sorted(mutation_ids))
            self.connection.rollback()
            return found

        return retry_transient(query, self.deadline_s, drop=self.drop_connection)

    def read_shared(self, wanted: Iterable[str]) -> View:
        """One consistent read of the shared tables for this shard (operators/shard_view.py)."""
        wanted = sorted(wanted)

        def query() -> View:
            with self.connection.cursor() as cursor:
                view = self.tables.read(cursor, wanted)
            self.connection.rollback()
            return view

        return retry_transient(query, self.deadline_s, drop=self.drop_connection)

    def publish(self, publication: Publication) -> None:
        """A transaction with no batch: the shard's held set, event time and end (a heartbeat).
        Raises `ClaimLost` (nothing written) if another partition claimed one of its held ids."""

        def write() -> None:
            with self.connection.transaction(), self.connection.cursor() as cursor:
                claimed = self.tables.write(cursor, (), publication, ())
                if claimed:
                    raise ClaimLost(claimed)
            self.tables.committed(publication)

        retry_transient(write, self.deadline_s, drop=self.drop_connection)

    def commit(self, batch: Batch, batch_id: str, written: list[Written] | None = None) -> list[Outcome]:
        """Commit `batch`; its outcomes. Raises `ServiceUnavailable` past the deadline and
        `BatchFailed` for an error that is neither data nor transient (nothing committed).
        Each transaction that commits appends what it wrote to `written` (for the audit)."""
        try:
            return retry_transient(lambda: self._attempt(batch, batch_id, written), self.deadline_s)
        except BatchFailed as exc:
            log.error("batch failed: the job stops", exc_info=exc,
                      extra={"batch_id": exc.batch_id, "mutation_id": exc.mutation_id, "error": str(exc)})
            raise
        except MutaggError:
            raise  # reported as it is (e.g. ServiceUnavailable)
        except DATA_ERRORS as exc:
            if batch.riders:  # split as if they had been handed over with it (they commit after it)
                return self.commit(Batch([*batch.items, *batch.riders], batch.resume_offsets, batch.shared),
                                   batch_id, written)
            if len(batch.items) == 1:
                return self._quarantine(batch.items[0], batch_id, exc, written)
            middle = len(batch.items) // 2
            log.warning(
                "batch failed for a data reason; splitting",
                extra={"batch_id": batch_id, "size": len(batch.items), "error": str(exc)[:300]},
            )
            first = self.commit(Batch(batch.items[:middle], shared=batch.shared), f"{batch_id}.1", written)
            second = Batch(batch.items[middle:], batch.resume_offsets, batch.shared)
            return first + self.commit(second, f"{batch_id}.2", written)
        except Exception as exc:  # neither data nor transient: a bug, never quarantined as data
            failed = BatchFailed(batch_id, exc)
            log.error("batch failed: the job stops", exc_info=exc,
                      extra={"batch_id": batch_id, "error": str(failed)})
            raise failed from exc

    def _attempt(self, batch: Batch, batch_id: str, written: list[Written] | None) -> list[Outcome]:
        try:
            # A broken connection is replaced on the retry; the UniqueViolation turned into a
            # SerializationFailure below is outside, so it keeps its connection, as it should.
            with dropped_on_error(self.drop_connection):
                with collector_paused():  # resumed after `_transaction` has let go of its working set
                    outcomes = self._transaction(batch, batch_id, written)
                self.faults.hit("after_commit")
                if batch.riders:  # crash tests: a part with priority-lane riders has committed
                    self.faults.hit("after_riders")
                self.faults.hit("drop_after_commit")
            return outcomes
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

    def _transaction(self, batch: Batch, batch_id: str, written: list[Written] | None) -> list[Outcome]:
        prepared = self.ahead.take(batch_id, batch.items)
        if prepared is not None:
            try:
                return self._write(batch, batch_id, written, prepared)
            except entity_rows.StaleRows:  # rolled back: a row it writes changed since it was read ahead
                self.ahead.count("stale")
        return self._write(batch, batch_id, written, None)

    def _write(self, batch: Batch, batch_id: str, written: list[Written] | None,
               prepared: Prepared | None) -> list[Outcome]:
        """One transaction: `prepared`'s decision if it still holds, else the batch decided here."""
        connection = self.connection
        wrote: list[Written] = []  # handed on only once the transaction has committed
        plans = self._prepare(connection)
        ids = decided_ids(batch.items)
        with connection.transaction(), connection.cursor() as cursor:
            # Per transaction, not per session: a setting lost with a session (a pooler, a
            # reset) would make the trigger take the job's writes for foreign ones, silently.
            xid = cursor.execute(_BEGIN).fetchone()[1]
            shared = batch.shared
            if shared is not None:  # claims first: a lost one rolls back before anything else is written
                claimed = self.tables.write(cursor, shared.firsts, shared.publication, shared.cycles)
                if claimed:
                    raise ClaimLost(claimed)
            self.faults.hit("bug_in_decide")
            decisions = None if prepared is None else self.ahead.confirmed(cursor, prepared, plans)
            checked = None
            if decisions is None:
                decisions = self._decide(cursor, batch, batch_id, ids, plans)
            else:
                checked = prepared.checked  # its rows are checked as they are written
            self.ahead.publish(batch_id, xid, decisions.touched, ids)
            now = datetime.now(UTC).isoformat()
            outcomes = write_decisions(cursor, decisions, plans, now, self._mid_copy, wrote, checked)
            if checked is not None:
                self.ahead.count("used")
            if batch.riders:  # decided here, after the batch's writes: as a batch of their own after it
                outcomes += self._ride(cursor, batch.riders, batch_id, plans, now, wrote)
            ledger.record_offsets(cursor, batch.resume_offsets, batch_id)
            mark = None if self.committed is None else self.committed.next(batch_id)
            if mark is not None:
                fence.record(cursor, mark)
            self.faults.hit("before_commit")
        if mark is not None:
            self.committed = mark
        if batch.shared is not None:
            self.tables.committed(batch.shared.publication)
        if written is not None:
            written += wrote
        return outcomes

    def _ride(self, cursor: psycopg.Cursor, riders: list[Item], batch_id: str,
              plans: dict[str, entity_rows.TablePlan], now: str, wrote: list[Written]) -> list[Outcome]:
        """Decide and write the priority-lane items that boarded batch `batch_id`, in its open
        transaction after its own writes (which they see, as a transaction after it would), under
        a batch id of their own that sorts right after it (`riders_batch_id`)."""
        rider_id = riders_batch_id(batch_id)
        decisions = self._decide(cursor, Batch(riders), rider_id, decided_ids(riders), plans)
        # The batch's own rows are still staged: each upsert empties its staging table first.
        return write_decisions(cursor, decisions, plans, now, self._mid_copy, wrote)

    def _decide(
        self, cursor: psycopg.Cursor, batch: Batch, batch_id: str, ids: list[str],
        plans: dict[str, entity_rows.TablePlan],
    ) -> BatchDecisions:
        """Decide the batch inside its transaction: lock and read its rows, look up its ids."""
        # Rows first, ledger second: a second instance on the same input waits on
        # the row locks and then finds the first one's decisions in the ledger.
        states = {
            type_name: entity_rows.load_for_update(cursor, plans[type_name], entity_ids)
            for type_name, entity_ids in sorted(wanted_entities(batch.items).items())
        }
        known = ledger.lookup(cursor, ids)
        return decide_batch(batch.items, states, known, plans, self.registry, self.custom_strategies, batch_id)

    def _mid_copy(self) -> None:
        self.faults.hit("mid_copy")

    def _quarantine(
        self, item: Item, batch_id: str, error: Exception, written: list[Written] | None
    ) -> list[Outcome]:
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
        if mutation_id is None:  # nothing to record: the batch wrote nothing
            if written is not None:
                written.append(Written(batch_id, now, None, None))
            return [from_decision(source, decision, batch_id, now)]
        row = dict(zip(LEDGER_COLUMNS, ledger.ledger_row(decision, source, self.registry, batch_id, now)))
        row["detail"] = f"{type(error).__name__}: {error}"[:2000]
        # The row that records a failure must not fail for the same reason.
        row = {k: v.replace("\x00", "\\x00") if isinstance(v, str) else v for k, v in row.items()}

        def write() -> list[Outcome]:
            with self.connection.transaction(), self.connection.cursor() as cursor:
                known = ledger.lookup(cursor, [mutation_id])
                if mutation_id in known:
                    return [from_ledger(source, known[mutation_id], "replayed", now)]
                ledger.write(cursor, [tuple(row.values())], [])
            if written is not None:
                written.append(Written(batch_id, now, ledger.ledger_frame([tuple(row.values())]), None))
            return [from_decision(source, decision, batch_id, now)]

        return retry_transient(write, self.deadline_s, drop=self.drop_connection)


_BEGIN = b"SELECT set_config('mutagg.writer', 'job', true), pg_current_xact_id()::text"
"""Mark the transaction's writes as the job's (for the foreign-writer trigger); its id."""
