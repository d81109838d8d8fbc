"""`mutagg migrate` beside a live ERP: a schema already current is left alone without waiting
for anyone (it takes no lock stronger than ACCESS SHARE), and a migration that must change a
table an ERP transaction holds waits at most `lock_timeout` per attempt, retries a bounded
number of times with one line each, and then gives up with nothing changed instead of
queueing (a DDL lock request in the queue would stall every later writer of that table)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psycopg
import yaml
from psycopg import sql
from psycopg.pq import TransactionStatus

from mutagg.migrate import LockPolicy, migrate
from mutagg.settings import Settings
from operators.strategies import CUSTOM_STRATEGIES
from schemas.registry import load_registry
from tests.integration.conftest import query, settings_env

ERP = "erp-writer"
FAST = dict(MUTAGG_MIGRATE_LOCK_TIMEOUT_S="0.5", MUTAGG_MIGRATE_RETRY_BACKOFF_S="0.2")


def erp_transaction(settings: Settings, statement: str) -> psycopg.Connection:
    """A foreign writer's connection with `statement` done in a transaction left open."""
    connection = psycopg.connect(settings.database_url, application_name=ERP)
    connection.execute(statement)
    return connection


def timed_migrate(settings: Settings) -> tuple[float, list[str]]:
    """`migrate` with the default 5 s lock_timeout, once; a statement_timeout turns a migration
    that would queue behind a lock into a failure instead of a hung test."""
    registry = load_registry(settings.registry, custom_strategies=CUSTOM_STRATEGIES)
    with psycopg.connect(settings.database_url, autocommit=True) as connection:
        connection.execute("SET statement_timeout = '20s'")
        began = time.monotonic()
        done = migrate(connection, registry, LockPolicy(lock_timeout_s=5.0, attempts=1))
        return time.monotonic() - began, done


def test_a_current_schema_migrates_at_once_beside_erp_transactions(settings):
    with psycopg.connect(settings.database_url, autocommit=True) as connection:
        connection.execute("INSERT INTO customer (id, name) VALUES ('erp-1', 'Ada')")
    row_lock = erp_transaction(settings, "SELECT * FROM customer WHERE id = 'erp-1' FOR UPDATE")
    writer = erp_transaction(settings, "INSERT INTO customer (id, name) VALUES ('erp-2', 'Bob')")  # blocks DDL
    try:
        seconds, done = timed_migrate(settings)
        assert done == [] and seconds < 2.5, f"{seconds:.2f} s: {done}"  # well under the 5 s lock_timeout
        for connection in (row_lock, writer):  # neither waited for nor cancelled
            assert connection.info.transaction_status == TransactionStatus.INTRANS
        writer.commit()
    finally:
        row_lock.close()
        writer.close()

    # EXCLUSIVE conflicts with every lock mode but ACCESS SHARE: held on every table of the
    # schema, it lets through only a migration that takes nothing stronger.
    tables = [name for (name,) in query(
        settings, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]
    assert {"customer", "mutation_log", "mutagg_schema"} <= set(tables)
    statement = sql.SQL("LOCK TABLE {} IN EXCLUSIVE MODE").format(sql.SQL(", ").join(map(sql.Identifier, tables)))
    exclusive = erp_transaction(settings, statement)
    try:
        seconds, done = timed_migrate(settings)
        assert done == [] and seconds < 2.5, f"{seconds:.2f} s: {done}"  # well under the 5 s lock_timeout
    finally:
        exclusive.close()


def registry_with_new_attribute(settings: Settings, directory: Path) -> Path:
    """The test's registry plus `customer.loyalty_tier`: migrating it adds a column (ACCESS EXCLUSIVE)."""
    document = yaml.safe_load(Path(settings.registry).read_text())
    document["entity_types"]["customer"]["attributes"]["loyalty_tier"] = {"type": "string"}
    path = directory / "registry.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def customer_columns(settings: Settings) -> set[str]:
    return {name for (name,) in query(settings, "SELECT column_name FROM information_schema.columns "
                                                "WHERE table_schema = current_schema() AND table_name = 'customer'")}


def test_a_migration_behind_an_erp_transaction_gives_up_after_its_retries_with_nothing_changed(settings, tmp_path):
    registry = registry_with_new_attribute(settings, tmp_path)
    writer = erp_transaction(settings, "INSERT INTO customer (id, name) VALUES ('erp-3', 'Cy')")
    try:
        began = time.monotonic()
        result = subprocess.run(
            [sys.executable, "-m", "mutagg.cli", "migrate"], capture_output=True, text=True, timeout=120,
            env=settings_env(settings, MUTAGG_REGISTRY=str(registry), MUTAGG_MIGRATE_ATTEMPTS="3", **FAST))
        seconds = time.monotonic() - began
        assert writer.info.transaction_status == TransactionStatus.INTRANS  # never cancelled
        writer.commit()
    finally:
        writer.close()
    assert result.returncode == 8, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    retries = [line for line in lines if "rolled back" in line]
    assert len(retries) == 2, lines
    for attempt, line in enumerate(retries, 1):
        assert f"attempt {attempt} of 3 rolled back: table customer: a lock was not granted within " \
               "lock_timeout 0.5 s" in line and f"application '{ERP}'" in line and "retrying in" in line, line
    assert lines[-1].startswith("mutagg: MigrationBlocked: gave up after 3 attempts, nothing changed: table customer")
    assert "Traceback" not in result.stderr
    assert seconds < 15, f"gave up after {seconds:.1f} s"  # 3 x 0.5 s waits, 0.2 + 0.4 s pauses, and start-up
    assert "loyalty_tier" not in customer_columns(settings)  # one transaction: all or nothing
    assert query(settings, "SELECT name FROM customer WHERE id = 'erp-3'") == [("Cy",)]


def test_a_migration_gets_its_locks_once_the_erp_transaction_ends(settings, tmp_path):
    registry = load_registry(registry_with_new_attribute(settings, tmp_path), custom_strategies=CUSTOM_STRATEGIES)
    writer = erp_transaction(settings, "UPDATE customer SET name = name")
    retries: list[str] = []

    def on_retry(line: str) -> None:
        retries.append(line)
        writer.commit()  # the ERP transaction ends during the pause; the next attempt gets the lock

    try:
        with psycopg.connect(settings.database_url, autocommit=True) as connection:
            done = migrate(connection, registry, LockPolicy(lock_timeout_s=0.5, attempts=5, backoff_s=0.2), on_retry)
    finally:
        writer.close()
    assert len(retries) == 1 and retries[0].startswith("attempt 1 of 5 rolled back: table customer"), retries
    assert done == ["added column to customer"]
    assert "loyalty_tier" in customer_columns(settings)


def test_a_schema_of_an_earlier_release_is_migrated_once_then_left_alone(settings):
    with psycopg.connect(settings.database_url, autocommit=True) as connection:
        connection.execute("ALTER TABLE mutagg_schema DROP COLUMN ddl_fingerprint")  # before this release
        connection.execute("DROP TRIGGER customer_mutagg_foreign ON customer")  # and a trigger lost by hand
    _seconds, done = timed_migrate(settings)
    assert done == ["schema DDL re-applied (release or registry changed; no table or column added)"]
    assert query(settings, "SELECT tgname FROM pg_trigger WHERE tgrelid = 'customer'::regclass") == [
        ("customer_mutagg_foreign",)]
    _seconds, done = timed_migrate(settings)
    assert done == []


def test_the_ledger_index_by_entity_of_an_earlier_release_is_dropped(settings):
    with psycopg.connect(settings.database_url, autocommit=True) as connection:
        connection.execute("CREATE INDEX mutation_log_entity ON mutation_log (entity_type, entity_id)")
        connection.execute("UPDATE mutagg_schema SET version = 4")  # as schema version 4 left it
    _seconds, done = timed_migrate(settings)
    assert done == ["schema DDL re-applied (release or registry changed; no table or column added)"]
    assert query(settings, "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() "
                           "AND tablename = 'mutation_log' ORDER BY 1") == [
        ("mutation_log_batch",), ("mutation_log_decided_at",), ("mutation_log_pkey",)]


def test_a_schema_of_version_5_gains_the_shared_tables_of_the_partitioned_commit(settings):
    with psycopg.connect(settings.database_url, autocommit=True) as connection:
        connection.execute("DROP TABLE shard_marks, shard_held, shard_claims, dependency_cycles")
        connection.execute("DROP INDEX mutation_duplicates_id")
        connection.execute("ALTER TABLE mutation_duplicates DROP COLUMN kafka_timestamp")
        connection.execute("UPDATE mutagg_schema SET version = 5")  # as schema version 5 left it
    _seconds, done = timed_migrate(settings)
    assert done == ["schema DDL re-applied (release or registry changed; no table or column added)"]
    assert query(settings, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                           "AND tablename IN ('shard_marks', 'shard_held', 'shard_claims', 'dependency_cycles') "
                           "ORDER BY 1") == [
        ("dependency_cycles",), ("shard_claims",), ("shard_held",), ("shard_marks",)]
    assert query(settings, "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() "
                           "AND tablename = 'mutation_duplicates' ORDER BY 1") == [
        ("mutation_duplicates_id",), ("mutation_duplicates_pkey",)]
    assert "kafka_timestamp" in {name for (name,) in query(
        settings, "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
                  "AND table_name = 'mutation_duplicates'")}
    assert query(settings, "SELECT version FROM mutagg_schema") == [(6,)]
    _seconds, done = timed_migrate(settings)
    assert done == []
