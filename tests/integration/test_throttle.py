"""`mutagg throttle on|off` against a running `mutagg run`: the job holds its writes (no new
ledger rows) while staying alive, says so on /readyz, /healthz, its gauges and `mutagg status`,
and drains after `throttle off` to the same end as a run that was never throttled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from mutagg.demo import url_with_schema
from mutagg.ports import free_port
from mutagg.producer import produce
from mutagg.settings import with_overrides
from mutagg.workload import Workload
from sinks.throttle_signals import OperatorPause, read_signals
from tests.integration.conftest import (
    REPO,
    delete_topics,
    drop_schema,
    dump_database,
    migrate_schema,
    mutagg,
    new_schema,
    query,
    run_job,
    settings_env,
)
from tests.integration.test_heartbeat import probe, wait_for

pytestmark = pytest.mark.integration


def ledger_rows(settings) -> int:
    return query(settings, "SELECT count(*) FROM mutation_log")[0][0]


def gauge(port: int, series: str) -> float | None:
    _status, text = probe(port, "/metrics")
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.split()[-1])
    return None


def test_an_operator_pause_holds_writes_keeps_the_job_alive_and_drains_identically(settings, base_settings, tmp_path):
    messages = Workload(seed=21, invalid_rate=0, duplicate_rate=0).generate(600)  # one ledger row each
    first, second = messages[:300], messages[300:]
    produce(settings, first)
    port = free_port()
    job = subprocess.Popen(
        [sys.executable, "-m", "mutagg.cli", "run"],
        env=settings_env(settings, MUTAGG_METRICS_PORT=str(port), MUTAGG_HEARTBEAT_TIMEOUT_S="1",
                         MUTAGG_THROTTLE_SAMPLE_MS="100", MUTAGG_THROTTLE_PAUSE_S="0.1"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(job, lambda: ledger_rows(settings) == len(first), "the first part decided")
        assert gauge(port, 'mutagg_throttled{reason="manual"}') == 0
        mutagg(settings, "throttle", "on", "--reason", "ERP month end")
        wait_for(job, lambda: probe(port, "/readyz")[0] == 503, "readiness to say throttled")
        assert "ERP month end" in probe(port, "/readyz")[1]
        assert gauge(port, 'mutagg_throttled{reason="manual"}') == 1
        decided = gauge(port, "mutagg_messages_total")
        produce(settings, second)
        # The worker has read the second part and holds it: its liveness is the named pause.
        wait_for(job, lambda: "throttled: paused by an operator" in probe(port, "/healthz")[1], "a held batch")
        for _ in range(15):  # and it stays held, alive, with nothing committed
            status, reason = probe(port, "/healthz")
            assert status == 200, reason
            assert ledger_rows(settings) == len(first)
            assert gauge(port, "mutagg_messages_total") == decided
            time.sleep(0.1)
        shown = mutagg(settings, "status").stdout
        assert "Throttled: paused by an operator: ERP month end" in shown, shown
        mutagg(settings, "throttle", "off")
        wait_for(job, lambda: ledger_rows(settings) == len(messages), "the held part decided after `throttle off`")
        wait_for(job, lambda: probe(port, "/readyz")[0] == 200, "readiness back")
        assert "Throttle: off" in mutagg(settings, "status").stdout
    finally:
        job.send_signal(signal.SIGTERM)
        job.wait(60)
    # The same log, never throttled, on a schema of its own: the same decisions.
    suffix = uuid.uuid4().hex[:8]
    reference = with_overrides(
        new_schema(base_settings, f"t_ref_{suffix}"), topic_mutations=settings.topic_mutations,
        topic_status=f"t-{suffix}.status", topic_dlq=f"t-{suffix}.dlq", batch_size=settings.batch_size,
        window_ms=settings.window_ms, audit_uri=str(tmp_path / "audit-ref"))
    try:
        run_job(reference)
        assert dump_database(reference) == dump_database(settings)
    finally:
        drop_schema(base_settings, f"t_ref_{suffix}")
        delete_topics(reference, f"t-{suffix}.")


def test_the_sampler_counts_active_erp_sessions_but_not_the_jobs_own(settings):
    """Sessions busy in a statement count as ERP load, unless their application_name is the job's."""
    def busy(application_name: str, stop: threading.Event, started: threading.Barrier) -> None:
        with psycopg.connect(settings.database_url, autocommit=True, application_name=application_name) as session:
            started.wait(10)
            while not stop.is_set():
                session.execute("SELECT pg_sleep(0.2)")

    def active() -> int:
        with psycopg.connect(settings.database_url, autocommit=True) as connection:
            sample, sees_all = read_signals(connection, time.monotonic(), OperatorPause(False))
        assert sees_all  # the tests' superuser sees every session
        return sample.active_backends

    def while_busy(application_name: str, look) -> int:
        ready, stop = threading.Barrier(7), threading.Event()
        with ThreadPoolExecutor(6) as pool:
            futures = [pool.submit(busy, application_name, stop, ready) for _ in range(6)]
            ready.wait(10)
            try:
                return look()
            finally:
                stop.set()
                for future in futures:
                    future.result()

    def at_least(count: int):  # the ERP's six, seen within a deadline (others' sessions come and go)
        def look() -> int:
            deadline, seen = time.monotonic() + 10, 0
            while seen < count and time.monotonic() < deadline:
                seen = max(seen, active())
            return seen
        return look

    # Six busy sessions named as the job names its own: never counted (the least of a few looks,
    # so another session of the shared server passing by does not count either).
    assert while_busy("mutagg-committer", lambda: min(active() for _ in range(5))) < 6
    assert while_busy("erp", at_least(6)) >= 6


LAG_PRIMARY, LAG_STANDBY = 15471, 15472  # a pair of its own (the failover tests use 15441/15442)


def test_a_standby_falling_behind_holds_the_job_until_it_catches_up(settings, tmp_path):
    """Replay paused on an asynchronous standby: its replay lag passes the limit, the job holds
    its writes (and says why), and commits again once the standby has replayed."""
    pair_env = {**os.environ, "MUTAGG_HA_PRIMARY_PORT": str(LAG_PRIMARY), "MUTAGG_HA_STANDBY_PORT": str(LAG_STANDBY)}

    def standby(*args: str) -> None:
        subprocess.run(["bash", str(REPO / "services" / "standby.sh"), *args], env=pair_env, check=True,
                       capture_output=True, timeout=120)

    standby("reset")
    standby("start", "async")
    primary_url = f"postgresql://postgres@127.0.0.1:{LAG_PRIMARY}/mutagg"
    standby_url = f"postgresql://postgres@127.0.0.1:{LAG_STANDBY}/mutagg"
    schema = f"r_{uuid.uuid4().hex[:8]}"
    stop_writing = threading.Event()
    job = None
    try:
        with psycopg.connect(primary_url, autocommit=True) as connection:
            connection.execute(f'CREATE SCHEMA "{schema}"')
            connection.execute(f'CREATE TABLE "{schema}".erp_writes (at timestamptz)')
        subject = with_overrides(settings, database_url=url_with_schema(primary_url, schema),
                                 audit_uri=str(tmp_path / "audit-pair"))
        migrate_schema(subject)
        messages = Workload(seed=22, invalid_rate=0, duplicate_rate=0).generate(400)
        produce(subject, messages[:200])
        port = free_port()
        job = subprocess.Popen(
            [sys.executable, "-m", "mutagg.cli", "run"],
            env=settings_env(subject, MUTAGG_METRICS_PORT=str(port), MUTAGG_THROTTLE_SAMPLE_MS="100",
                             MUTAGG_THROTTLE_PAUSE_S="0.1", MUTAGG_THROTTLE_REPLICATION_LAG_MAX_S="1",
                             MUTAGG_HEARTBEAT_TIMEOUT_S="1"),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wait_for(job, lambda: ledger_rows(subject) == 200, "the first part decided")
        with psycopg.connect(standby_url, autocommit=True) as connection:
            connection.execute("SELECT pg_wal_replay_pause()")

        def erp_writes() -> None:  # the ERP goes on writing: WAL the paused standby does not replay
            with psycopg.connect(primary_url, autocommit=True) as connection:
                while not stop_writing.wait(0.1):
                    connection.execute(f'INSERT INTO "{schema}".erp_writes VALUES (now())')

        writer = threading.Thread(target=erp_writes, daemon=True)
        writer.start()
        wait_for(job, lambda: gauge(port, 'mutagg_throttled{reason="replication_lag"}') == 1, "the lag signal")
        produce(subject, messages[200:])
        wait_for(job, lambda: "throttled: replication lag" in probe(port, "/healthz")[1], "a held batch")
        for _ in range(10):  # held: alive, nothing committed
            assert probe(port, "/healthz")[0] == 200
            assert ledger_rows(subject) == 200
            time.sleep(0.1)
        with psycopg.connect(standby_url, autocommit=True) as connection:
            connection.execute("SELECT pg_wal_replay_resume()")
        wait_for(job, lambda: ledger_rows(subject) == len(messages), "the held part decided after the catch-up")
        assert gauge(port, 'mutagg_throttled{reason="replication_lag"}') == 0
    finally:
        stop_writing.set()
        if job is not None:
            job.send_signal(signal.SIGTERM)
            job.wait(60)
        standby("reset")  # stops both; the shared server was never touched
