"""Produce messages to the input topic and wait until Kafka has them all; with a master key
configured, each message naming an edge node is signed as that node (the job's own tools:
demo, bench; a real node signs with its own key, edge/signing.py)."""

from __future__ import annotations

from collections.abc import Iterable

import orjson
from confluent_kafka import Producer

from mutagg.settings import Settings
from mutagg.workload import Message
from schemas.errors import ServiceUnavailable
from schemas.mutation import claimed_node
from schemas.signature import Signer


def signature_headers(signer: Signer | None, value: bytes | None) -> list[tuple[str, bytes]] | None:
    """The `mutagg-sig` header of a message that names a node, signed as that node; else None."""
    if signer is None or value is None:
        return None
    try:
        node = claimed_node(orjson.loads(value))
    except orjson.JSONDecodeError:
        return None
    return None if node is None else [signer.header(node, value)]


def produce(settings: Settings, messages: Iterable[Message], topic: str | None = None) -> int:
    producer = Producer({
        **settings.kafka_client_config(),
        "enable.idempotence": True,
        "linger.ms": 20,
        "compression.type": "lz4",
        "message.max.bytes": 8 * 1024 * 1024,
    })
    errors: list[str] = []
    master_key = settings.edge_master_key()
    signer = Signer(master_key) if master_key is not None else None

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
                    headers=signature_headers(signer, message.value),
                )
                break
            except BufferError:
                producer.poll(0.05)
        count += 1
    if producer.flush(settings.service_deadline_s) or errors:
        raise ServiceUnavailable(f"could not deliver every message to Kafka: {errors[:3]}")
    return count
