"""`mutagg audit compact`: merge a closed day's small files into one file per
(data set, entity type), without duplicating or losing a row.

Per partition (data set, day, entity type):
1. Roll forward: delete every file that a compacted file of the partition names as
   one of its sources (left behind by a crash after that compacted file appeared).
2. Sources: the compacted files that remain, and the part files - for conflicts only
   those without an OPEN conflict, since such a file is rewritten when a person
   resolves the conflict and must stay a part file until then.
3. Stream the sources into ``compacted-<digest of the source names>.parquet``
   (written atomically), keeping one row per key (mutation_id / conflict_id); its
   footer lists the sources and the batches it holds. Its row count is verified.
4. Delete the sources.

Rows are never lost: sources go only after the compacted file is verified. A crash
between 3 and 4 leaves rows in two visible files until the next run (step 1 ends
it, and the export never rewrites a batch a compacted file holds); readers that
must be exact even then dedupe on the key (README). Only closed days are
compacted: the day must have ended at least `grace` ago, so no batch is in flight.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from schemas.audit import CONFLICTS, DATASETS, KEYS, SCHEMAS
from sinks.audit_store import AuditError, AuditFile, AuditStore, compacted_name

log = logging.getLogger(__name__)
ROW_GROUP_ROWS = 128 * 1024


@dataclass(frozen=True, slots=True)
class CompactionPlan:
    leftovers: list[AuditFile]
    """Files a compacted file already holds (or stale temporary files): delete them."""
    sources: list[AuditFile]
    """Files to merge, compacted ones first; empty when there is nothing to gain."""


@dataclass(frozen=True, slots=True)
class PartitionReport:
    partition: str
    merged: int
    rows: int
    output: str | None
    leftovers_removed: int


def plan_partition(
    files: list[AuditFile],
    compacted_sources: dict[str, list[str]],
    holds_open: set[str],
    stale_before: datetime,
) -> CompactionPlan:
    """Decide what to delete and what to merge in one partition. Pure."""
    held = {name for sources in compacted_sources.values() for name in sources}
    leftovers = [
        f for f in files
        if (f.name in held and (f.is_part or f.is_compacted))
        or (f.is_temp and f.modified is not None and f.modified < stale_before)
    ]
    gone = {f.name for f in leftovers}
    compacted = [f for f in files if f.is_compacted and f.name not in gone]
    parts = [f for f in files if f.is_part and f.name not in gone and f.name not in holds_open]
    if not parts and len(compacted) <= 1:
        return CompactionPlan(leftovers, [])
    return CompactionPlan(leftovers, sorted(compacted, key=lambda f: f.name) + sorted(parts, key=lambda f: f.name))


def _first_of_each_key(table: pa.Table, key: str, seen: set[str]) -> pa.Table:
    keep = []
    for value in table.column(key).to_pylist():
        keep.append(value not in seen)
        seen.add(value)
    return table.filter(pa.array(keep, pa.bool_()))


def _merge(store: AuditStore, dataset: str, sources: list[AuditFile]) -> Callable[[pq.ParquetWriter], int]:
    schema, key = SCHEMAS[dataset], KEYS[dataset]

    def write(writer: pq.ParquetWriter) -> int:
        seen: set[str] = set()
        pending: list[pa.Table] = []
        rows = pending_rows = 0
        for source in sources:
            table = _first_of_each_key(store.read_table(source.path, schema), key, seen)
            pending.append(table)
            pending_rows += table.num_rows
            if pending_rows >= ROW_GROUP_ROWS:
                writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
                rows += pending_rows
                pending, pending_rows = [], 0
        if pending:
            writer.write_table(pa.concat_tables(pending), row_group_size=ROW_GROUP_ROWS)
            rows += pending_rows
        return rows

    return write


def _holds_open(store: AuditStore, dataset: str, files: list[AuditFile]) -> set[str]:
    if dataset != CONFLICTS:
        return set()
    holding = set()
    for audit_file in files:
        if audit_file.is_part:
            statuses = store.read_table(audit_file.path, SCHEMAS[CONFLICTS]).column("status")
            if pc.any(pc.equal(statuses, "OPEN")).as_py():
                holding.add(audit_file.name)
    return holding


def compact_partition(store: AuditStore, dataset: str, directory: str, now: datetime) -> PartitionReport:
    files = [f for f in store.list_files(directory) if f.partition == directory]
    metadata = {f.name: store.file_metadata(f.path) for f in files if f.is_compacted}
    sources_of = {name: json.loads(m.get("mutagg.sources", "[]")) for name, m in metadata.items()}
    plan = plan_partition(files, sources_of, _holds_open(store, dataset, files), now - timedelta(hours=1))
    for leftover in plan.leftovers:
        store.delete(leftover.path)
    if not plan.sources:
        return PartitionReport(directory, 0, 0, None, len(plan.leftovers))
    names = sorted(f.name for f in plan.sources)
    batches: set[str] = set()
    for source in plan.sources:
        found = metadata.get(source.name) or store.file_metadata(source.path)
        batches.update(json.loads(found.get("mutagg.batches", "[]")))
    output = f"{directory}/{compacted_name(names)}"
    rows = store.write_parquet(output, _merge(store, dataset, plan.sources), SCHEMAS[dataset], {
        "dataset": dataset,
        "sources": json.dumps(names),
        "batches": json.dumps(sorted(batches)),
    })
    if store.row_count(output) != rows:
        store.delete(output)
        raise AuditError(f"compacted file {output} does not hold the {rows} rows written; sources kept")
    for source in plan.sources:
        store.delete(source.path)
    return PartitionReport(directory, len(plan.sources), rows, output, len(plan.leftovers))


def compact_day(
    store: AuditStore,
    day: date,
    now: datetime | None = None,
    grace: timedelta = timedelta(hours=1),
    progress: Callable[[PartitionReport], None] | None = None,
) -> list[PartitionReport]:
    """Compact every partition of `day` in both data sets; refuses a day not yet closed."""
    now = now or datetime.now(UTC)
    closes = datetime.combine(day + timedelta(days=1), time(), UTC) + grace
    if now < closes:
        raise AuditError(f"{day} is not closed yet: compact it after {closes.isoformat()}")
    reports = []
    for dataset in DATASETS:
        day_dir = store.day_dir(dataset, day)
        for child in store.list_children(day_dir):
            report = compact_partition(store, dataset, f"{day_dir}/{child}", now)
            log.info("audit partition compacted", extra={
                "partition": report.partition, "merged": report.merged, "rows": report.rows,
                "leftovers_removed": report.leftovers_removed,
            })
            if progress is not None:
                progress(report)
            reports.append(report)
    return reports
