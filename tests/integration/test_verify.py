"""`mutagg verify [--repair]` on a real run: healthy, then broken on purpose one way at a
time (acks on a fresh status topic, an audit file removed, an entity version lowered, a
ledger row deleted), each reported, and repaired where the database holds what is needed.

One job run serves every test (module scope); each test undoes what it broke."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import psycopg
import pytest
from confluent_kafka import Producer

from mutagg.metrics import JobMetrics, StateRefresher
from mutagg.producer import produce
from mutagg.settings import Settings, with_overrides
from mutagg.topics import create_topics
from mutagg.verify import PROBLEMS_EXIT, Verification, repair, verify
from mutagg.workload import Workload
from operators.strategies import CUSTOM_STRATEGIES
from schemas.registry import Registry, load_registry
from tests.integration.conftest import (
    delete_topics,
    drop_schema,
    migrate_schema,
    mutagg,
    new_schema,
    query,
    run_job,
)


@pytest.fixture(scope="module")
def job(base_settings: Settings, tmp_path_factory) -> Settings:
    """A finished run of 1,500 mutations (rejects, copies, conflicts) with its audit."""
    suffix = uuid.uuid4().hex[:10]
    schema = f"t_{suffix}"
    settings = with_overrides(
        new_schema(base_settings, schema, migrated=False),
        topic_mutations=f"t-{suffix}.mutations", topic_dlq=f"t-{suffix}.dlq", topic_status=f"t-{suffix}.status",
        topic_partitions=4, batch_size=300, window_ms=50,
        audit_uri=str(tmp_path_factory.mktemp("verify") / "audit"),
    )
    migrate_schema(settings)
    create_topics(settings)
    produce(settings, Workload(seed=23, invalid_rate=0.03, duplicate_rate=0.03).generate(1500))
    run_job(settings)
    yield settings
    drop_schema(base_settings, schema)
    delete_topics(settings, f"t-{suffix}.")


@pytest.fixture(scope="module")
def registry(job: Settings) -> Registry:
    return load_registry(job.registry, custom_strategies=CUSTOM_STRATEGIES)


def problems(verification: Verification) -> dict[str, dict[str, int]]:
    return {f.name: dict(f.problems) for f in verification.findings if f.problems}


def execute(settings: Settings, statement: str, params=None) -> None:
    with psycopg.connect(settings.database_url) as connection:
        connection.execute(statement, params)


def test_a_healthy_run_reports_no_problem_and_exports_it(job, registry):
    result = mutagg(job, "verify")
    assert "OK: no problem" in result.stdout, result.stdout
    verification = verify(job, registry)
    assert problems(verification) == {}
    checked = {f.name: f.checked for f in verification.findings}
    ledger_rows = query(job, "SELECT count(*) FROM mutation_log")[0][0]
    assert checked["gaps"] == sum(o for (o,) in query(job, "SELECT next_offset FROM source_offsets")) == 1500
    assert checked["acks"] == ledger_rows and checked["audit"] >= ledger_rows and checked["versions"] > 100
    assert verification.stats["dlq_messages"] > 0 and verification.stats["dlq_repeat_factor"] == 1.0
    recent = verify(job, registry, since=datetime.now(UTC) - timedelta(hours=1))  # bounded reads: the same
    assert problems(recent) == {} and {f.name: f.checked for f in recent.findings} == checked

    metrics = JobMetrics(entity_types=[r.name for r in registry])
    StateRefresher(metrics, job).refresh_once()
    exported = {s.name: s.value for family in metrics.registry.collect() for s in family.samples}
    assert exported["mutagg_verify_problems"] == 0
    assert exported["mutagg_verify_last_success_timestamp_seconds"] > 0


def test_missing_and_contradicting_acks_are_reported_and_missing_ones_resent(job, registry):
    fresh = with_overrides(job, topic_status=f"{job.topic_status}-fresh-{uuid.uuid4().hex[:6]}")
    create_topics(fresh)
    (wrong_id, wrong_node), = query(
        job, "SELECT mutation_id, edge_node_id FROM mutation_log WHERE status = 'APPLIED' LIMIT 1")
    producer = Producer(fresh.kafka_client_config())
    producer.produce(fresh.topic_status, key=wrong_node.encode(), value=orjson.dumps(
        {"mutation_id": wrong_id, "status": "REJECTED", "reason": "INVALID_JSON", "entity_version": None}))
    producer.flush(30)

    found = problems(verify(fresh, registry))
    settled = verify(job, registry).finding("acks").checked
    assert found == {"acks": {"missing": settled, "contradicts the ledger": 1}}

    result = mutagg(fresh, "verify", "--repair", check=False)
    assert result.returncode == PROBLEMS_EXIT, result.stdout + result.stderr
    assert f"acks re-sent {settled:,}" in result.stdout
    assert problems(verify(fresh, registry)) == {"acks": {"contradicts the ledger": 1}}  # an ack cannot be unsent


def test_a_removed_audit_file_is_reported_and_exported_again(job, registry):
    audit = Path(job.audit_uri)
    removed = [sorted(audit.glob(f"{dataset}/date=*/entity_type=*/part-*.parquet"))[0]
               for dataset in ("mutations", "conflicts")]
    for path in removed:
        path.unlink()
    verification = verify(job, registry)
    found = problems(verification)
    assert set(found) == {"audit"} and found["audit"]["mutations: missing"] > 0
    assert found["audit"]["conflicts: missing"] > 0

    repaired = repair(job, verification, registry)
    assert repaired["audit batches re-exported"] == len(verification.finding("audit").repairable) >= 1
    assert all(path.exists() for path in removed)
    assert problems(verify(job, registry)) == {}


def test_an_entity_behind_its_ledger_is_reported_and_one_ahead_is_not(job, registry):
    (entity_id, version), = query(job, "SELECT id, version FROM customer WHERE version > 1 ORDER BY id LIMIT 1")
    # As the job writes (mutagg.writer = job): the foreign-writer trigger would bump it instead.
    with psycopg.connect(job.database_url) as connection:
        connection.execute("SELECT set_config('mutagg.writer', 'job', true)")
        connection.execute("UPDATE customer SET version = %s WHERE id = %s", (version - 1, entity_id))
    try:
        verification = verify(job, registry)
        assert problems(verification) == {"versions": {"entity behind the ledger": 1}}
        assert any(entity_id in sample for sample in verification.finding("versions").samples)
        repair(job, verification, registry)  # nothing in the database can bring the row back
        assert problems(verify(job, registry)) == {"versions": {"entity behind the ledger": 1}}
    finally:
        with psycopg.connect(job.database_url) as connection:
            connection.execute("SELECT set_config('mutagg.writer', 'job', true)")
            connection.execute("UPDATE customer SET version = %s WHERE id = %s", (version + 1, entity_id))
    verification = verify(job, registry)
    assert problems(verification) == {}
    assert verification.finding("versions").notes["ahead of the ledger (writers outside the job)"] == 1
    with psycopg.connect(job.database_url) as connection:
        connection.execute("SELECT set_config('mutagg.writer', 'job', true)")
        connection.execute("UPDATE customer SET version = %s WHERE id = %s", (version, entity_id))


def test_a_deleted_ledger_row_is_a_gap_unless_recorded_as_lost(job, registry):
    (mutation_id, partition, offset), = query(
        job, "SELECT mutation_id, kafka_partition, kafka_offset FROM mutation_log m WHERE status = 'APPLIED' "
             "AND conflict_ids = '{}' AND NOT EXISTS (SELECT 1 FROM mutation_duplicates d "
             "WHERE d.mutation_id = m.mutation_id) ORDER BY kafka_offset LIMIT 1")
    execute(job, "CREATE TABLE saved_row AS SELECT * FROM mutation_log WHERE mutation_id = %s", (mutation_id,))
    execute(job, "DELETE FROM mutation_log WHERE mutation_id = %s", (mutation_id,))
    try:
        verification = verify(job, registry)
        found = problems(verification)
        assert found["gaps"] == {"unaccounted": 1}
        assert f"[{partition}] offset {offset}" in verification.finding("gaps").samples[0]
        assert found["acks"] == {"ack without a ledger row": 1}  # its ack claims what the database lost
        assert found["audit"] == {"mutations: not in the database": 1}
        execute(job, "INSERT INTO input_gaps (kafka_topic, kafka_partition, from_offset, to_offset, continued) "
                     "VALUES (%s, %s, %s, %s, true)", (job.topic_mutations, partition, offset, offset + 1))
        assert "gaps" not in problems(verify(job, registry))  # a recorded loss is accounted for
        execute(job, "DELETE FROM input_gaps")
    finally:
        execute(job, "INSERT INTO mutation_log SELECT * FROM saved_row; DROP TABLE saved_row")
    assert problems(verify(job, registry)) == {}
