"""`mutagg topics create` sets every config the job relies on; `mutagg topics check` finds
nothing on topics it made and one line per difference on topics changed since (exit 6)."""

from __future__ import annotations

import uuid

from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from mutagg.settings import with_overrides
from tests.integration.conftest import delete_topics, mutagg


def alter(admin: AdminClient, topic: str, key: str, value: str) -> None:
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry(key, value, incremental_operation=AlterConfigOpType.SET)])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)


def test_check_is_clean_on_created_topics_and_reports_each_difference(settings):
    prefix = f"c-{uuid.uuid4().hex[:10]}."
    settings = with_overrides(settings, topic_mutations=f"{prefix}in", topic_dlq=f"{prefix}dlq",
                              topic_status=f"{prefix}status", topic_retention_status_ms=86_400_000,
                              priority_lane="critical")  # the lane topic is created and checked too
    try:
        created = mutagg(settings, "topics", "create")
        assert sorted(created.stdout.split()) == sorted(
            ["created", settings.topic_mutations, "created", settings.lane_topic, "created", settings.topic_dlq,
             "created", settings.topic_status])
        clean = mutagg(settings, "topics", "check", check=False)
        assert (clean.returncode, clean.stdout.strip()) == (0, "topics match the settings"), clean.stderr[-3000:]

        admin = AdminClient(settings.kafka_client_config())
        alter(admin, settings.topic_status, "retention.ms", "3600000")
        alter(admin, settings.topic_mutations, "message.timestamp.type", "CreateTime")
        for future in admin.delete_topics([settings.topic_dlq], operation_timeout=30).values():
            future.result(timeout=60)
        drifted = mutagg(settings, "topics", "check", "--partitions", "8", check=False)
        assert drifted.returncode == 6, drifted.stderr[-3000:]
        lines = drifted.stdout.strip().splitlines()
        inp, dlq, status = (f"topic {settings.topic_mutations} (input)", f"topic {settings.topic_dlq} (DLQ)",
                            f"topic {settings.topic_status} (status)")
        assert sorted(lines) == sorted([
            f"{inp}: 4 partitions, expected at least 8 (kafka-topics.sh --alter --topic {settings.topic_mutations} "
            "--partitions 8; adding partitions re-maps entities: README \"Scale\")",
            f"{inp}: message.timestamp.type is CreateTime, expected LogAppendTime (kafka-configs.sh --alter "
            f"--entity-type topics --entity-name {settings.topic_mutations} --add-config "
            "message.timestamp.type=LogAppendTime)",
            f"{dlq}: missing (create it with `mutagg topics create`)",
            # The priority lane is an input like the other (README "Priority lane").
            f"topic {settings.lane_topic} (input, priority lane): 4 partitions, expected at least 8 (kafka-topics.sh "
            f"--alter --topic {settings.lane_topic} --partitions 8; adding partitions re-maps entities: "
            "README \"Scale\")",
            f"{status}: 4 partitions, expected at least 8 (kafka-topics.sh --alter --topic {settings.topic_status} "
            "--partitions 8; adding partitions re-maps entities: README \"Scale\")",
            f"{status}: retention.ms is 3600000, expected 86400000 (kafka-configs.sh --alter --entity-type topics "
            f"--entity-name {settings.topic_status} --add-config retention.ms=86400000)",
        ]), lines
    finally:
        delete_topics(settings, prefix)
