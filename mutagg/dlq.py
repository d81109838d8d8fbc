"""`mutagg dlq list`: read what was rejected, with the reasons from the headers."""

from __future__ import annotations

import getpass
import uuid
from typing import Any

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition

from mutagg.settings import Settings
from schemas.errors import ServiceUnavailable
from schemas.mutation import REPLAY_HEADER
from sources.kafka import list_partitions


def read_dlq(settings: Settings, limit: int = 100, raw: bool = False) -> list[dict[str, Any]]:
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
                **({"record": message} if raw else {}),
            })
    finally:
        consumer.close()
    return records


_ORIGINAL_PREFIX = "mutagg.original."


def replay_dlq(
    settings: Settings, codes: set[str] | None = None, limit: int = 1_000_000, dry_run: bool = False
) -> list[dict[str, Any]]:
    """Re-submit DLQ records to the input topic (e.g. after a registry fix); each record at most once.

    The re-submitted message is the original key and bytes, with its original headers
    and a `mutagg-replay-of` header; the job then decides it anew, moving an earlier
    validation rejection of its id to `mutation_log_history`. `dlq_replays` records
    what was re-submitted, by whom and when, so running the command again skips it.
    """
    records = read_dlq(settings, limit, raw=True)
    with psycopg.connect(settings.database_url) as connection:
        done = set(connection.execute(
            "SELECT dlq_partition, dlq_offset FROM dlq_replays WHERE dlq_topic = %s", (settings.topic_dlq,)
        ).fetchall())
    chosen = [
        r for r in records
        if (r["partition"], r["offset"]) not in done and (codes is None or r["code"] in codes)
    ]
    if dry_run or not chosen:
        return chosen
    producer = Producer({**settings.kafka_client_config(), "enable.idempotence": True})
    for r in chosen:
        message = r["record"]
        headers = [
            (name[len(_ORIGINAL_PREFIX):], value)
            for name, value in (message.headers() or []) if name.startswith(_ORIGINAL_PREFIX)
        ]
        headers.append((REPLAY_HEADER, f"{settings.topic_dlq}:{r['partition']}:{r['offset']}".encode()))
        producer.produce(settings.topic_mutations, key=message.key(), value=message.value(), headers=headers)
    if producer.flush(settings.service_deadline_s):
        raise ServiceUnavailable("DLQ replay: not every record could be delivered to the input topic")
    with psycopg.connect(settings.database_url) as connection:
        connection.cursor().executemany(
            "INSERT INTO dlq_replays (dlq_topic, dlq_partition, dlq_offset, error_code, replayed_by) "
            "VALUES (%s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            [(settings.topic_dlq, r["partition"], r["offset"], r["code"], getpass.getuser()) for r in chosen],
        )
    return chosen
