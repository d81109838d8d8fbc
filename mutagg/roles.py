"""Least privilege in PostgreSQL: the owner role runs `mutagg migrate` and owns every
table; the job's role gets exactly what `mutagg run` needs (`mutagg roles grant`), and
`mutagg roles check` lists anything it can do beyond or short of that.

The job's role reads and writes rows of its own tables, creates TEMP staging tables,
and nothing else: no DDL (DROP, ALTER, CREATE in the schema), no TRUNCATE, and DELETE
only where the code deletes.
"""

from __future__ import annotations

import argparse

import psycopg
from psycopg import sql

from mutagg.settings import Settings
from schemas.errors import MutaggError
from schemas.registry import Registry

# What `mutagg run` (and the operator commands that share its credentials) does to each
# table, so what the role needs. Keep in step with the SQL in sinks/ and mutagg/.
CORE_TABLE_PRIVILEGES: dict[str, tuple[str, ...]] = {
    # COPY of new ledger rows; lookups; a DLQ replay's re-decision moves the old row out
    # (sinks/ledger.py `revise`: DELETE .. RETURNING into mutation_log_history); a shard's claim
    # probes the primary key with an INSERT it rolls back (sinks/shard_tables.py).
    "mutation_log": ("SELECT", "INSERT", "DELETE"),
    "mutation_log_history": ("SELECT", "INSERT"),
    # COPY of conflict rows; a person's resolution closes the OPEN ones (UPDATE).
    "conflicts": ("SELECT", "INSERT", "UPDATE"),
    "mutation_duplicates": ("SELECT", "INSERT"),  # INSERT .. ON CONFLICT DO NOTHING
    "source_offsets": ("SELECT", "INSERT", "UPDATE"),  # INSERT .. ON CONFLICT DO UPDATE
    "dlq_replays": ("SELECT", "INSERT"),  # `mutagg dlq replay` records what it re-submitted
    "input_gaps": ("SELECT", "INSERT", "UPDATE"),  # a lost input range: INSERT .. ON CONFLICT DO UPDATE
    "mutagg_schema": ("SELECT",),
    "job_commits": ("SELECT", "INSERT", "UPDATE"),  # INSERT .. ON CONFLICT DO UPDATE (sinks/fence.py)
    # The job polls the operator's pause; `mutagg throttle on|off` may run with the job's credentials.
    "job_throttle": ("SELECT", "INSERT", "UPDATE"),
    # The partitioned commit (sinks/shard_tables.py): each shard upserts its marks, keeps its held
    # rows as a delta, claims ids and releases its claims, and adds the cycle members it found.
    "shard_marks": ("SELECT", "INSERT", "UPDATE"),
    "shard_runs": ("SELECT", "INSERT"),  # the first process of a cluster numbers its run
    "shard_held": ("SELECT", "INSERT", "UPDATE", "DELETE"),
    "shard_claims": ("SELECT", "INSERT", "DELETE"),  # INSERT .. ON CONFLICT DO NOTHING
    # INSERT .. ON CONFLICT DO NOTHING; a member's commit deletes its row, a cluster's start the moot ones.
    "dependency_cycles": ("SELECT", "INSERT", "DELETE"),
    # `mutagg verify` records each run and prunes old ones; the metrics refresher reads the latest.
    "verify_runs": ("SELECT", "INSERT", "DELETE"),
}
# SELECT .. FOR UPDATE / FOR SHARE (needs UPDATE), CREATE TEMP TABLE _stage_x (LIKE x) (needs SELECT),
# INSERT .. SELECT FROM the staging table ON CONFLICT DO UPDATE (or DO NOTHING), UPDATE .. FROM it.
ENTITY_TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE")
TABLE_PRIVILEGES = ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
# TEMPORARY: the per-connection staging tables. Not CREATE (no new schemas).
DATABASE_PRIVILEGES = ("CONNECT", "TEMPORARY")


class RoleError(MutaggError):
    """A role cannot be made least-privileged as asked (missing, superuser, can act as owner)."""


def job_privileges(registry: Registry) -> dict[str, tuple[str, ...]]:
    """Table name -> the privileges the job's role needs on it."""
    privileges = dict(CORE_TABLE_PRIVILEGES)
    for entity_type in registry:
        privileges[entity_type.table] = ENTITY_TABLE_PRIVILEGES
    return privileges


def grant_job_role(connection: psycopg.Connection, registry: Registry, role: str) -> list[str]:
    """Make `role`'s privileges on the current schema's mutagg tables exactly `job_privileges`.

    Run as the owner (or a superuser) after `mutagg migrate`; idempotent. Revokes what the
    role was granted directly beyond that; privileges through PUBLIC or other roles are
    reported by `check_job_role`, not changed. Returns the statements executed.
    """
    wanted = job_privileges(registry)
    done: list[str] = []
    with connection.transaction():
        schema, database = connection.execute("SELECT current_schema(), current_database()").fetchone()
        _refuse_unsafe(connection, role, schema, sorted(wanted))
        target = sql.Identifier(role)
        statements = [
            sql.SQL("REVOKE ALL ON SCHEMA {} FROM {}").format(sql.Identifier(schema), target),
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), target),
            sql.SQL("REVOKE CREATE ON DATABASE {} FROM {}").format(sql.Identifier(database), target),
            sql.SQL("GRANT {} ON DATABASE {} TO {}").format(
                sql.SQL(", ").join(map(sql.SQL, DATABASE_PRIVILEGES)), sql.Identifier(database), target
            ),
        ]
        for table, privileges in sorted(wanted.items()):
            qualified = sql.Identifier(schema, table)
            statements.append(sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(qualified, target))
            statements.append(sql.SQL("GRANT {} ON TABLE {} TO {}").format(
                sql.SQL(", ").join(map(sql.SQL, privileges)), qualified, target
            ))
        for statement in statements:
            connection.execute(statement)
            done.append(statement.as_string(connection))
    return done


def check_job_role(connection: psycopg.Connection, registry: Registry, role: str) -> list[str]:
    """What `role` can do beyond, or lacks of, `job_privileges` on the current schema; [] if exact."""
    wanted = job_privileges(registry)
    schema, database = connection.execute("SELECT current_schema(), current_database()").fetchone()
    problems = _unsafe(connection, role, schema, sorted(wanted))
    for privilege in ("USAGE", "CREATE"):
        has = _ask(connection, "SELECT has_schema_privilege(%s, %s, %s)", role, schema, privilege)
        if has != (privilege == "USAGE"):
            problems.append(f"{'lacks' if privilege == 'USAGE' else 'has'} {privilege} on schema {schema}")
    for privilege in ("CONNECT", "TEMPORARY", "CREATE"):
        has = _ask(connection, "SELECT has_database_privilege(%s, %s, %s)", role, database, privilege)
        if has != (privilege in DATABASE_PRIVILEGES):
            problems.append(f"{'has' if has else 'lacks'} {privilege} on database {database}")
    for table, needed in sorted(wanted.items()):
        qualified = f'"{schema}"."{table}"'
        for privilege in TABLE_PRIVILEGES:
            has = _ask(connection, "SELECT has_table_privilege(%s, %s, %s)", role, qualified, privilege)
            if has != (privilege in needed):
                problems.append(f"{'has' if has else 'lacks'} {privilege} on table {table}")
    return problems


def _ask(connection: psycopg.Connection, query: str, *params: str) -> bool:
    return bool(connection.execute(query, params).fetchone()[0])


def _unsafe(connection: psycopg.Connection, role: str, schema: str, tables: list[str]) -> list[str]:
    """Why `role` could change the schema whatever its grants: superuser, or able to act as an owner."""
    found = connection.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
    if found is None:
        raise RoleError(f"role {role!r} does not exist; create it first, e.g. CREATE ROLE {role} LOGIN PASSWORD ...")
    problems = [f"{role} is a superuser"] if found[0] else []
    present = {name for (name,) in connection.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = ANY(%s)", (schema, tables),
    ).fetchall()}
    missing = [t for t in tables if t not in present]
    if missing:
        raise RoleError(f"tables {missing} are missing in schema {schema}: run `mutagg migrate` first")
    owners = connection.execute(
        "SELECT DISTINCT pg_get_userbyid(c.relowner) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = ANY(%s) "
        "UNION SELECT pg_get_userbyid(nspowner) FROM pg_namespace WHERE nspname = %s",
        (schema, tables, schema),
    ).fetchall()
    for (owner,) in owners:
        if _ask(connection, "SELECT pg_has_role(%s, %s, 'MEMBER')", role, owner):
            problems.append(f"{role} can act as {owner}, which owns schema {schema} or its tables (could DROP/ALTER)")
    return problems


def _refuse_unsafe(connection: psycopg.Connection, role: str, schema: str, tables: list[str]) -> None:
    problems = _unsafe(connection, role, schema, tables)
    if problems:
        raise RoleError(f"refusing to use {role!r} as the job's role: {'; '.join(problems)}")


def add_commands(commands: argparse._SubParsersAction) -> None:
    """The `mutagg roles` subcommands."""
    roles = commands.add_parser("roles", help="least privilege for the job's database role")
    actions = roles.add_subparsers(dest="action", required=True)
    grant = actions.add_parser("grant", help="grant the job's role exactly what `mutagg run` needs (as the owner)")
    grant.add_argument("--role", required=True, help="the job's login role (must exist)")
    check = actions.add_parser("check", help="list what the role can do beyond or short of that; exit 1 if any")
    check.add_argument("--role", required=True)


def run_command(args: argparse.Namespace, settings: Settings, registry: Registry) -> int:
    """`mutagg roles grant|check`; exit 1 if the role ends up with more or less than it needs."""
    with psycopg.connect(settings.database_url) as connection:
        if args.action == "grant":
            for statement in grant_job_role(connection, registry, args.role):
                print(statement)
        return report(connection, registry, args.role)


def report(connection: psycopg.Connection, registry: Registry, role: str) -> int:
    problems = check_job_role(connection, registry, role)
    for problem in problems:
        print(f"role {role}: {problem}")
    if not problems:
        print(f"role {role}: exactly the job's privileges")
    return 1 if problems else 0
