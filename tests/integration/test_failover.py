"""Issue 18, item 1: the primary PostgreSQL dies during a run and its streaming standby is
promoted. The job reaches the same database, ledger and acks as an uninterrupted run.

The failover runs on a pair of its own (services/standby.sh, ports 15441/15442): the shared
server of the other tests is never stopped. CI runs 20,000 mutations; the long form
(README, "Testing") sets MUTAGG_FAILOVER_MUTATIONS=200000.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
import uuid
from contextlib import closing
from pathlib import Path

import orjson
import psycopg
import pytest

from mutagg.migrate import migrate
from mutagg.producer import produce
from mutagg.settings import Settings, url_with_schema, with_overrides
from mutagg.topics import create_topics
from mutagg.workload import Workload
from operators.strategies import CUSTOM_STRATEGIES
from schemas.registry import load_registry
from tests.integration.conftest import (
    REPO,
    acks_agree_with_ledger,
    dump_database,
    mutagg,
    read_topic,
    run_job,
    settings_env,
)

MUTATIONS = int(os.environ.get("MUTAGG_FAILOVER_MUTATIONS", "20000"))
PRIMARY, STANDBY = 15441, 15442
PAIR_ENV = {**os.environ, "MUTAGG_HA_PRIMARY_PORT": str(PRIMARY), "MUTAGG_HA_STANDBY_PORT": str(STANDBY)}
PAIR_URL = (f"postgresql://postgres@127.0.0.1:{PRIMARY},127.0.0.1:{STANDBY}/mutagg"
            "?target_session_attrs=read-write&connect_timeout=5")
EXIT_DATABASE_BEHIND = 7


def standby(*args: str) -> None:
    subprocess.run(["bash", str(REPO / "services" / "standby.sh"), *args], env=PAIR_ENV, check=True,
                   capture_output=True, timeout=120)


@pytest.fixture
def pair(settings: Settings, tmp_path: Path):
    """A fresh primary+standby pair; yields a factory: mode -> the subject's settings on it."""

    def start(mode: str) -> Settings:
        standby("reset")
        standby("start", mode)
        schema = f"f_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PAIR_URL, autocommit=True) as connection:
            connection.execute(f'CREATE SCHEMA "{schema}"')
        suffix = uuid.uuid4().hex[:8]
        subject = with_overrides(
            settings, database_url=url_with_schema(PAIR_URL, schema), audit_uri=str(tmp_path / "audit-subject"),
            topic_status=f"{settings.topic_status}.{suffix}", topic_dlq=f"{settings.topic_dlq}.{suffix}",
            service_deadline_s=90.0,
        )
        with psycopg.connect(subject.database_url) as connection:
            migrate(connection, load_registry(subject.registry, custom_strategies=CUSTOM_STRATEGIES))
        create_topics(subject)
        return subject

    yield start
    standby("reset")  # stops both; the shared server was never touched


def start_job(settings: Settings, recovery_dir: Path) -> subprocess.Popen:
    env = settings_env(settings, MUTAGG_SNAPSHOT_INTERVAL_S="0.5", MUTAGG_RECOVERY_DIR=str(recovery_dir),
                       MUTAGG_BATCH_SIZE="500")
    return subprocess.Popen([sys.executable, "-m", "mutagg.cli", "run", "--until-idle"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def primary_count(schema_url: str) -> int:
    """Ledger rows on the primary alone (not through the multi-host URL)."""
    url = schema_url.replace(f",127.0.0.1:{STANDBY}", "")
    with psycopg.connect(url, connect_timeout=5) as connection:
        return connection.execute("SELECT count(*) FROM mutation_log").fetchone()[0]


def wait_for(job: subprocess.Popen, subject: Settings, rows: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while (count := primary_count(subject.database_url)) < rows:
        assert job.poll() is None, f"the job ended before {rows} rows: {job.stderr.read()[-3000:]}"
        assert time.monotonic() < deadline, f"{count} of {rows} rows after {timeout} s"
        time.sleep(0.02)
    return count


def resume_epoch(recovery: Path) -> int | None:
    """The epoch a restart would resume from, as Bytewax 0.21 records it in the recovery partitions:
    the lowest frontier of the latest execution's workers (None before every worker wrote one)."""
    executions: dict[int, int] = {}
    fronts: dict[tuple[int, int], int] = {}
    for path in recovery.glob("part-*.sqlite3"):
        with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1)) as db:
            executions.update(db.execute("SELECT ex_num, worker_count FROM exs"))
            fronts.update({(ex, worker): frontier for ex, worker, frontier in
                           db.execute("SELECT ex_num, worker_index, worker_frontier FROM fronts")})
    if not executions:
        return None
    latest = max(executions)
    frontiers = [frontier for (ex, _), frontier in fronts.items() if ex == latest]
    return min(frontiers) if len(frontiers) == executions[latest] else None


def snapshot_written_after(recovery: Path, job: subprocess.Popen, timeout: float = 60) -> None:
    """Wait until a restart would resume from a snapshot taken after now: the resume epoch has moved
    two past the frontier of now. (File times are no proof: a worker busy in a step closes no epoch,
    and a resume from an epoch before now found none of the commits since, so nothing was ahead.)"""
    deadline, start = time.monotonic() + timeout, None
    while True:
        if job.poll() is not None:  # the input ended: its last snapshot holds every commit
            assert job.returncode == 0, job.stderr.read()[-3000:]
            return
        assert time.monotonic() < deadline, f"the resume epoch did not move for {timeout} s (from {start})"
        try:
            epoch = resume_epoch(recovery)
        except sqlite3.OperationalError:  # busy: the job is writing
            epoch = None
        if epoch is not None:
            start = epoch if start is None else start
            if epoch >= start + 2:
                return
        time.sleep(0.05)


def reference_run(settings: Settings, mutations: int = MUTATIONS) -> None:
    produce(settings, Workload(seed=18).generate(mutations))
    run_job(settings, timeout=1800)


def test_synchronous_standby_promoted_mid_run(settings, pair, tmp_path):
    reference_run(settings)
    subject = pair("sync")
    mutagg(subject, "--recovery-dir", str(tmp_path / "recovery"), "recovery", "init", "--partitions", "2")
    job = start_job(subject, tmp_path / "recovery")
    decided = wait_for(job, subject, MUTATIONS // 3)
    standby("stop-primary")  # immediate: a crash, mid-run
    print(f"\nsync: {MUTATIONS} mutations, primary stopped (immediate) at {decided} ledger rows")
    time.sleep(1.0)  # the outage itself (no primary for a second), not a wait: the job must ride it out
    standby("promote")
    assert job.wait(1800) == 0, job.stderr.read()[-4000:]
    stderr = job.stderr.read()
    assert "waiting for PostgreSQL" in stderr, stderr[-3000:]  # it did reconnect, mid-run
    assert decided < MUTATIONS
    assert dump_database(subject) == dump_database(settings)
    acks_agree_with_ledger(subject)


def test_asynchronous_standby_promoted_behind_the_job(settings, pair, tmp_path):
    """The standby stops receiving WAL while the job commits and acknowledges on: once promoted it
    lacks those batches. The job notices (exit 7), discards its snapshots, and the restart decides
    the lost batches again from the database's offsets, with the acks already sent."""
    reference_run(settings)
    subject = pair("async")
    recovery = tmp_path / "recovery"
    mutagg(subject, "--recovery-dir", str(recovery), "recovery", "init", "--partitions", "2")
    job = start_job(subject, recovery)
    wait_for(job, subject, MUTATIONS // 5)
    standby("detach")  # from here the standby falls behind
    behind_from = primary_count(subject.database_url)
    wait_for(job, subject, behind_from + MUTATIONS // 5)
    standby("stop-primary")
    standby("promote")
    assert job.wait(600) == EXIT_DATABASE_BEHIND, job.stderr.read()[-4000:]
    assert "DatabaseBehind" in job.stderr.read()

    kept = {row[0] for row in _ledger_ids(subject)}
    acked = {orjson.loads(r.value())["mutation_id"] for r in read_topic(subject, subject.topic_status)}
    lost_but_acked = acked - kept
    print(f"\nasync: {MUTATIONS} mutations, standby detached at {behind_from} ledger rows; the promoted "
          f"standby kept {len(kept)}; {len(lost_but_acked)} acknowledged decisions were lost and decided again")
    assert lost_but_acked, "the promoted standby lost no acknowledged commit: nothing was tested"

    restarted = start_job(subject, recovery)
    assert restarted.wait(1800) == 0, restarted.stderr.read()[-4000:]
    assert dump_database(subject) == dump_database(settings)
    acks_agree_with_ledger(subject)  # the acks of the lost commits agree with their new decisions


def test_a_snapshot_ahead_of_the_promoted_standby_is_discarded(settings, pair, tmp_path):
    """The job is killed while the standby is behind, and the failover happens while it is down:
    its recovery snapshot holds read positions past what the promoted standby kept. The restart
    notices before it commits anything (exit 7) and discards the snapshots; the next one resumes
    from the database's offsets."""
    mutations = MUTATIONS // 4
    reference_run(settings, mutations)
    subject = pair("async")
    recovery = tmp_path / "recovery"
    mutagg(subject, "--recovery-dir", str(recovery), "recovery", "init", "--partitions", "2")
    job = start_job(subject, recovery)
    wait_for(job, subject, mutations // 5)
    standby("detach")
    wait_for(job, subject, primary_count(subject.database_url) + mutations // 5)
    snapshot_written_after(recovery, job)  # one that holds commits the standby lacks
    job.kill()
    job.wait(30)
    standby("stop-primary")
    standby("promote")
    first = start_job(subject, recovery)
    assert first.wait(300) == EXIT_DATABASE_BEHIND, first.stderr.read()[-4000:]
    assert "resuming from a recovery snapshot" in first.stderr.read()
    second = start_job(subject, recovery)
    assert second.wait(1800) == 0, second.stderr.read()[-4000:]
    assert dump_database(subject) == dump_database(settings)
    acks_agree_with_ledger(subject)


def _ledger_ids(settings: Settings) -> list[tuple]:
    with psycopg.connect(settings.database_url) as connection:
        return connection.execute("SELECT mutation_id FROM mutation_log").fetchall()
