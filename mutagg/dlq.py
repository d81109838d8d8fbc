"""`mutagg dlq list`: read what was rejected, with the reasons from the headers."""

from __future__ import annotations

import uuid
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from mutagg.settings import Settings
from sources.kafka import list_partitions


def read_dlq(settings: Settings, limit: int = 100) -> list[dict[str, Any]]:
    """The first `limit` DLQ records of every partition, oldest first."""
    config = settings.kafka_client_config()
    partitions = list_partitions(config, settings.topic_dlq, settings.service_deadline_s)
    consumer = Consumer({
        **config, "group.id": f"mutagg-dlq-{uuid.uuid4()}", "enable.auto.commit": False,
        "enable.partition.eof": True,
    })
    consumer.assign([TopicPartition(settings.topic_dlq, p, OFFSET_BEGINNING) for p in partitions])
    records: list[dict[str, Any]] = []
    finished: set[int] = set()
    try:
        while len(finished) < len(partitions) and len(records) < limit:
            message = consumer.poll(5.0)
            if message is None:
                break
            if message.error():
                if message.error().code() == KafkaError._PARTITION_EOF:
                    finished.add(message.partition())
                    continue
                raise RuntimeError(f"reading the DLQ failed: {message.error()}")
            headers = {k: (v or b"").decode("utf-8", "replace") for k, v in (message.headers() or [])}
            records.append({
                "partition": message.partition(),
                "offset": message.offset(),
                "code": headers.get("mutagg.error.code"),
                "message": headers.get("mutagg.error.message"),
                "source": f"{headers.get('mutagg.source.topic')}[{headers.get('mutagg.source.partition')}]"
                          f"@{headers.get('mutagg.source.offset')}",
                "value": (message.value() or b"")[:200].decode("utf-8", "replace"),
            })
    finally:
        consumer.close()
    return records
