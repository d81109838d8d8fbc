"""Least privilege on the real server: an owner role migrates, `mutagg migrate --grant-to`
gives the job's login role exactly what it needs, the whole job (decisions, duplicates,
a manual resolution, a DLQ replay) runs as that role, and the role cannot change the schema."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import orjson
import psycopg
import pytest
from psycopg import errors, sql

from mutagg.demo import url_with_schema
from mutagg.producer import produce
from mutagg.settings import Settings, with_overrides
from mutagg.topics import create_topics
from mutagg.workload import Message, Workload
from tests.integration.conftest import acks_agree_with_ledger, query, run_job

pytestmark = pytest.mark.integration


@dataclass
class Roles:
    owner: str
    job: str
    owner_settings: Settings
    job_settings: Settings  # what the job runs with


def _role_url(url: str, role: str) -> str:
    return url.replace("postgres@", f"{role}@", 1)


@pytest.fixture
def roles(base_settings: Settings, tmp_path) -> Iterator[Roles]:
    """Two fresh login roles; a schema owned by the first, migrated by it, granted to the second."""
    suffix = uuid.uuid4().hex[:10]
    owner, job, schema = f"t_owner_{suffix}", f"t_job_{suffix}", f"r_{suffix}"
    assert "postgres@" in base_settings.database_url
    with psycopg.connect(base_settings.database_url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(owner)))
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN NOINHERIT").format(sql.Identifier(job)))
        admin.execute(sql.SQL("CREATE SCHEMA {} AUTHORIZATION {}").format(*map(sql.Identifier, (schema, owner))))
    schema_url = url_with_schema(base_settings.database_url, schema)
    common = {
        "topic_mutations": f"r-{suffix}.mutations", "topic_dlq": f"r-{suffix}.dlq",
        "topic_status": f"r-{suffix}.status", "topic_partitions": 2, "batch_size": 200, "window_ms": 50,
        "audit_uri": str(tmp_path / "audit"),
    }
    owner_settings = with_overrides(base_settings, database_url=_role_url(schema_url, owner), **common)
    job_settings = with_overrides(base_settings, database_url=_role_url(schema_url, job), **common)
    result = _mutagg(owner_settings, "migrate", "--grant-to", job)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"role {job}: exactly the job's privileges" in result.stdout
    create_topics(job_settings)
    yield Roles(owner, job, owner_settings, job_settings)
    with psycopg.connect(base_settings.database_url, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        for role in (job, owner):
            admin.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def _mutagg(settings: Settings, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUTAGG_")}
    env.update({
        "MUTAGG_DATABASE_URL": settings.database_url, "MUTAGG_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "MUTAGG_TOPIC_MUTATIONS": settings.topic_mutations, "MUTAGG_TOPIC_DLQ": settings.topic_dlq,
        "MUTAGG_TOPIC_STATUS": settings.topic_status, "MUTAGG_LOG_LEVEL": "WARNING",
    })
    return subprocess.run([sys.executable, "-m", "mutagg.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def _customer(mutation_id: str, node: str, operation: str, attributes: dict, base: int) -> Message:
    document = {
        "id": mutation_id, "edge_node_id": node, "entity_type": "customer", "entity_id": "R1",
        "operation_type": operation, "attributes": attributes, "base_version": base,
        "timestamp": "2026-11-26T09:00:00Z", "priority": 5, "dependencies": [],
    }
    return Message(b"customer:R1", orjson.dumps(document))


def test_the_whole_job_runs_as_the_least_privileged_role(roles):
    settings = roles.job_settings
    produce(settings, [
        *Workload(seed=8).generate(300),  # valid, invalid (DLQ), conflicting and re-sent mutations
        _customer("r-c", "shop-1", "CREATE", {"name": "Ada", "notes": "first"}, 0),
        _customer("r-u1", "shop-2", "UPDATE", {"notes": "second"}, 1),
        _customer("r-u2", "van-3", "UPDATE", {"notes": "third"}, 1),  # `notes` is manual: held, OPEN
        _customer("r-c", "shop-1", "CREATE", {"name": "Ada", "notes": "first"}, 0),  # re-sent: a duplicate
    ])
    run_job(settings, MUTAGG_DATABASE_URL=settings.database_url)
    statuses = dict(query(settings, "SELECT mutation_id, status FROM mutation_log"))
    assert statuses["r-u2"] == "CONFLICT" and "REJECTED" in statuses.values()
    assert query(settings, "SELECT count(*) FROM mutation_duplicates")[0][0] > 0

    # A person accepts the held change; a DLQ replay re-submits the rejected messages.
    (conflict_id,) = query(settings, "SELECT conflict_id FROM conflicts WHERE mutation_id = 'r-u2'")[0]
    for command in (("conflicts", "resolve", conflict_id, "--accept"), ("dlq", "replay")):
        result = _mutagg(settings, *command)
        assert result.returncode == 0, result.stderr[-3000:]
    run_job(settings, MUTAGG_DATABASE_URL=settings.database_url)

    assert query(settings, "SELECT status FROM conflicts WHERE conflict_id = %s", (conflict_id,)) == [
        ("MANUALLY_RESOLVED",)
    ]
    assert query(settings, "SELECT notes FROM customer WHERE id = 'R1'") == [("third",)]
    assert query(settings, "SELECT count(*) FROM dlq_replays")[0][0] > 0
    assert query(settings, "SELECT count(*) FROM mutation_log_history")[0][0] > 0  # re-decided: DELETE + INSERT
    acks_agree_with_ledger(settings)
    assert query(settings, "SELECT DISTINCT usename FROM pg_stat_activity WHERE pid = pg_backend_pid()") == [
        (roles.job,)
    ]
    check = _mutagg(roles.owner_settings, "roles", "check", "--role", roles.job)
    assert check.returncode == 0, check.stdout


FORBIDDEN = [
    "DROP TABLE customer",
    "DROP TABLE mutation_log",
    "ALTER TABLE customer ADD COLUMN evil text",
    "ALTER TABLE customer DISABLE TRIGGER ALL",
    "ALTER TABLE mutation_log RENAME TO evil",
    "TRUNCATE mutation_log",
    "TRUNCATE customer",
    "CREATE TABLE evil (x int)",
    "CREATE INDEX evil ON customer (name)",
    "CREATE FUNCTION evil() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "DROP FUNCTION mutagg_foreign_provenance(jsonb, bigint)",
    "CREATE SCHEMA evil",
    "DELETE FROM customer",
    "UPDATE mutation_log SET status = 'APPLIED'",  # the ledger is append-only for the job
    "DELETE FROM conflicts",
]


def test_the_job_role_cannot_change_the_schema(roles):
    with psycopg.connect(roles.job_settings.database_url, autocommit=True) as connection:
        schema = connection.execute("SELECT current_schema()").fetchone()[0]
        for statement in FORBIDDEN:
            with pytest.raises(errors.InsufficientPrivilege):
                connection.execute(statement)
        with pytest.raises(errors.InsufficientPrivilege):
            connection.execute(sql.SQL("CREATE TABLE {}.evil (x int)").format(sql.Identifier(schema)))
        with pytest.raises(errors.InsufficientPrivilege):
            connection.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(roles.owner)))
        # What it may do: staging tables of its own, gone with the session.
        connection.execute("CREATE TEMP TABLE _stage_customer (LIKE customer INCLUDING DEFAULTS)")
    tables = {name for (name,) in query(
        roles.owner_settings, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
    )}
    assert "evil" not in tables and {"customer", "mutation_log"} <= tables


def test_grant_is_exact_and_refuses_roles_that_could_change_the_schema(roles):
    with psycopg.connect(roles.owner_settings.database_url, autocommit=True) as connection:
        connection.execute(sql.SQL("GRANT DELETE, TRUNCATE ON customer TO {}").format(sql.Identifier(roles.job)))
    check = _mutagg(roles.owner_settings, "roles", "check", "--role", roles.job)
    assert check.returncode == 1
    assert f"role {roles.job}: has DELETE on table customer" in check.stdout
    assert f"role {roles.job}: has TRUNCATE on table customer" in check.stdout

    regrant = _mutagg(roles.owner_settings, "roles", "grant", "--role", roles.job)  # back to exactly
    assert regrant.returncode == 0, regrant.stdout + regrant.stderr
    assert f"role {roles.job}: exactly the job's privileges" in regrant.stdout

    for role, why in ((roles.owner, f"can act as {roles.owner}"), ("postgres", "is a superuser"),
                      ("no_such_role_x", "does not exist")):
        refused = _mutagg(roles.owner_settings, "roles", "grant", "--role", role)
        assert refused.returncode == 2, refused.stdout
        assert "RoleError" in refused.stderr and why in refused.stderr
