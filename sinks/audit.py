"""The audit sink: after a batch commits, its committed ledger and conflict rows are
exported to the Parquet data sets analysts query (DESIGN section 6).

Contract of `export_batches`: for each given batch it writes one file per (data
set, UTC day, entity type) named ``part-<batch_id>.parquet``, each atomically,
with the rows the database holds for that batch. Running it again for the same
batch writes the same files with the same rows, so a replay after a crash never
duplicates: it only completes what the crash interrupted. A mutation that closed
a manual conflict makes the conflict's own file be rewritten too, so the
``conflicts`` data set shows each conflict's latest status. A batch of a closed
day that `mutagg audit compact` merged already is not written again.

In the job, `AuditExporter.export_committed` builds the files of the batches it saw
commit from what their transactions wrote (sinks/audit_batch.py): the same files,
without reading the rows back. `export_batches` reads them back: the repair path.

Crash safety in the job: the export runs after the commit and before the acks.
A crash in between is repaired on restart: replayed messages come back from the
ledger with their original batch ids (read back and re-exported here), and
`catch_up` reads back whatever batch of the last days has no file yet.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from typing import TypeVar

import psycopg

from mutagg.retry import Backoff, Retry
from sinks.audit_batch import written_parts
from sinks.audit_rows import AuditPart, batches_between, expected_files, read_parts
from sinks.audit_store import AuditError, AuditStore, part_name
from sinks.database import connect, dropping
from sinks.decisions import Written
from sinks.outcomes import Outcome

log = logging.getLogger(__name__)
T = TypeVar("T")

EXPORTED_KINDS = ("decided", "replayed")
__all__ = ["AuditError", "AuditExporter", "batches_to_export", "export_batches", "missing_batches"]


def batches_to_export(outcomes: Iterable[Outcome]) -> list[str]:
    """Batch ids whose files these outcomes call for: the batches just committed, and the
    original batches of replayed messages (their export may have been cut by a crash)."""
    return sorted({o.batch_id for o in outcomes if o.batch_id and o.kind in EXPORTED_KINDS})


def covered_batches(store: AuditStore, partition_dir: str) -> set[str]:
    """Batches whose rows a compacted file of this partition already holds."""
    covered: set[str] = set()
    for audit_file in store.list_files(partition_dir):
        if audit_file.is_compacted and audit_file.partition == partition_dir:
            covered.update(json.loads(store.file_metadata(audit_file.path).get("mutagg.batches", "[]")))
    return covered


def write_parts(store: AuditStore, parts: Iterable[AuditPart], today: date | None = None) -> list[str]:
    """Write each part atomically at its deterministic path; return the paths written."""
    today = today or datetime.now(UTC).date()
    coverage: dict[str, set[str]] = {}
    written = []
    for part in parts:
        directory = store.partition_dir(part.dataset, part.day, part.entity_type)
        if part.day < today:  # only closed days are ever compacted
            if directory not in coverage:
                coverage[directory] = covered_batches(store, directory)
            if part.batch_id in coverage[directory]:
                continue
        path = f"{directory}/{part_name(part.batch_id)}"
        store.write_table(path, part.table, {
            "dataset": part.dataset,
            "batches": json.dumps([part.batch_id]),
            "rows": str(part.table.num_rows),
        })
        written.append(path)
    return written


def export_batches(
    connection: psycopg.Connection,
    audit: str | AuditStore,
    batch_ids: Iterable[str],
    today: date | None = None,
    *,
    entity_types: Iterable[str],
) -> list[str]:
    """Export the committed rows of `batch_ids` (see the module docstring); return the paths
    written. `entity_types`: the registry's names (other types land in ``_invalid``)."""
    store = audit if isinstance(audit, AuditStore) else AuditStore(audit)
    return write_parts(store, read_parts(connection, batch_ids, entity_types=entity_types), today)


def missing_batches(
    connection: psycopg.Connection, store: AuditStore, since: datetime, until: datetime | None = None,
    *, entity_types: Iterable[str],
) -> list[str]:
    """Batches of [since, until) with a file absent from the audit, plus those whose
    conflicts were resolved in the window (their conflict files changed since)."""
    until = until or datetime.now(UTC) + timedelta(minutes=1)
    expected, resolved = expected_files(connection, since, until, entity_types=entity_types)
    present: dict[str, set[str]] = defaultdict(set)
    covered: dict[str, set[str]] = {}
    for dataset, day in sorted({(d, day) for d, _b, day, _e in expected}):
        for audit_file in store.list_files(store.day_dir(dataset, day)):
            present[audit_file.partition].add(audit_file.name)
    missing = set(resolved)
    for dataset, batch_id, day, entity_type in expected:
        directory = store.partition_dir(dataset, day, entity_type)
        if part_name(batch_id) in present[directory]:
            continue
        if directory not in covered:
            covered[directory] = covered_batches(store, directory)
        if batch_id not in covered[directory]:
            missing.add(batch_id)
    return sorted(missing)


class AuditExporter:
    """The job's audit sink: owns a read connection and the store; bounded retries.

    `export_committed(outcomes, written)` is the one call the job makes after a commit.
    An audit URI of "" disables the sink (every call returns []). `entity_types`: the
    registry's type names, the only ``entity_type`` partitions besides ``_invalid``.
    """

    def __init__(
        self,
        database_url: str,
        audit_uri: str,
        deadline_s: float = 120.0,
        endpoint_override: str | None = None,
        chunk: int = 50,
        *,
        entity_types: Iterable[str],
    ):
        self.database_url = database_url
        self.entity_types = tuple(sorted(set(entity_types)))
        self.deadline_s = deadline_s
        self.chunk = chunk
        self.store = AuditStore(audit_uri, endpoint_override) if audit_uri else None
        self._connection: psycopg.Connection | None = None

    @property
    def connection(self) -> psycopg.Connection:
        if self._connection is None or self._connection.closed:
            self._connection = connect(self.database_url, self.deadline_s, "mutagg-audit")
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def export_outcomes(self, outcomes: Iterable[Outcome]) -> list[str]:
        """Export the batches these outcomes call for, read back."""
        return self.export(batches_to_export(outcomes))

    def export_committed(self, outcomes: Iterable[Outcome], written: Iterable[Written]) -> list[str]:
        """Export the batches these outcomes call for: those with their transactions in
        `written` (all of a batch's that committed) built from it, the others read back."""
        outcomes = list(outcomes)
        batches = batches_to_export(outcomes)
        if self.store is None or not batches:
            return []
        wanted = set(batches)
        # A batch with a message replayed from it committed in a transaction not (or not all) in
        # `written` (e.g. a COMMIT whose answer was lost, then retried): it is read back.
        replayed = {o.batch_id for o in outcomes if o.kind == "replayed"}
        fresh = [w for w in written if w.batch_id in wanted and w.batch_id not in replayed]
        store = self.store
        paths: list[str] = []
        if fresh:
            began = time.perf_counter()
            paths = self._retry(lambda: write_parts(
                store, written_parts(self.connection, fresh, entity_types=self.entity_types)))
            built = sorted({w.batch_id for w in fresh})
            log.info(
                "audit files written",
                extra={"batch_id": built[0] if len(built) == 1 else None, "batches": len(built),
                       "files": len(paths), "seconds": round(time.perf_counter() - began, 4), "from": "batch"},
            )
        return paths + self.export(wanted - {w.batch_id for w in fresh})

    def export(self, batch_ids: Iterable[str], progress: Callable[[int, int], None] | None = None) -> list[str]:
        """Export these batches (in chunks), retrying transient failures until the deadline."""
        batches = sorted(set(batch_ids))
        if self.store is None or not batches:
            return []
        store = self.store
        written: list[str] = []
        for start in range(0, len(batches), self.chunk):
            chunk = batches[start : start + self.chunk]
            began = time.perf_counter()
            paths = self._retry(lambda chunk=chunk: export_batches(
                self.connection, store, chunk, entity_types=self.entity_types))
            written += paths
            log.info(
                "audit files written",
                extra={"batch_id": chunk[0] if len(chunk) == 1 else None, "batches": len(chunk),
                       "files": len(paths), "seconds": round(time.perf_counter() - began, 4)},
            )
            if progress is not None:
                progress(min(start + self.chunk, len(batches)), len(batches))
        return written

    def catch_up(self, lookback: timedelta = timedelta(days=2)) -> list[str]:
        """Export every batch of the last `lookback` whose files are missing (run at start)."""
        if self.store is None:
            return []
        since = datetime.now(UTC) - lookback
        store = self.store
        missing = self._retry(lambda: missing_batches(
            self.connection, store, since, entity_types=self.entity_types))
        if missing:
            log.warning("audit catching up", extra={"batches": len(missing), "since": since.isoformat()})
        return self.export(missing)

    def batches_since(self, since: datetime, until: datetime | None = None) -> list[str]:
        until = until or datetime.now(UTC) + timedelta(minutes=1)
        return self._retry(lambda: batches_between(self.connection, since, until))

    def _retry(self, action: Callable[[], T]) -> T:
        return Retry(_waits_on, self.deadline_s, (OSError, psycopg.OperationalError), Backoff(initial_s=0.2),
                     give_up=_export_failed)(dropping(action, self.close))


def _waits_on(error: BaseException) -> str:
    on = "PostgreSQL" if isinstance(error, psycopg.OperationalError) else "the audit store"
    return f"{on} (audit export)"


def _export_failed(_what: str, attempts: int, deadline_s: float, error: BaseException) -> AuditError:
    return AuditError(f"audit export failed after {attempts} attempts over {deadline_s:.0f}s: {error}")
