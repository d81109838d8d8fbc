"""Issue 18 item 2, a Kafka broker lost: on a 3-broker cluster (services/cluster.sh; topics with
replication factor 3 and min.insync.replicas=2) the broker leading the DLQ partition and some
input and status partitions is SIGKILLed during a run and, once its partitions have new leaders,
started again (it then takes its leaderships back). The run rides it out (no exit, no restart),
and its database, acks and DLQ equal those of an uninterrupted run of the same log on the
single shared broker: nothing lost, nothing applied, acknowledged or dead-lettered twice.

Short by default (CI); the issue's long form: MUTAGG_BROKER_LOSS_MUTATIONS=200000 (README, Testing).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from mutagg.producer import produce
from mutagg.settings import Settings, with_overrides
from mutagg.topics import MIN_INSYNC_REPLICAS, create_topics
from mutagg.workload import Message, Workload
from tests.integration.conftest import (
    acks_agree_with_ledger,
    delete_topics,
    drop_schema,
    dump_database,
    new_schema,
    query,
    read_topic,
    settings_env,
)

REPO = Path(__file__).resolve().parents[2]
CLUSTER_SCRIPT = REPO / "services" / "cluster.sh"
SIZE = int(os.environ.get("MUTAGG_BROKER_LOSS_MUTATIONS", "40000"))
LONG_FORM = 100_000  # long enough for the broker to be back mid-run whatever the load
JOB_TIMEOUT_S = 120 + SIZE / 200

Layout = dict[str, dict[int, tuple[int, list[int], list[int]]]]


def _cluster(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CLUSTER_SCRIPT), *args], check=True, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def cluster_env() -> Iterator[dict[str, str]]:
    """The cluster's client variables; started here (idempotent) and, if this module started
    it, stopped again: three brokers left running cost a shared machine memory and CPU."""
    status = subprocess.run(["bash", str(CLUSTER_SCRIPT), "status"], capture_output=True, timeout=60)
    was_running = status.returncode == 0
    _cluster("start", timeout=300)
    try:
        lines = _cluster("env").stdout.splitlines()
        yield dict(shlex.split(line)[1].split("=", 1) for line in lines if line.startswith("export "))
    finally:
        if not was_running:
            _cluster("stop", timeout=300)


def _isolated(settings: Settings, prefix: str, tmp_path: Path, **changes) -> Iterator[Settings]:
    """Own schema and own topics (4 partitions, Kafka timestamps set by the producer)."""
    suffix = uuid.uuid4().hex[:10]
    isolated = with_overrides(
        new_schema(settings, f"{prefix}_{suffix}"), topic_mutations=f"{prefix}-{suffix}.mutations",
        topic_dlq=f"{prefix}-{suffix}.dlq", topic_status=f"{prefix}-{suffix}.status", topic_partitions=4,
        batch_size=500, window_ms=50, audit_uri=str(tmp_path / prefix), **changes,
    )
    create_topics(isolated, timestamp_type="CreateTime")  # both logs get the same Kafka timestamps
    yield isolated
    drop_schema(settings, f"{prefix}_{suffix}")
    delete_topics(isolated, f"{prefix}-{suffix}.")


@pytest.fixture
def on_cluster(base_settings: Settings, cluster_env: dict[str, str], tmp_path) -> Iterator[Settings]:
    _cluster("start")  # a node a failed test left dead
    yield from _isolated(
        base_settings, "b", tmp_path, kafka_bootstrap=cluster_env["MUTAGG_KAFKA_BOOTSTRAP"],
        topic_replication=int(cluster_env["MUTAGG_TOPIC_REPLICATION"]),
        topic_min_insync_replicas=int(cluster_env["MUTAGG_TOPIC_MIN_INSYNC_REPLICAS"]),
    )


@pytest.fixture
def on_single_broker(base_settings: Settings, tmp_path) -> Iterator[Settings]:
    yield from _isolated(base_settings, "r", tmp_path)


def _the_log(size: int) -> list[Message]:
    """The workload with explicit Kafka timestamps, so the same log can be written to two brokers."""
    start_ms = int(time.time() * 1000)
    return [Message(m.key, m.value, start_ms + i) for i, m in enumerate(Workload(seed=43).generate(size))]


def _layout(settings: Settings) -> Layout:
    """topic -> partition -> (leader, replicas, in-sync replicas), from the cluster's metadata."""
    metadata = AdminClient(settings.kafka_client_config()).list_topics(timeout=30)
    return {
        topic: {p: (m.leader, list(m.replicas), list(m.isrs)) for p, m in metadata.topics[topic].partitions.items()}
        for topic in (settings.topic_mutations, settings.topic_status, settings.topic_dlq)
    }


def _leads(layout: Layout, broker: int) -> dict[str, list[int]]:
    return {topic: sorted(p for p, (leader, _, _) in partitions.items() if leader == broker)
            for topic, partitions in layout.items()}


def _min_insync(settings: Settings, topic: str) -> str:
    resource = ConfigResource(ResourceType.TOPIC, topic)
    admin = AdminClient(settings.kafka_client_config())  # held until the answer is in
    return admin.describe_configs([resource])[resource].result(timeout=30)[MIN_INSYNC_REPLICAS].value


def _ledger_count(settings: Settings) -> int:
    return query(settings, "SELECT count(*) FROM mutation_log")[0][0]


def _start_job(settings: Settings, **env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mutagg.cli", "run", "--until-idle"], env=settings_env(settings, **env),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def _wait_for(condition: Callable[[], bool], timeout: float, what: str, job: subprocess.Popen | None = None) -> bool:
    """Wait until `condition` holds (True) or `job`, if given, has exited (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if job is not None and job.poll() is not None:
            return False
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)
    return True


def _acks(settings: Settings) -> Counter:
    fields = ("mutation_id", "status", "reason", "entity_version")
    return Counter((record.key(), *(orjson.loads(record.value())[f] for f in fields))
                   for record in read_topic(settings, settings.topic_status))


def _dead_letters(settings: Settings) -> Counter:
    def source(record) -> tuple:
        headers = dict(record.headers())
        return headers["mutagg.source.partition"], headers["mutagg.source.offset"], record.value()

    return Counter(source(record) for record in read_topic(settings, settings.topic_dlq))


def test_a_broker_lost_during_a_run_loses_and_repeats_nothing(on_cluster, on_single_broker):
    settings, reference = on_cluster, on_single_broker
    log = _the_log(SIZE)
    produce(settings, log)
    produce(reference, log)
    layout = _layout(settings)
    assert all(len(replicas) == 3 for partitions in layout.values() for _, replicas, _ in partitions.values())
    assert {_min_insync(settings, topic) for topic in layout} == {"2"}
    victim = layout[settings.topic_dlq][0][0]
    led = _leads(layout, victim)
    assert all(led.values()), f"broker {victim} leads the DLQ but not a partition of every topic: {layout}"

    uninterrupted = _start_job(reference)
    job = _start_job(settings, MUTAGG_BATCH_SIZE="250")  # batching is no semantics: the reference has 500
    started = time.monotonic()
    events: dict[str, tuple[float, int]] = {}

    def event(name: str) -> None:
        """When (seconds into the run) and how far (ledger rows) the run was at `name`."""
        events[name] = (round(time.monotonic() - started, 1), _ledger_count(settings))

    try:
        _wait_for(lambda: _ledger_count(settings) > 0, 60, "the first commit", job)
        assert job.poll() is None, job.stderr.read()[-3000:]
        _cluster("kill-broker", str(victim))
        event("killed")
        assert events["killed"][1] < SIZE // 2, "the broker was lost too late in the run to matter"
        # The controller fences the lost broker (broker.session.timeout.ms, 9 s) and elects new
        # leaders for its partitions; then it is started again.
        if _wait_for(lambda: not any(_leads(_layout(settings), victim).values()), 60, "new leaders", job):
            event("new_leaders")
        _cluster("start-broker", str(victim))
        if job.poll() is None:
            event("restarted")
            # Its preferred leaderships come back (leader.imbalance.check.interval.seconds).
            if _wait_for(lambda: _leads(_layout(settings), victim) == led, 60, "leaderships back", job):
                event("leaders_back")
        assert job.wait(JOB_TIMEOUT_S) == 0, job.stderr.read()[-3000:]
        event("finished")
        assert uninterrupted.wait(JOB_TIMEOUT_S) == 0, uninterrupted.stderr.read()[-3000:]
    finally:
        for process in (job, uninterrupted):
            if process.poll() is None:
                process.kill()
                process.wait(30)
    print(f"broker {victim} (leading {led}) lost and back; (seconds, ledger rows) at each event: {events}")
    if "restarted" not in events:
        # A short run on a loaded 2-core machine can end before the restarted JVM answers.
        assert SIZE < LONG_FORM, f"the run ended before the broker was back: {events}"
        warnings.warn(f"the run ended before the broker was back: {events}", stacklevel=1)

    assert dump_database(settings) == dump_database(reference)
    acks_agree_with_ledger(settings)
    assert _acks(settings) == _acks(reference)  # the idempotent producer repeated none
    assert _dead_letters(settings) == _dead_letters(reference)
    # The restarted broker caught up: back in every in-sync replica set.
    _wait_for(lambda: all(len(isrs) == 3 for partitions in _layout(settings).values()
                          for _, _, isrs in partitions.values()), 60, "the restarted broker in sync")
