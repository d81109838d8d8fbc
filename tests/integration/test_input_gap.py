"""A gap in the input is never skipped silently (issue 18, item 0).

The job decides part of a partition and stops; retention then deletes the rest of what it
had not read (the test broker checks retention every second: services/services.sh); the
restart must stop with `InputGap` (exit 5) and record the lost range, or, with
`MUTAGG_ON_INPUT_GAP=skip`, record it and decide what is still on the broker.
"""

from __future__ import annotations

import subprocess
import sys
import time

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from mutagg.producer import produce
from mutagg.workload import Message
from tests.integration.conftest import query, run_job, settings_env


def creates(first: int, count: int) -> list[Message]:
    return [
        Message(f"customer:C{i}".encode(), orjson.dumps({
            "id": f"m{i}", "edge_node_id": "shop-1", "entity_type": "customer", "entity_id": f"C{i}",
            "operation_type": "CREATE", "attributes": {"name": f"n{i}"}, "base_version": 0,
            "timestamp": "2026-11-26T08:00:00Z", "priority": 5, "dependencies": [],
        }))
        for i in range(first, first + count)
    ]


def set_topic_config(settings, **config: str) -> None:
    admin = AdminClient(settings.kafka_client_config())
    resource = ConfigResource("topic", settings.topic_mutations, incremental_configs=[
        ConfigEntry(name.replace("_", "."), value, incremental_operation=AlterConfigOpType.SET)
        for name, value in config.items()])
    admin.incremental_alter_configs([resource])[resource].result(timeout=30)


def wait_for_low_watermark(settings, at_least: int, timeout_s: float = 60.0) -> None:
    consumer = Consumer({**settings.kafka_client_config(), "group.id": "test-gap"})
    try:
        give_up_at = time.monotonic() + timeout_s
        while True:
            low, _high = consumer.get_watermark_offsets(
                TopicPartition(settings.topic_mutations, 0), timeout=10, cached=False)
            if low >= at_least:
                return
            assert time.monotonic() < give_up_at, f"retention left the log start at {low} for {timeout_s:.0f}s"
            time.sleep(0.2)
    finally:
        consumer.close()


def run_expecting_failure(settings, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mutagg.cli", "run", "--until-idle"],
        env=settings_env(settings, **env), capture_output=True, text=True, timeout=300,
    )


@pytest.mark.parametrize("settings", [1], indirect=True)
def test_offsets_deleted_while_the_job_was_stopped_stop_it_or_are_skipped_on_request(settings):
    produce(settings, creates(0, 10))
    run_job(settings)
    assert query(settings, "SELECT next_offset FROM source_offsets") == [(10,)]

    # While the job is stopped: 10 more, then retention deletes the whole log (offsets 0..19).
    produce(settings, creates(10, 10))
    set_topic_config(settings, retention_ms="200", segment_ms="100")
    wait_for_low_watermark(settings, 20)
    set_topic_config(settings, retention_ms="-1")
    produce(settings, creates(20, 5))  # offsets 20..24: still on the broker

    stopped = run_expecting_failure(settings)
    assert stopped.returncode == 5, stopped.stderr[-4000:]
    assert "InputGap" in stopped.stderr and "offsets 10..19 (10 messages)" in stopped.stderr
    assert "MUTAGG_ON_INPUT_GAP=skip" in stopped.stderr
    gap = "SELECT kafka_topic, kafka_partition, from_offset, to_offset, continued FROM input_gaps"
    assert query(settings, gap) == [(settings.topic_mutations, 0, 10, 20, False)]
    assert query(settings, "SELECT count(*) FROM mutation_log")[0][0] == 10  # nothing after the gap
    assert query(settings, "SELECT next_offset FROM source_offsets") == [(10,)]

    run_job(settings, MUTAGG_ON_INPUT_GAP="skip")
    assert query(settings, gap) == [(settings.topic_mutations, 0, 10, 20, True)]
    decided = {row[0] for row in query(settings, "SELECT mutation_id FROM mutation_log")}
    assert decided == {f"m{i}" for i in (*range(10), *range(20, 25))}
    assert query(settings, "SELECT next_offset FROM source_offsets") == [(25,)]

    run_job(settings)  # past the gap now: the default policy runs clean
    assert query(settings, "SELECT count(*) FROM input_gaps")[0][0] == 1
