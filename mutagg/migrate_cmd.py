"""`mutagg migrate [--grant-to ROLE]`: the schema for the registry, as the owner; then the job's
role gets exactly its privileges (`--grant-to`, else MUTAGG_JOB_ROLE)."""

from __future__ import annotations

import argparse

import psycopg
from psycopg import sql

from mutagg import roles
from mutagg.migrate import LockPolicy, migrate
from mutagg.settings import Settings
from schemas.errors import ConfigError
from schemas.registry import Registry


def run(settings: Settings, registry: Registry, grant_to: str | None) -> int:
    policy = LockPolicy(settings.migrate_lock_timeout_s, settings.migrate_attempts, settings.migrate_retry_backoff_s)
    with psycopg.connect(settings.database_url, autocommit=True) as connection:
        try:
            if settings.schema and not connection.execute(
                    "SELECT to_regnamespace(%s) IS NOT NULL", (settings.schema,)).fetchone()[0]:
                # the schema asked for is created here, not by hand
                connection.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(settings.schema)))
            done = migrate(connection, registry, policy)
        except psycopg.errors.InsufficientPrivilege as exc:  # e.g. the job's role: it may not change the schema
            raise ConfigError(
                f"`mutagg migrate` needs the owner's credentials: PostgreSQL user {connection.info.user!r} "
                f"may not change the schema ({exc.diag.message_primary}); run it as the role that owns it"
            ) from exc
        except psycopg.errors.InvalidSchemaName as exc:  # search_path: no schema, or one without USAGE
            search_path = connection.execute("SELECT current_setting('search_path')").fetchone()[0]
            raise ConfigError(
                f"`mutagg migrate`: PostgreSQL user {connection.info.user!r} has no schema to create the tables in "
                f"(search_path {search_path!r}: missing, or not usable by this user); run it as the role that "
                "owns the schema, or set MUTAGG_SCHEMA"
            ) from exc
    print("\n".join(done) or "schema up to date")
    role = grant_to or settings.job_role
    if role:
        return roles.run_command(argparse.Namespace(action="grant", role=role), settings, registry)
    return 0
