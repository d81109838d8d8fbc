"""`mutagg migrate`: create or upgrade the job's tables for the registry; idempotent.

A migration is one transaction under `lock_timeout`: a table it must change that an ERP
transaction holds makes it roll back, wait and try again (a bounded number of times),
never queue, since a DDL lock request waiting in the queue stalls every later writer of
that table. A schema already current (the recorded version and DDL fingerprint match,
every entity table has its trigger) is left alone after reading the catalog and
`mutagg_schema` only: no lock stronger than ACCESS SHARE, nothing an ERP writer waits for.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import psycopg
from psycopg import sql

from schemas import ddl
from schemas.errors import MutaggError, RegistryError
from schemas.registry import Registry
from schemas.values import SQL_TYPES

log = logging.getLogger(__name__)

MIGRATE_HINT = "run `mutagg migrate` (with the same MUTAGG_SCHEMA / database URL) first"


class NotMigrated(MutaggError):
    """The database has no mutagg tables where the settings point, or older ones."""


class MigrationBlocked(MutaggError):
    """Other transactions held locks the migration needs through every attempt; nothing changed."""


@dataclass(frozen=True)
class LockPolicy:
    """How long a migration waits for a lock, and how often it tries (settings `migrate_*`)."""

    lock_timeout_s: float = 5.0
    attempts: int = 5
    backoff_s: float = 2.0
    backoff_cap_s: float = 60.0

    def delays(self) -> list[float]:
        """The waits between attempts: `backoff_s`, doubling, at most `backoff_cap_s`."""
        return [min(self.backoff_s * 2**n, self.backoff_cap_s) for n in range(self.attempts - 1)]


def require_migrated(database_url: str, deadline_s: float | None = None, registry: Registry | None = None) -> None:
    """Raise `NotMigrated` (one line that names `mutagg migrate`) unless the schema the URL
    selects holds the job's tables at this release's schema version (and, given `registry`,
    every entity table with its columns and foreign-writer trigger). With `deadline_s`, an
    unreachable database is waited for (`mutagg run`); without, it fails at once. Reads the
    catalog and `mutagg_schema` only: the job's least-privileged role can run it."""
    from sinks.database import connect

    opened = connect(database_url, deadline_s, "mutagg-preflight") if deadline_s else psycopg.connect(
        database_url, connect_timeout=10)
    with opened as connection:
        schema, search_path, ledger, marker = connection.execute(
            "SELECT current_schema(), current_setting('search_path'), "
            "to_regclass('mutation_log') IS NOT NULL, to_regclass('mutagg_schema') IS NOT NULL"
        ).fetchone()
        where = f"schema {schema!r}" if schema else f"search_path {search_path!r} (no such schema)"
        if not (ledger and marker):
            raise NotMigrated(f"the database is not migrated: {where} has no mutagg tables; {MIGRATE_HINT}")
        row = connection.execute("SELECT max(version) FROM mutagg_schema").fetchone()
        if row[0] is None or row[0] < ddl.SCHEMA_VERSION:
            raise NotMigrated(
                f"the database is migrated to version {row[0]}, this release needs {ddl.SCHEMA_VERSION} "
                f"({where}); {MIGRATE_HINT}"
            )
        missing = list(_registry_gaps(connection, registry)) if registry is not None else []
    if missing:
        raise NotMigrated(f"the registry is not migrated in {where}: {'; '.join(missing)}; {MIGRATE_HINT}")


def _registry_gaps(connection: psycopg.Connection, registry: Registry) -> Iterator[str]:
    """What the registry needs that the schema lacks: tables, columns, triggers (catalog reads)."""
    for entity_type in registry:
        columns = _columns(connection, entity_type.table)
        if not columns:
            yield f"no table {entity_type.table} (entity type {entity_type.name})"
            continue
        wanted = [entity_type.key, *entity_type.attributes, "version", "deleted", "mutagg_provenance"]
        lacking = [column for column in wanted if column not in columns]
        if lacking:
            yield f"table {entity_type.table} lacks columns {', '.join(lacking)}"
        if not _has_trigger(connection, entity_type.table):
            yield f"table {entity_type.table} lacks its foreign-writer trigger"


def _has_trigger(connection: psycopg.Connection, table: str) -> bool:
    return connection.execute(
        "SELECT EXISTS (SELECT FROM pg_trigger WHERE tgrelid = to_regclass(quote_ident(%s)) AND tgname = %s)",
        (table, f"{table}_mutagg_foreign"),
    ).fetchone()[0]


# information_schema.columns.data_type for each registry type
_INFO_TYPES = {
    "text": "text", "bigint": "bigint", "numeric": "numeric", "double precision": "double precision",
    "boolean": "boolean", "timestamptz": "timestamp with time zone", "date": "date", "jsonb": "jsonb",
}


def migrate(
    connection: psycopg.Connection,
    registry: Registry,
    policy: LockPolicy | None = None,
    on_retry: Callable[[str], None] | None = None,
) -> list[str]:
    """Bring the database in line with the registry; return what was done ([] if it was current).

    Each attempt is one transaction with `lock_timeout`; a lock not granted in time rolls it
    back, `on_retry` (default: a log warning) gets one line, and the next attempt follows
    after the policy's delay. `MigrationBlocked` after the last attempt.
    """
    policy = policy or LockPolicy()
    delays = policy.delays()
    fingerprint = ddl.fingerprint(registry)
    for attempt in range(1, policy.attempts + 1):
        step = _Step("reading the recorded schema version", ["mutagg_schema"])
        try:
            with connection.transaction():
                connection.execute("SELECT set_config('lock_timeout', %s, true)",
                                   (f"{round(policy.lock_timeout_s * 1000)}ms",))
                if _current(connection, registry, fingerprint):
                    return []
                return _apply(connection, registry, fingerprint, step)
        except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected) as exc:
            holders = _lock_holders(connection, step.tables)
            why = (f"a lock was not granted within lock_timeout {policy.lock_timeout_s:g} s"
                   if isinstance(exc, psycopg.errors.LockNotAvailable) else "a deadlock with another transaction")
            blocked = f"{step.what}: {why}{f' (held by {holders})' if holders else ''}"
            if attempt == policy.attempts:
                raise MigrationBlocked(
                    f"gave up after {policy.attempts} attempts, nothing changed: {blocked}. Run it again when "
                    "that transaction has ended (MUTAGG_MIGRATE_LOCK_TIMEOUT_S, MUTAGG_MIGRATE_ATTEMPTS)"
                ) from None
            message = (f"attempt {attempt} of {policy.attempts} rolled back: {blocked}; "
                       f"retrying in {delays[attempt - 1]:g} s")
            (on_retry or log.warning)(message)
            time.sleep(delays[attempt - 1])
    raise AssertionError("unreachable")


@dataclass
class _Step:
    """What the migration is doing now, for the message when a lock is not granted."""

    what: str
    tables: list[str]


def _current(connection: psycopg.Connection, registry: Registry, fingerprint: str) -> bool:
    """The schema is exactly what this release and registry would make: catalog and
    `mutagg_schema` reads only (ACCESS SHARE at most)."""
    if not connection.execute("SELECT to_regclass('mutagg_schema') IS NOT NULL").fetchone()[0]:
        return False
    recorded = connection.execute("SELECT to_jsonb(s) FROM mutagg_schema s").fetchone()
    if recorded is None or recorded[0].get("version") != ddl.SCHEMA_VERSION:
        return False
    if recorded[0].get("ddl_fingerprint") != fingerprint:
        return False
    return not any(True for _gap in _registry_gaps(connection, registry))


def _apply(connection: psycopg.Connection, registry: Registry, fingerprint: str, step: _Step) -> list[str]:
    done: list[str] = []
    step.what, step.tables = "waiting for another `mutagg migrate`", []
    # One migrator at a time, even if two jobs start together.
    connection.execute("SELECT pg_advisory_xact_lock(hashtext('mutagg.migrate'))")
    step.what, step.tables = "creating or upgrading the job's own tables", _JOB_TABLES
    connection.execute(ddl.core_tables())
    for entity_type in registry:
        step.what, step.tables = f"table {entity_type.table}", [entity_type.table]
        existing = _columns(connection, entity_type.table)
        if not existing:
            connection.execute(ddl.entity_table(entity_type))
            done.append(f"created table {entity_type.table}")
        else:
            _check_types(entity_type, existing)
            for statement in ddl.add_missing_columns(entity_type, set(existing)):
                connection.execute(statement)
                done.append(f"added column to {entity_type.table}")
        step.what = f"foreign-writer trigger on table {entity_type.table}"
        for statement in ddl.foreign_writer_trigger(entity_type):
            connection.execute(statement)
    step.what, step.tables = "recording the schema version", ["mutagg_schema"]
    connection.execute(
        "INSERT INTO mutagg_schema (version, registry_source, ddl_fingerprint) VALUES (%s, %s, %s) "
        "ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, registry_source = EXCLUDED.registry_source, "
        "ddl_fingerprint = EXCLUDED.ddl_fingerprint, migrated_at = now()",
        (ddl.SCHEMA_VERSION, registry.source, fingerprint),
    )
    return done or ["schema DDL re-applied (release or registry changed; no table or column added)"]


_JOB_TABLES = ["mutagg_schema", "mutation_log", "conflicts", "mutation_log_history", "verify_runs", "dlq_replays",
                "mutation_duplicates", "source_offsets", "job_commits", "input_gaps", "shard_marks", "shard_held",
                "shard_claims", "dependency_cycles", "shard_runs"]


def _lock_holders(connection: psycopg.Connection, tables: list[str]) -> str:
    """Who holds locks on `tables` now (pid, user, application, mode, for how long), or ''."""
    if not tables:
        query = sql.SQL("SELECT pid, usename, application_name, 'advisory', now() - xact_start FROM pg_locks "
                        "JOIN pg_stat_activity USING (pid) WHERE locktype = 'advisory' AND granted "
                        "AND pid <> pg_backend_pid()")
        params: tuple = ()
    else:
        query = sql.SQL(
            "SELECT l.pid, a.usename, a.application_name, l.mode || ' on ' || c.relname, now() - a.xact_start "
            "FROM pg_locks l JOIN pg_class c ON c.oid = l.relation JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.granted AND l.pid <> pg_backend_pid() AND c.relnamespace = current_schema()::regnamespace "
            "AND c.relname = ANY(%s) ORDER BY a.xact_start LIMIT 5")
        params = (tables,)
    try:
        with connection.transaction():
            rows = connection.execute(query, params).fetchall()
    except psycopg.Error:  # a diagnosis only: its failure must not hide the blocked migration
        return ""
    return ", ".join(
        f"pid {pid} user {user}{f' application {app!r}' if app else ''}, {mode}"
        f"{f', transaction open {age.total_seconds():.0f} s' if age is not None else ''}"
        for pid, user, app, mode, age in rows
    )


def _columns(connection: psycopg.Connection, table: str) -> dict[str, str]:
    rows = connection.execute(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = %s",
        (table,),
    ).fetchall()
    return dict(rows)


def _check_types(entity_type, existing: dict[str, str]) -> None:
    for attribute in entity_type.attributes.values():
        found = existing.get(attribute.name)
        wanted = _INFO_TYPES[SQL_TYPES[attribute.type]]
        if found is not None and found != wanted:
            raise RegistryError(
                f"{entity_type.table}.{attribute.name} is {found} in the database but "
                f"{attribute.type} ({wanted}) in the registry; change the column by hand first"
            )
    for column in ("version", "deleted", "mutagg_provenance", entity_type.key):
        if column not in existing:
            raise RegistryError(
                f"table {entity_type.table} exists but lacks column {column}; it is not a mutagg table"
            )
