"""`mutagg migrate`: create or upgrade the job's tables for the registry; idempotent."""

from __future__ import annotations

import logging

import psycopg

from schemas import ddl
from schemas.errors import MutaggError, RegistryError
from schemas.registry import Registry
from schemas.values import SQL_TYPES

log = logging.getLogger(__name__)

MIGRATE_HINT = "run `mutagg migrate` (with the same MUTAGG_SCHEMA / database URL) first"


class NotMigrated(MutaggError):
    """The database has no mutagg tables where the settings point, or older ones."""


def require_migrated(database_url: str, deadline_s: float | None = None) -> None:
    """Raise `NotMigrated` (one line that names `mutagg migrate`) unless the schema the URL
    selects holds the job's tables at this release's schema version. With `deadline_s`, an
    unreachable database is waited for (`mutagg run`); without, it fails at once."""
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

# information_schema.columns.data_type for each registry type
_INFO_TYPES = {
    "text": "text", "bigint": "bigint", "numeric": "numeric", "double precision": "double precision",
    "boolean": "boolean", "timestamptz": "timestamp with time zone", "date": "date", "jsonb": "jsonb",
}


def migrate(connection: psycopg.Connection, registry: Registry) -> list[str]:
    """Bring the database in line with the registry; return what was done."""
    done: list[str] = []
    with connection.transaction():
        # One migrator at a time, even if two jobs start together.
        connection.execute("SELECT pg_advisory_xact_lock(hashtext('mutagg.migrate'))")
        connection.execute(ddl.core_tables())
        for entity_type in registry:
            existing = _columns(connection, entity_type.table)
            if not existing:
                connection.execute(ddl.entity_table(entity_type))
                done.append(f"created table {entity_type.table}")
            else:
                _check_types(entity_type, existing)
                for statement in ddl.add_missing_columns(entity_type, set(existing)):
                    connection.execute(statement)
                    done.append(f"added column to {entity_type.table}")
            for statement in ddl.foreign_writer_trigger(entity_type):
                connection.execute(statement)
        connection.execute(
            "INSERT INTO mutagg_schema (version, registry_source) VALUES (%s, %s) "
            "ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version, "
            "registry_source = EXCLUDED.registry_source, migrated_at = now()",
            (ddl.SCHEMA_VERSION, registry.source),
        )
    return done


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
