"""Create the job's Kafka topics (input, DLQ, status); idempotent."""

from __future__ import annotations

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from mutagg.settings import Settings
from schemas.errors import ServiceUnavailable
from sources.kafka import list_partitions


def create_topics(settings: Settings, partitions: int | None = None) -> list[str]:
    """Create missing topics; return the names created."""
    admin = AdminClient(settings.kafka_client_config())
    wanted = {
        settings.topic_mutations: partitions or settings.topic_partitions,
        settings.topic_dlq: 1,
        settings.topic_status: partitions or settings.topic_partitions,
    }
    try:
        existing = set(admin.list_topics(timeout=min(30.0, settings.service_deadline_s)).topics)
    except KafkaException as exc:
        raise ServiceUnavailable(f"Kafka unreachable at {settings.kafka_bootstrap}: {exc}") from exc
    missing = [NewTopic(name, count, 1) for name, count in wanted.items() if name not in existing]
    if not missing:
        return []
    created = []
    for name, future in admin.create_topics(missing, operation_timeout=30).items():
        try:
            future.result(timeout=60)
            created.append(name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    for name in created:  # wait until the metadata shows them
        list_partitions(settings.kafka_client_config(), name, settings.service_deadline_s)
    return created
