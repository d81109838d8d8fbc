"""What `mutagg verify` checks about the Parquet audit and the entity tables.

- `check_audit`: every settled batch's ledger rows and conflicts are in the audit data
  sets exactly once (by key and batch), conflicts with the status the database holds now.
  A mutation's row under a batch whose decision was revised (`mutation_log_history`: a DLQ
  replay decided it anew) may stay. Only the days from the scope's start are read, and
  only two or three columns of them. Missing or stale rows name batches that `--repair`
  re-exports (sinks/audit.py, idempotent); a row twice or a row the database does not
  hold is reported, not repaired.
- `check_versions`: no entity is behind the highest version its APPLIED ledger rows
  reached (or missing while they say it exists). An entity ahead of the ledger is
  normal: writers outside the job bump `version` (DESIGN section 5); it is counted only.
"""

from __future__ import annotations

from datetime import date

import psycopg
import pyarrow as pa
import pyarrow.dataset as ds
from psycopg import sql

from mutagg.verify_checks import Finding, LedgerRow
from schemas.audit import CONFLICTS, KEYS, MUTATIONS
from schemas.registry import Registry
from sinks.audit_store import SUFFIX, AuditStore


def audit_files(store: AuditStore, dataset: str, since: date | None) -> list[str]:
    """The Parquet files of `dataset` in the day partitions from `since` (all days if None)."""
    days = [d for d in store.list_children(f"{store.root}/{dataset}") if d.startswith("date=")]
    if since is not None:
        days = [d for d in days if d.removeprefix("date=") >= since.isoformat()]
    return [f.path for day in days for f in store.list_files(f"{store.root}/{dataset}/{day}")
            if f.name.endswith(SUFFIX) and not f.name.startswith(".")]


def audit_rows(store: AuditStore, dataset: str, since: date | None, columns: list[str]) -> pa.Table:
    paths = audit_files(store, dataset, since)
    if not paths:
        return pa.table({name: pa.array([], pa.string()) for name in columns})
    return ds.dataset(paths, filesystem=store.fs, format="parquet").to_table(columns=columns)


def _occurrences(table: pa.Table, columns: list[str]) -> dict[tuple, int]:
    counted = table.group_by(columns).aggregate([([], "count_all")])
    return dict(zip(zip(*(counted[c].to_pylist() for c in columns)), counted["count_all"].to_pylist()))


def check_audit(
    connection: psycopg.Connection, store: AuditStore, rows: list[LedgerRow], since: date | None
) -> Finding:
    """Ledger rows and conflicts of the settled batches against the audit files."""
    finding = Finding("audit")
    batches = sorted({row.batch_id for row in rows if row.batch_id})
    if not batches:
        return finding
    expected_mutations = set(connection.execute(
        "SELECT mutation_id, batch_id FROM mutation_log WHERE batch_id = ANY(%s)", (batches,)).fetchall())
    revised = set(connection.execute(
        "SELECT mutation_id, batch_id FROM mutation_log_history WHERE batch_id = ANY(%s)", (batches,)).fetchall())
    expected_conflicts = dict(((c, b), s) for c, b, s in connection.execute(
        "SELECT conflict_id, batch_id, status FROM conflicts WHERE batch_id = ANY(%s)", (batches,)).fetchall())
    in_scope = set(batches)
    _compare(finding, MUTATIONS, expected_mutations, revised, in_scope,
             _occurrences(audit_rows(store, MUTATIONS, since, [KEYS[MUTATIONS], "batch_id"]),
                          [KEYS[MUTATIONS], "batch_id"]))
    conflicts = audit_rows(store, CONFLICTS, since, [KEYS[CONFLICTS], "batch_id", "status"])
    _compare(finding, CONFLICTS, set(expected_conflicts), set(), in_scope,
             _occurrences(conflicts, [KEYS[CONFLICTS], "batch_id"]))
    exported = dict(zip(zip(conflicts[KEYS[CONFLICTS]].to_pylist(), conflicts["batch_id"].to_pylist()),
                        conflicts["status"].to_pylist()))
    for key, status in expected_conflicts.items():
        if key in exported and exported[key] != status:
            finding.problem("conflict status stale", 1, f"conflict {key[0]}: audit {exported[key]}, database {status}")
            finding.repairable.add(key[1])
    return finding


def _compare(
    finding: Finding, dataset: str, expected: set[tuple], allowed: set[tuple], batches: set[str],
    present: dict[tuple, int],
) -> None:
    finding.checked += len(expected)
    for key in expected:
        count = present.get(key, 0)
        if count == 0:
            finding.problem(f"{dataset}: missing", 1, f"{key[0]} (batch {key[1]})")
            finding.repairable.add(key[1])
        elif count > 1:
            finding.problem(f"{dataset}: more than once", 1, f"{key[0]} {count} times (batch {key[1]})")
    for key in present:
        if key[1] in batches and key not in expected and key not in allowed:
            finding.problem(f"{dataset}: not in the database", 1, f"{key[0]} (batch {key[1]})")


_VERSIONS = """
SELECT count(*),
       count(*) FILTER (WHERE e.{key} IS NULL),
       count(*) FILTER (WHERE e.version < l.version),
       count(*) FILTER (WHERE e.version > l.version),
       (array_agg(l.entity_id || ': entity ' || COALESCE(e.version::text, 'missing') || ', ledger '
                  || l.version ORDER BY l.entity_id) FILTER (WHERE e.{key} IS NULL OR e.version < l.version))[1:5]
FROM (SELECT entity_id, max(version) AS version FROM mutation_log
      WHERE entity_type = %s AND status = 'APPLIED' AND version IS NOT NULL GROUP BY 1) l
LEFT JOIN {table} e ON e.{key} = l.entity_id
"""


def check_versions(connection: psycopg.Connection, registry: Registry) -> Finding:
    """Entities behind (or missing for) their highest applied ledger version, per entity type."""
    finding = Finding("versions")
    for entity_type in registry:
        statement = sql.SQL(_VERSIONS).format(key=sql.Identifier(entity_type.key),
                                              table=sql.Identifier(entity_type.table))
        total, missing, behind, ahead, samples = connection.execute(statement, (entity_type.name,)).fetchone()
        finding.checked += total
        if ahead:
            finding.notes["ahead of the ledger (writers outside the job)"] += ahead
        for kind, count in (("entity row missing", missing), ("entity behind the ledger", behind)):
            if count:
                finding.problem(kind, count)
        for sample in samples or ():
            if len(finding.samples) < 5:
                finding.samples.append(f"{entity_type.name} {sample}")
    return finding
