"""DESIGN section 7: after a kill -9 anywhere, a restart reaches the same database
as an uninterrupted run; nothing lost, nothing applied twice, every decision acked."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import orjson
import psycopg
import pytest

from mutagg.demo import url_with_schema
from mutagg.migrate import migrate
from mutagg.producer import produce
from mutagg.settings import Settings, with_overrides
from mutagg.topics import create_topics
from mutagg.workload import Message, Workload
from operators.strategies import CUSTOM_STRATEGIES
from schemas.registry import load_registry
from tests.integration.conftest import (
    acks_agree_with_ledger,
    delete_topics,
    drop_schema,
    dump_database,
    mutagg,
    new_schema,
    query,
    run_job,
    settings_env,
)

REGISTRY = load_registry(Settings().registry, custom_strategies=CUSTOM_STRATEGIES)


def variant(settings: Settings) -> Settings:
    """Same input topic, own schema and own status/DLQ topics."""
    suffix = uuid.uuid4().hex[:8]
    with psycopg.connect(settings.database_url, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "v_{suffix}"')
    other = with_overrides(
        settings, database_url=url_with_schema(settings.database_url, f"v_{suffix}"),
        topic_status=f"{settings.topic_status}.{suffix}", topic_dlq=f"{settings.topic_dlq}.{suffix}",
    )
    with psycopg.connect(other.database_url) as connection:
        migrate(connection, REGISTRY)
    create_topics(other)
    return other


def start_job(settings: Settings, recovery_dir=None, args: tuple[str, ...] = (), **env: str) -> subprocess.Popen:
    extra = {"MUTAGG_SNAPSHOT_INTERVAL_S": "0.5", **env}
    if recovery_dir:
        extra["MUTAGG_RECOVERY_DIR"] = str(recovery_dir)
    return subprocess.Popen(
        [sys.executable, "-m", "mutagg.cli", "run", "--until-idle", *args], env=settings_env(settings, **extra),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def init_recovery(settings: Settings, directory) -> None:
    shutil.rmtree(directory, ignore_errors=True)
    mutagg(settings, "--recovery-dir", str(directory), "recovery", "init", "--partitions", "2")


@dataclass(frozen=True)
class SharedLog:
    """One log and the database an uninterrupted run of it leaves, shared by the tests of a module
    that each disturb a run of it (each in a `variant`: its own schema and status/DLQ topics on the
    same input)."""

    settings: Settings
    reference: dict


@contextmanager
def shared_log(base_settings: Settings, directory: Path, messages: list) -> Iterator[SharedLog]:
    suffix = uuid.uuid4().hex[:10]
    settings = with_overrides(
        new_schema(base_settings, f"t_{suffix}"), topic_mutations=f"t-{suffix}.mutations",
        topic_dlq=f"t-{suffix}.dlq", topic_status=f"t-{suffix}.status", topic_partitions=4,
        batch_size=500, window_ms=50, audit_uri=str(directory / "audit"),
    )
    try:
        create_topics(settings)
        produce(settings, messages)
        reference = variant(settings)
        run_job(reference)
        yield SharedLog(settings, dump_database(reference))
    finally:
        drop_schema(base_settings, f"t_{suffix}")
        delete_topics(settings, f"t-{suffix}.")


@pytest.fixture(scope="module")
def killed_log(base_settings: Settings, tmp_path_factory) -> Iterator[SharedLog]:
    with shared_log(base_settings, tmp_path_factory.mktemp("killed"), Workload(seed=17).generate(2500)) as log:
        yield log


@pytest.mark.parametrize("point", ["mid_copy", "before_commit", "after_commit", "after_acks"])
@pytest.mark.parametrize("with_recovery", [False, True])
def test_kill_at_each_point_of_the_commit_path(killed_log, tmp_path, point, with_recovery):
    subject = variant(killed_log.settings)
    recovery = tmp_path / "recovery" if with_recovery else None
    if recovery:
        init_recovery(subject, recovery)
    job = start_job(subject, recovery, MUTAGG_FAULT_POINT=f"{point}:3", MUTAGG_BATCH_SIZE="300")
    assert job.wait(120) == -signal.SIGKILL, job.stderr.read()[-3000:]
    restarted = start_job(subject, recovery, MUTAGG_BATCH_SIZE="300")
    assert restarted.wait(180) == 0, restarted.stderr.read()[-3000:]
    assert dump_database(subject) == killed_log.reference
    acks_agree_with_ledger(subject)


def test_a_kill_between_a_commit_and_its_acks_loses_no_ack(settings):
    """Without recovery data the restart resumes from the offsets recorded with the commits:
    they must stay before every batch not yet acknowledged, even the last one read."""
    produce(settings, Workload(seed=29).generate(3000))
    job = start_job(settings, MUTAGG_FAULT_POINT="after_commit:1", MUTAGG_BATCH_SIZE="20000")
    assert job.wait(120) == -signal.SIGKILL, job.stderr.read()[-3000:]
    assert query(settings, "SELECT count(*) FROM mutation_log")[0][0] > 0  # the kill came after a commit
    restarted = start_job(settings)
    assert restarted.wait(180) == 0, restarted.stderr.read()[-3000:]
    acks_agree_with_ledger(settings)


def test_ambiguous_commit_is_settled_by_the_ledger(settings):
    produce(settings, Workload(seed=19).generate(1200))
    reference = variant(settings)
    run_job(reference)
    run_job(settings, MUTAGG_FAULT_POINT="drop_after_commit:2", MUTAGG_BATCH_SIZE="200")
    assert dump_database(settings) == dump_database(reference)
    acks_agree_with_ledger(settings)


CYCLE_ATTRIBUTES = {"customer": {"name": "c"}, "stock_level": {"warehouse": "w1", "sku": "s1", "quantity": 1}}


def cycle(size: int, types: tuple[str, ...] = ("customer",)) -> list[Message]:
    """`size` entities (of `types` in turn) created by mutations on one dependency cycle: each
    waits for the next."""
    messages = []
    for n in range(size):
        entity_type = types[n % len(types)]
        document = {
            "id": f"cycle-{n}", "edge_node_id": "n1", "entity_type": entity_type, "entity_id": f"c{n}",
            "operation_type": "CREATE", "attributes": CYCLE_ATTRIBUTES[entity_type], "base_version": 0,
            "timestamp": "2026-11-26T09:00:00Z", "priority": 5, "dependencies": [f"cycle-{(n + 1) % size}"],
        }
        messages.append(Message(f"{entity_type}:c{n}".encode(), orjson.dumps(document)))
    return messages


def killed_after_first_commit(settings: Settings, *args: str, **env: str) -> int:
    """Run the job with batches of 2 until right after its first COMMIT (SIGKILL); the ledger rows then."""
    job = start_job(settings, MUTAGG_FAULT_POINT="after_commit:1", MUTAGG_BATCH_SIZE="2", args=args, **env)
    assert job.wait(120) == -signal.SIGKILL, job.stderr.read()[-3000:]
    return query(settings, "SELECT count(*) FROM mutation_log")[0][0]


def restart_rejects_the_cycle(settings: Settings, size: int, *args: str, **env: str) -> None:
    """Run the job to the end; every member of the cycle is REJECTED and acknowledged so."""
    run_job(settings, *args, MUTAGG_BATCH_SIZE="2", **env)
    assert query(settings, "SELECT status, reason, count(*) FROM mutation_log GROUP BY 1, 2") == [
        ("REJECTED", "DEPENDENCY_CYCLE", size)]
    acks_agree_with_ledger(settings)


def test_a_kill_after_a_release_first_commit_leaves_its_cycle_rejected(settings):
    """A release's verdicts commit together, in its first transaction, however small the parts:
    a cycle member left for a later part would, after a kill, find its partner decided and apply
    (DESIGN section 4: a cycle makes every member REJECTED)."""
    size = 9
    produce(settings, cycle(size))
    assert killed_after_first_commit(settings) > 0
    restart_rejects_the_cycle(settings, size)
    assert query(settings, "SELECT count(*) FROM customer")[0][0] == 0


def test_a_kill_after_one_shard_commits_leaves_a_cycle_across_shards_rejected(settings):
    """Each shard rejects its own members of a cycle and publishes the others' with its first
    commit (operators/shard_view.py): killed right after one shard's commit, the other shard's
    members are still rejected after the restart."""
    size = 9
    produce(settings, cycle(size))
    # The two shards commit on threads of their own: the kill after the first COMMIT sometimes lands
    # after the other's too. Such a run is checked as well, then the input is read again into a
    # schema of its own until one kill falls between the shards' commits.
    decided_at_kill = []
    for attempt in range(6):
        target = settings if attempt == 0 else variant(settings)
        decided_at_kill.append(killed_after_first_commit(target, "--workers", "2", MUTAGG_SHARDS="2"))
        restart_rejects_the_cycle(target, size, "--workers", "2", MUTAGG_SHARDS="2")
        if 0 < decided_at_kill[-1] < size:  # one shard's members only
            break
    assert 0 < decided_at_kill[-1] < size, decided_at_kill


def test_sigterm_finishes_the_batch_and_exits_zero(settings):
    produce(settings, Workload(seed=23).generate(20_000))
    reference = variant(settings)
    run_job(reference)
    job = start_job(settings, MUTAGG_BATCH_SIZE="500")
    deadline = time.monotonic() + 60
    while query(settings, "SELECT count(*) FROM mutation_log")[0][0] == 0:
        assert time.monotonic() < deadline and job.poll() is None
        time.sleep(0.05)
    job.send_signal(signal.SIGTERM)
    assert job.wait(30) == 0, job.stderr.read()[-3000:]
    decided = query(settings, "SELECT count(*) FROM mutation_log")[0][0]
    run_job(settings)
    assert dump_database(settings) == dump_database(reference)
    assert decided < query(settings, "SELECT count(*) FROM mutation_log")[0][0]  # it did stop early
    acks_agree_with_ledger(settings)


def test_random_kills_over_a_large_log(settings, tmp_path):
    """At least 10 SIGKILLs at random moments, recovery data lost once, then compared.

    Most kills come at a random moment after the run has committed something new (so every
    one of them lands in the middle of the work, and the log can be short); every fourth at a
    random moment of its start-up (restoring the recovery state, reading, the first batch)."""
    size = int(os.environ.get("MUTAGG_CRASH_MUTATIONS", "40000"))
    produce(settings, Workload(seed=29).generate(size))
    reference = variant(settings)
    run_job(reference, timeout=900)
    subject = variant(settings)
    recovery = tmp_path / "recovery"
    init_recovery(subject, recovery)
    rng = random.Random(31)
    kills = 0
    while kills < 10:
        before = decided(subject)
        job = start_job(subject, recovery)
        if kills % 4 == 3:
            time.sleep(rng.uniform(0.2, 1.5))  # not a wait for anything: the moment of a start-up kill
        else:
            deadline = time.monotonic() + 120
            while decided(subject) == before and job.poll() is None:  # a new commit of this run
                assert time.monotonic() < deadline, "the job committed nothing in 120 s"
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.5))  # not a wait for anything: the moment of the kill
        if job.poll() is not None:
            break  # finished before this kill: enough of the log is behind us
        job.send_signal(signal.SIGKILL)
        job.wait(30)
        kills += 1
        if kills == 5:
            init_recovery(subject, recovery)  # a lost volume: resume from the offsets in the database
    finished = start_job(subject, recovery)
    assert finished.wait(900) == 0, finished.stderr.read()[-3000:]
    assert kills >= 10, f"only {kills} kills before the log was drained; use a larger MUTAGG_CRASH_MUTATIONS"
    assert dump_database(subject) == dump_database(reference)
    acks_agree_with_ledger(subject)


def decided(settings: Settings) -> int:
    return query(settings, "SELECT count(*) FROM mutation_log")[0][0]


@pytest.mark.parametrize("settings", [12], indirect=True)
def test_resume_with_a_different_worker_count(settings, tmp_path):
    """12 partitions; killed under 1 worker, resumed under 4, killed, finished under 2."""
    produce(settings, Workload(seed=37).generate(30_000))
    reference = variant(settings)
    run_job(reference)
    recovery = tmp_path / "recovery"
    init_recovery(settings, recovery)
    for workers, fault in [("1", "after_commit:4"), ("4", "mid_copy:3")]:
        job = subprocess.Popen(
            [sys.executable, "-m", "mutagg.cli", "run", "--until-idle", "--workers", workers],
            env=settings_env(settings, MUTAGG_RECOVERY_DIR=str(recovery), MUTAGG_FAULT_POINT=fault,
                             MUTAGG_BATCH_SIZE="1000", MUTAGG_SNAPSHOT_INTERVAL_S="0.5"),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        assert job.wait(120) == -signal.SIGKILL, job.stderr.read()[-3000:]
    run_job(settings, "--workers", "2", MUTAGG_RECOVERY_DIR=str(recovery))
    assert dump_database(settings) == dump_database(reference)
    acks_agree_with_ledger(settings)


def test_two_instances_on_the_same_input_apply_nothing_twice(settings):
    """A zombie: two jobs on the same partitions and database. The row locks and the ledger
    (checked inside each transaction) fence them: the result equals a single run."""
    produce(settings, Workload(seed=47).generate(8000))
    reference = variant(settings)
    run_job(reference)
    first = start_job(settings, MUTAGG_BATCH_SIZE="300")
    second = start_job(settings, MUTAGG_BATCH_SIZE="700")
    assert first.wait(240) == 0, first.stderr.read()[-3000:]
    assert second.wait(240) == 0, second.stderr.read()[-3000:]
    assert dump_database(settings) == dump_database(reference)
    acks_agree_with_ledger(settings)
