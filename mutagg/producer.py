"""Produce messages to the input topic and wait until Kafka has them all."""

from __future__ import annotations

from collections.abc import Iterable

from confluent_kafka import Producer

from mutagg.settings import Settings
from mutagg.workload import Message
from schemas.errors import ServiceUnavailable


def produce(settings: Settings, messages: Iterable[Message], topic: str | None = None) -> int:
    producer = Producer({
        **settings.kafka_client_config(),
        "enable.idempotence": True,
        "linger.ms": 20,
        "compression.type": "lz4",
        "message.max.bytes": 8 * 1024 * 1024,
    })
    errors: list[str] = []

    def delivered(error, _message) -> None:
        if error is not None:
            errors.append(str(error))

    count = 0
    for message in messages:
        while True:
            try:
                producer.produce(
                    topic or settings.topic_mutations, key=message.key, value=message.value,
                    timestamp=message.timestamp_ms or 0, on_delivery=delivered,
                )
                break
            except BufferError:
                producer.poll(0.05)
        count += 1
    if producer.flush(settings.service_deadline_s) or errors:
        raise ServiceUnavailable(f"could not deliver every message to Kafka: {errors[:3]}")
    return count
