"""The input topic's Kafka timestamps are the broker's (DESIGN section 4, Time):
`mutagg topics create` makes it LogAppendTime, `mutagg run` warns when it is not."""

from __future__ import annotations

import logging
import uuid

import orjson
from confluent_kafka import TIMESTAMP_LOG_APPEND_TIME, Producer
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from mutagg.producer import produce
from mutagg.settings import Settings, with_overrides
from mutagg.topics import create_topics, warn_unless_log_append_time
from mutagg.workload import Message
from tests.integration.conftest import delete_topics, mutagg, read_topic, run_job


def timestamp_type(settings: Settings, topic: str) -> str:
    admin = AdminClient(settings.kafka_client_config())
    resource = ConfigResource(ResourceType.TOPIC, topic)
    return admin.describe_configs([resource])[resource].result(timeout=30)["message.timestamp.type"].value


def renamed(settings: Settings) -> Settings:
    suffix = uuid.uuid4().hex[:10]
    return with_overrides(settings, topic_mutations=f"tt-{suffix}.mutations", topic_dlq=f"tt-{suffix}.dlq",
                          topic_status=f"tt-{suffix}.status")


def article(mutation_id: str) -> Message:
    document = {
        "id": mutation_id, "edge_node_id": "shop-1", "entity_type": "article", "entity_id": "SKU-1",
        "operation_type": "CREATE", "attributes": {"price": "9.99"}, "base_version": 0,
        "timestamp": "2026-11-26T09:00:00Z", "priority": 5, "dependencies": [],
    }
    return Message(b"article:SKU-1", orjson.dumps(document))


def warnings_about_time(stderr: str) -> list[dict]:
    lines = [orjson.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    return [line for line in lines if line.get("timestamp_type") or "timestamp.type" in line.get("msg", "")]


def test_topics_create_makes_the_input_topic_log_append_time(settings):
    other = renamed(settings)
    try:
        result = mutagg(other, "topics", "create", "--partitions", "2")
        assert f"created {other.topic_mutations}" in result.stdout
        assert timestamp_type(other, other.topic_mutations) == "LogAppendTime"
        assert timestamp_type(settings, settings.topic_mutations) == "LogAppendTime"  # create_topics(settings)
        # The broker, not the producer, stamps what lands there.
        producer = Producer(other.kafka_client_config())
        producer.produce(other.topic_mutations, key=b"k", value=b"v", partition=0, timestamp=1_000)
        assert producer.flush(30) == 0
        (record,) = read_topic(other, other.topic_mutations)
        kind, stamp = record.timestamp()
        assert kind == TIMESTAMP_LOG_APPEND_TIME and stamp > 1_700_000_000_000
    finally:
        delete_topics(other, other.topic_mutations.removesuffix("mutations"))


def test_run_warns_once_when_the_input_topic_is_create_time(settings):
    create_time = renamed(settings)
    create_topics(create_time, timestamp_type="CreateTime")
    try:
        assert timestamp_type(create_time, create_time.topic_mutations) == "CreateTime"
        produce(create_time, [article("tt-1")])
        (warning,) = warnings_about_time(run_job(create_time).stderr)  # the job still runs to the end
        assert warning["level"] == "warning" and warning["timestamp_type"] == "CreateTime"
        assert warning["topic"] == create_time.topic_mutations
        assert "LogAppendTime" in warning["msg"] and "kafka-configs.sh --alter" in warning["msg"]
    finally:
        delete_topics(create_time, create_time.topic_mutations.removesuffix("mutations"))
    produce(settings, [article("tt-2")])
    assert warnings_about_time(run_job(settings).stderr) == []  # LogAppendTime: nothing to say


def test_an_unreadable_config_is_logged_not_fatal(settings, caplog):
    missing = with_overrides(settings, topic_mutations=f"tt-{uuid.uuid4().hex[:10]}.absent",
                             service_deadline_s=5.0)
    with caplog.at_level(logging.WARNING, logger="mutagg.topics"):
        assert warn_unless_log_append_time(missing) is None
    (record,) = caplog.records
    assert "could not read" in record.getMessage() and record.topic == missing.topic_mutations
