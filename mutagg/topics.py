"""Create the job's Kafka topics (input, DLQ, status); idempotent."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from mutagg.settings import Settings
from schemas.errors import ServiceUnavailable
from sources.kafka import list_partitions

log = logging.getLogger(__name__)


def ensure_output_topics(settings: Settings) -> list[str]:
    """Before a run: the DLQ and status topics must exist, or no ack could ever be delivered."""
    try:
        return create_topics(settings, outputs_only=True)
    except KafkaException as exc:  # e.g. no permission to create: the producer will say what is wrong
        log.warning("could not create output topics", extra={"error": str(exc)})
        return []


def create_topics(settings: Settings, partitions: int | None = None, outputs_only: bool = False) -> list[str]:
    """Create missing topics (replication: the broker's default); return the names created."""
    admin = AdminClient(settings.kafka_client_config())
    wanted = {
        settings.topic_mutations: partitions or settings.topic_partitions,
        settings.topic_dlq: 1,
        settings.topic_status: partitions or settings.topic_partitions,
    }
    if outputs_only:
        del wanted[settings.topic_mutations]
    try:
        existing = set(admin.list_topics(timeout=min(30.0, settings.service_deadline_s)).topics)
    except KafkaException as exc:
        raise ServiceUnavailable(f"Kafka unreachable at {settings.kafka_bootstrap}: {exc}") from exc
    missing = [NewTopic(name, count, -1) for name, count in wanted.items() if name not in existing]
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
        list_partitions(settings.kafka_client_config(), name, settings.service_deadline_s, must_exist=False)
    return created
