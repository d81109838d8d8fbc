"""`mutagg dlq list|replay` and the DLQ counts of `mutagg status`: what was rejected, with the
reasons from the headers, each input message once. After a crash the job may re-send DLQ records
(repeats are allowed, like acks); a record is known by the source coordinates in its headers
(`mutagg.source.topic/partition/offset`), so a repeat is listed, counted and replayed once."""

from __future__ import annotations

import getpass
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Producer, TopicPartition

from mutagg.settings import Settings
from schemas.errors import ServiceUnavailable
from schemas.mutation import REPLAY_HEADER
from sources.kafka import list_partitions

SourceKey = tuple[str, int, int]
"""(topic, partition, offset) of the input message a DLQ record stands for."""


def source_key(headers: dict[str, str], dlq_topic: str, dlq_partition: int, dlq_offset: int) -> SourceKey:
    """The source coordinates in a record's headers (`sinks/acks.py` `dlq_headers`); a record
    without them (written by something else) stands for itself."""
    try:
        return (headers["mutagg.source.topic"], int(headers["mutagg.source.partition"]),
                int(headers["mutagg.source.offset"]))
    except (KeyError, ValueError):
        return (f"{dlq_topic} (no source headers)", dlq_partition, dlq_offset)


def _scan(settings: Settings, on_record: Callable[[Any, dict[str, str]], None]) -> None:
    """Call `on_record(message, headers)` for every record of the DLQ, partition by partition in offset order."""
    config = settings.kafka_client_config()
    partitions = list_partitions(config, settings.topic_dlq, settings.service_deadline_s)
    consumer = Consumer({
        **config, "group.id": f"mutagg-dlq-{uuid.uuid4()}", "enable.auto.commit": False,
        "enable.partition.eof": True,
    })
    try:
        # Read up to the end as it is now: an empty partition sends no end-of-partition event to wait for.
        ends = {}
        for partition in partitions:
            low, high = consumer.get_watermark_offsets(
                TopicPartition(settings.topic_dlq, partition), timeout=10, cached=False)
            if high > low:
                ends[partition] = high
        consumer.assign([TopicPartition(settings.topic_dlq, p, OFFSET_BEGINNING) for p in ends])
        pending = set(ends)
        stalled_since = time.monotonic()
        while pending:
            batch = consumer.consume(1000, 0.05)  # returns after this wait even with fewer records
            if batch:
                stalled_since = time.monotonic()
            elif time.monotonic() - stalled_since > settings.service_deadline_s:
                raise ServiceUnavailable(f"reading the DLQ stalled before the end of partitions {sorted(pending)}")
            for message in batch:
                partition = message.partition()
                if message.error():
                    if message.error().code() == KafkaError._PARTITION_EOF:
                        pending.discard(partition)
                        continue
                    raise ServiceUnavailable(f"reading the DLQ failed: {message.error()}")
                if partition not in pending:
                    continue  # past the end it had when the reading began
                if message.offset() + 1 >= ends[partition]:
                    pending.discard(partition)
                headers = {k: (v or b"").decode("utf-8", "replace") for k, v in (message.headers() or [])}
                on_record(message, headers)
    except KafkaException as exc:
        raise ServiceUnavailable(f"reading the DLQ failed: {exc}") from exc
    finally:
        consumer.close()


@dataclass(frozen=True)
class DlqCensus:
    """The DLQ as its readers see it: records, and the input messages they stand for."""

    records: int
    distinct: int

    @property
    def repeat_factor(self) -> float:
        return round(self.records / self.distinct, 2) if self.distinct else 1.0


def dlq_census(settings: Settings) -> DlqCensus:
    """Count the DLQ's records and its distinct source messages (repeats after a crash count once)."""
    seen: set[SourceKey] = set()
    records = 0

    def count(message, headers: dict[str, str]) -> None:
        nonlocal records
        records += 1
        seen.add(source_key(headers, settings.topic_dlq, message.partition(), message.offset()))

    _scan(settings, count)
    return DlqCensus(records, len(seen))


def read_dlq(settings: Settings, limit: int = 100, raw: bool = False) -> list[dict[str, Any]]:
    """The first `limit` rejected input messages, each once (the first DLQ record of its source
    coordinates; `copies` says how many records the DLQ holds for it), oldest first per partition.

    After a crash the job may re-send a DLQ record; the DLQ is read to its end so that every
    copy is counted. `dlq` lists the DLQ coordinates of every copy.
    """
    chosen: dict[SourceKey, dict[str, Any]] = {}

    def keep(message, headers: dict[str, str]) -> None:
        key = source_key(headers, settings.topic_dlq, message.partition(), message.offset())
        first = chosen.get(key)
        if first is not None:
            first["copies"] += 1
            first["dlq"].append((message.partition(), message.offset()))
            return
        if len(chosen) >= limit:
            return
        chosen[key] = {
            "partition": message.partition(),
            "offset": message.offset(),
            "source_key": key,
            "copies": 1,
            "dlq": [(message.partition(), message.offset())],
            "code": headers.get("mutagg.error.code"),
            "message": headers.get("mutagg.error.message"),
            "source": f"{key[0]}[{key[1]}]@{key[2]}",
            "value": (message.value() or b"")[:200].decode("utf-8", "replace"),
            **({"record": message} if raw else {}),
        }

    _scan(settings, keep)
    return list(chosen.values())


_ORIGINAL_PREFIX = "mutagg.original."


def replay_dlq(
    settings: Settings, codes: set[str] | None = None, limit: int = 1_000_000, dry_run: bool = False
) -> list[dict[str, Any]]:
    """Re-submit rejected messages to the input topic (e.g. after a registry fix); each at most once.

    One record per source message (a repeat of it on the DLQ is the same message), `limit` of them.

    The re-submitted message is the original key and bytes, with its original headers
    and a `mutagg-replay-of` header; the job then decides it anew, moving an earlier
    validation rejection of its id to `mutation_log_history`. `dlq_replays` records
    what was re-submitted, by whom and when, so running the command again skips it.
    """
    records = read_dlq(settings, limit, raw=True)
    with psycopg.connect(settings.database_url) as connection:
        done_at = set(connection.execute(
            "SELECT dlq_partition, dlq_offset FROM dlq_replays WHERE dlq_topic = %s", (settings.topic_dlq,)
        ).fetchall())
        done_sources = set(connection.execute(
            "SELECT source_topic, source_partition, source_offset FROM dlq_replays "
            "WHERE dlq_topic = %s AND source_topic IS NOT NULL", (settings.topic_dlq,)
        ).fetchall())
    # A message is done if any of its copies was replayed (rows before schema version 2 name only the copy).
    chosen = [
        r for r in records
        if r["source_key"] not in done_sources and not done_at.intersection(r["dlq"])
        and (codes is None or r["code"] in codes)
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
        # Back to the input topic it was read from (the priority lane's stays there: README "Priority lane").
        source_topic = r["source_key"][0]
        topic = source_topic if source_topic in settings.input_topics() else settings.topic_mutations
        producer.produce(topic, key=message.key(), value=message.value(), headers=headers)
    if producer.flush(settings.service_deadline_s):
        raise ServiceUnavailable("DLQ replay: not every record could be delivered to the input topic")
    with psycopg.connect(settings.database_url) as connection:
        connection.cursor().executemany(
            "INSERT INTO dlq_replays (dlq_topic, dlq_partition, dlq_offset, error_code, replayed_by, "
            "source_topic, source_partition, source_offset) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING",
            [(settings.topic_dlq, r["partition"], r["offset"], r["code"], getpass.getuser(), *r["source_key"])
             for r in chosen],
        )
    return chosen
