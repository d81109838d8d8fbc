"""Faults while running: database connections cut, the database and the broker
restarted, a poison mutation, and services that never answer."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import orjson
import psycopg
import pytest

from mutagg.producer import produce
from mutagg.workload import Message, Workload
from tests.integration.conftest import (
    REPO,
    acks_agree_with_ledger,
    dump_database,
    query,
    run_job,
    settings_env,
)
from tests.integration.test_crash_recovery import SharedLog, shared_log, start_job, variant

SERVICES = ["bash", str(REPO / "services" / "services.sh")]


def stock(mutation_id: str, operation: str, quantity: int, base: int) -> Message:
    document = {
        "id": mutation_id, "edge_node_id": "wh-1", "entity_type": "stock_level", "entity_id": "WH1/SKU-1",
        "operation_type": operation, "attributes": {"quantity": quantity}, "base_version": base,
        "timestamp": "2026-11-26T09:00:00Z", "priority": 5, "dependencies": [],
    }
    return Message(b"stock_level:WH1/SKU-1", orjson.dumps(document))


def test_poison_mutation_is_isolated_and_the_rest_commits(settings):
    produce(settings, [
        stock("s1", "CREATE", 2**63 - 10, 0),
        stock("s2", "UPDATE", 100, 1),  # would overflow bigint: fails in the database
        stock("s3", "UPDATE", -5, 1),
        *Workload(seed=41).generate(300),
    ])
    run_job(settings, MUTAGG_BATCH_SIZE="1000")
    ledger = {r[0]: r[1:] for r in query(settings, "SELECT mutation_id, status, reason, version FROM mutation_log")}
    assert ledger["s2"] == ("FAILED", "DATABASE_ERROR", None)
    assert ledger["s1"][0] == "APPLIED" and ledger["s3"] == ("APPLIED", None, 2)
    assert query(settings, "SELECT quantity FROM stock_level WHERE id = 'WH1/SKU-1'")[0][0] == 2**63 - 15
    assert "out of range" in query(settings, "SELECT detail FROM mutation_log WHERE mutation_id = 's2'")[0][0]
    assert sum(1 for _, (status, _, _) in ledger.items() if status == "FAILED") == 1
    acks_agree_with_ledger(settings)


def test_unreachable_kafka_at_startup_exits_non_zero_after_the_deadline(settings):
    began = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "mutagg.cli", "run"], capture_output=True, text=True, timeout=60,
        env=settings_env(settings, MUTAGG_KAFKA_BOOTSTRAP="127.0.0.1:9", MUTAGG_SERVICE_DEADLINE_S="4"),
    )
    assert result.returncode == 3
    assert "Kafka unreachable" in result.stderr
    assert time.monotonic() - began < 40


def test_unreachable_postgres_at_startup_exits_non_zero_after_the_deadline(settings):
    result = subprocess.run(
        [sys.executable, "-m", "mutagg.cli", "run"], capture_output=True, text=True, timeout=60,
        env=settings_env(settings, MUTAGG_DATABASE_URL="postgresql://postgres@127.0.0.1:9/mutagg",
                         MUTAGG_SERVICE_DEADLINE_S="4"),
    )
    assert result.returncode == 3
    assert "PostgreSQL unreachable" in result.stderr
    assert "waiting for PostgreSQL" in result.stderr


@pytest.fixture(scope="module")
def disturbed_log(base_settings, tmp_path_factory) -> Iterator[SharedLog]:
    with shared_log(base_settings, tmp_path_factory.mktemp("disturbed"), Workload(seed=43).generate(6000)) as log:
        yield log


def _run_through(log: SharedLog, disturb) -> list[dict]:
    """Run the job over `log` while `disturb()` runs in parallel; it must finish correctly.
    Returns the job's log lines, for the caller to show that the job saw the disturbance."""
    settings = variant(log.settings)
    job = start_job(settings, MUTAGG_BATCH_SIZE="200", MUTAGG_SERVICE_DEADLINE_S="90")
    deadline = time.monotonic() + 60
    while query(settings, "SELECT count(*) FROM mutation_log")[0][0] == 0:
        assert time.monotonic() < deadline and job.poll() is None
        time.sleep(0.02)
    disturber = threading.Thread(target=disturb)
    disturber.start()
    try:
        stderr = job.communicate(timeout=240)[1]  # read while it runs: a full pipe would stall the job
        assert job.returncode == 0, stderr[-3000:]
    finally:
        disturber.join()
        if job.poll() is None:
            job.send_signal(signal.SIGKILL)
    assert dump_database(settings) == log.reference
    acks_agree_with_ledger(settings)
    return [orjson.loads(line) for line in stderr.splitlines() if line.startswith("{")]


def _waited_for(lines: list[dict], what: str) -> list[dict]:
    """The job's retries of `what` (its "waiting for ..." warnings)."""
    return [line for line in lines if line["msg"] == f"waiting for {what}"]


def test_connections_cut_mid_transaction(disturbed_log):
    terminated: list[bool] = []

    def cut() -> None:
        with psycopg.connect(disturbed_log.settings.database_url, autocommit=True) as connection:
            for _ in range(5):
                terminated.extend(row[0] for row in connection.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'mutagg-committer'"
                ))
                time.sleep(0.3)  # spacing between cuts, so several land mid-batch

    lines = _run_through(disturbed_log, cut)
    assert any(terminated), "no committer connection was cut: the job finished before the fault"
    assert _waited_for(lines, "PostgreSQL"), "the job never noticed a cut connection"


def test_postgres_restarted_while_a_batch_is_in_flight(disturbed_log):
    def restart() -> None:
        subprocess.run([*SERVICES, "stop", "postgres"], check=True, capture_output=True)
        time.sleep(2)  # the outage itself (how long the database stays down), not a wait
        subprocess.run([*SERVICES, "start", "postgres"], check=True, capture_output=True)

    lines = _run_through(disturbed_log, restart)
    assert _waited_for(lines, "PostgreSQL"), "the job never noticed the database was down"


def test_kafka_broker_stopped_and_started(disturbed_log):
    def restart() -> None:
        subprocess.run([*SERVICES, "stop", "kafka"], check=True, capture_output=True)
        time.sleep(3)  # the outage itself (how long the broker stays down), not a wait
        subprocess.run([*SERVICES, "start", "kafka"], check=True, capture_output=True)

    lines = _run_through(disturbed_log, restart)
    refused = [line for line in lines if line["logger"] == "librdkafka" and "Connection refused" in line["msg"]]
    assert refused, "the job never noticed the broker was down"
