"""Real Kafka and PostgreSQL for integration tests: started once per session by
the project's own script; every test gets its own topics and its own schema."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient

from mutagg.demo import url_with_schema
from mutagg.migrate import migrate
from mutagg.ports import cluster_args
from mutagg.settings import Settings, load_settings, with_overrides
from mutagg.topics import create_topics
from operators.strategies import CUSTOM_STRATEGIES
from schemas.registry import load_registry

REPO = Path(__file__).resolve().parents[2]
# Every test here is marked `integration` by tests/conftest.py (a `pytestmark` here would mark nothing).


@pytest.fixture(scope="session")
def base_settings() -> Settings:
    subprocess.run(["bash", str(REPO / "services" / "services.sh"), "start"], check=True)
    return load_settings(overrides={"service_deadline_s": 60.0})


@pytest.fixture
def settings(base_settings: Settings, request, tmp_path) -> Iterator[Settings]:
    """Fresh schema (migrated) and fresh topics (4 partitions) for one test."""
    suffix = uuid.uuid4().hex[:10]
    schema = f"t_{suffix}"
    settings = with_overrides(
        new_schema(base_settings, schema, migrated=False),
        topic_mutations=f"t-{suffix}.mutations",
        topic_dlq=f"t-{suffix}.dlq",
        topic_status=f"t-{suffix}.status",
        topic_central_state=f"t-{suffix}.central-state",
        topic_partitions=getattr(request, "param", 4),
        batch_size=500,
        window_ms=50,
        audit_uri=str(tmp_path / "audit"),
    )
    migrate_schema(settings)
    create_topics(settings)
    yield settings
    drop_schema(base_settings, schema)
    delete_topics(settings, f"t-{suffix}.")


@pytest.fixture
def lane_settings(settings: Settings) -> Settings:
    """`settings` with the priority lane on (it is opt-in, README "Priority lane") and its topic created."""
    on = with_overrides(settings, priority_lane="critical")
    create_topics(on)
    return on


def new_schema(settings: Settings, schema: str, migrated: bool = True) -> Settings:
    """`settings` on a new schema of the same database (migrated with the default registry)."""
    with psycopg.connect(settings.database_url, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    moved = with_overrides(settings, database_url=url_with_schema(settings.database_url, schema))
    if migrated:
        migrate_schema(moved)
    return moved


def migrate_schema(settings: Settings) -> None:
    registry = load_registry(settings.registry, custom_strategies=CUSTOM_STRATEGIES)
    with psycopg.connect(settings.database_url) as connection:
        migrate(connection, registry)


def drop_schema(settings: Settings, schema: str) -> None:
    with psycopg.connect(settings.database_url, autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


def delete_topics(settings: Settings, prefix: str) -> None:
    """Delete the test's topics (every one named `prefix`...): a broker that keeps every test's
    partitions from run to run runs out of heap in the end."""
    admin = AdminClient(settings.kafka_client_config())
    topics = [t for t in admin.list_topics(timeout=30).topics if t.startswith(prefix)]
    if topics:
        for future in admin.delete_topics(topics, operation_timeout=30).values():
            future.result()


def settings_env(settings: Settings, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUTAGG_")}
    # No endpoint and no central state (its lag lookups): tests that need them turn them on.
    env.update(settings.as_env(), MUTAGG_LOG_LEVEL="WARNING", MUTAGG_METRICS_PORT="0",
               MUTAGG_CENTRAL_STATE_INTERVAL_S="0")
    env.update(extra)
    return env


def run_job(settings: Settings, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess:
    """`mutagg run --until-idle` in its own process, as an operator would run it."""
    result = subprocess.run(
        [sys.executable, "-m", "mutagg.cli", "run", "--until-idle", *args],
        env=settings_env(settings, **env), capture_output=True, text=True, timeout=timeout,
    )
    assert result.returncode == 0, f"job failed ({result.returncode}):\n{result.stderr[-4000:]}"
    return result


def cluster_commands(processes: int, *args: str) -> list[list[str]]:
    """`mutagg run` as `processes` processes of one Bytewax cluster on this host (one command each)."""
    command = [sys.executable, "-m", "mutagg.cli", "run", *args]
    return [[*command, *cluster] for cluster in cluster_args(processes)]


def run_cluster(settings: Settings, processes: int, *args: str, timeout: float = 300, **env: str) -> None:
    """`mutagg run --until-idle` as a cluster of `processes` processes; each must exit 0."""
    jobs = [subprocess.Popen(command, env=settings_env(settings, **env), stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
            for command in cluster_commands(processes, "--until-idle", *args)]
    failures = []
    try:
        for index, job in enumerate(jobs):
            _, stderr = job.communicate(timeout=timeout)
            if job.returncode != 0:
                failures.append(f"process {index} failed ({job.returncode}):\n{stderr[-3000:]}")
    finally:
        for job in jobs:
            if job.poll() is None:
                job.kill()
                job.wait()
    assert not failures, "\n".join(failures)


def mutagg(settings: Settings, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "mutagg.cli", *args],
        env=settings_env(settings), capture_output=True, text=True, timeout=120,
    )
    if check:
        assert result.returncode == 0, f"mutagg {args} failed:\n{result.stderr[-4000:]}"
    return result


def read_topic(settings: Settings, topic: str) -> list:
    """Every record of `topic`, read to its current end."""
    config = settings.kafka_client_config()
    consumer = Consumer({**config, "group.id": f"test-{uuid.uuid4()}", "enable.partition.eof": True,
                         "enable.auto.commit": False})
    metadata = consumer.list_topics(topic, timeout=30)
    partitions = sorted(metadata.topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    records, finished = [], set()
    try:
        while len(finished) < len(partitions):
            message = consumer.poll(10)
            assert message is not None, f"timed out reading {topic}"
            if message.error():
                assert message.error().code() == KafkaError._PARTITION_EOF, message.error()
                finished.add(message.partition())
                continue
            records.append(message)
    finally:
        consumer.close()
    return records


def query(settings: Settings, statement: str, params=None) -> list[tuple]:
    with psycopg.connect(settings.database_url) as connection:
        return connection.execute(statement, params).fetchall()


DUMPS = {
    "customer": "SELECT id, name, email, segment, credit_limit, balance, notes, customer_since, version, deleted, "
                "mutagg_provenance FROM customer ORDER BY id",
    "stock_level": "SELECT id, quantity, reorder_point, version, deleted, mutagg_provenance "
                   "FROM stock_level ORDER BY id",
    "sales_order": "SELECT id, status, total, version, deleted, mutagg_provenance FROM sales_order ORDER BY id",
    "order_line": "SELECT id, quantity, unit_price, version, deleted FROM order_line ORDER BY id",
    "article": "SELECT sku, price, active, tags, max_discount_pct, version, deleted FROM article ORDER BY sku",
    "mutation_log": "SELECT mutation_id, status, reason, entity_type, entity_id, version, adjusted_priority, "
                    "kafka_partition, kafka_offset, conflict_ids FROM mutation_log ORDER BY mutation_id",
    "conflicts": "SELECT conflict_id, attributes, mutation_id, other_mutation_id, strategy, winner, status, "
                 "incoming_values, server_values, result_values FROM conflicts ORDER BY conflict_id",
    "duplicates": "SELECT mutation_id, kafka_partition, kafka_offset FROM mutation_duplicates ORDER BY 2, 3",
}


def dump_database(settings: Settings) -> dict[str, list[tuple]]:
    """Everything a run decided, minus batch ids and wall-clock times."""
    return {name: query(settings, statement) for name, statement in DUMPS.items()}


def acks_agree_with_ledger(settings: Settings) -> None:
    """Every ledger row was acknowledged at least once, and no ack contradicts it."""
    import orjson

    ledger = {r[0]: r[1:] for r in query(settings, "SELECT mutation_id, status, reason, version FROM mutation_log")}
    seen: dict[str, int] = {}
    for record in read_topic(settings, settings.topic_status):
        ack = orjson.loads(record.value())
        assert (ack["status"], ack["reason"], ack["entity_version"]) == ledger[ack["mutation_id"]], ack
        seen[ack["mutation_id"]] = seen.get(ack["mutation_id"], 0) + 1
    assert set(seen) == set(ledger)


def wait_for(condition, deadline_s: float, what: str, interval_s: float = 0.0):
    """`condition()`'s first truthy value, asked again every `interval_s` until `deadline_s` has passed
    (then the test fails naming `what`). 0: no pause (a condition that itself waits, e.g. a poll)."""
    give_up_at = time.monotonic() + deadline_s
    while not (value := condition()):
        assert time.monotonic() < give_up_at, f"timed out after {deadline_s}s waiting for {what}"
        if interval_s:
            time.sleep(interval_s)
    return value
