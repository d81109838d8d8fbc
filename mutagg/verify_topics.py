"""Bounded reads of the job's topics for `mutagg verify`.

A read covers, per partition, the offsets from a start (0, or the first record at or
after a time: `offsets_for_times`) up to the high watermark it had when the read
began; records produced meanwhile are left for the next run. Records come in batches
of thousands (`consume`), so a few hundred thousand take seconds. A read that makes
no progress for the service deadline raises `ServiceUnavailable`, never hangs.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from mutagg.settings import Settings
from schemas.errors import ServiceUnavailable
from sources.kafka import list_partitions

_BATCH = 10_000


@dataclass(frozen=True, slots=True)
class Span:
    """One partition's part of a read: offsets [start, high) while `low` is the earliest
    offset still on the broker (retention deleted what lies below it)."""

    partition: int
    low: int
    high: int
    start: int


class TopicReader:
    """Reads one topic with a throwaway consumer (no group offsets committed)."""

    def __init__(self, settings: Settings, topic: str):
        self.topic = topic
        self.deadline_s = settings.service_deadline_s
        self.partitions = list_partitions(settings.kafka_client_config(), topic, self.deadline_s)
        self._consumer = Consumer({
            **settings.kafka_client_config(), "group.id": f"mutagg-verify-{uuid.uuid4()}",
            "enable.auto.commit": False, "enable.partition.eof": True, "auto.offset.reset": "earliest",
        })

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def spans(self, since_ms: int | None = None) -> dict[int, Span]:
        """Per partition, what a read from `since_ms` (None: from the earliest offset) covers now."""
        timeout = min(30.0, self.deadline_s)
        marks = {p: self._consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=timeout)
                 for p in self.partitions}
        starts = {p: low for p, (low, _high) in marks.items()}
        if since_ms is not None:
            asked = [TopicPartition(self.topic, p, since_ms) for p in self.partitions]
            for found in self._consumer.offsets_for_times(asked, timeout=timeout):
                low, high = marks[found.partition]
                starts[found.partition] = high if found.offset < 0 else max(found.offset, low)
        return {p: Span(p, low, high, starts[p]) for p, (low, high) in marks.items()}

    def records(self, spans: dict[int, Span]) -> Iterator[Message]:
        """Every record of `spans` (in offset order per partition)."""
        wanted = {p: s for p, s in spans.items() if s.start < s.high}
        if not wanted:
            return
        self._consumer.assign([TopicPartition(self.topic, p, s.start) for p, s in wanted.items()])
        open_ends = {p: s.high for p, s in wanted.items()}
        stalled_since = time.monotonic()
        try:
            while open_ends:
                # Short: `consume` waits out its timeout unless the batch fills (small topics).
                batch = self._consumer.consume(_BATCH, timeout=0.1)
                if not batch:
                    if time.monotonic() - stalled_since > self.deadline_s:
                        raise ServiceUnavailable(
                            f"reading {self.topic} made no progress for {self.deadline_s:.0f}s "
                            f"(partitions {sorted(open_ends)} unfinished)")
                    continue
                stalled_since = time.monotonic()
                for message in batch:
                    partition = message.partition()
                    end = open_ends.get(partition)
                    if message.error():
                        if message.error().code() == KafkaError._PARTITION_EOF:
                            open_ends.pop(partition, None)
                            continue
                        raise ServiceUnavailable(f"reading {self.topic} failed: {message.error()}")
                    if end is None or message.offset() >= end:
                        open_ends.pop(partition, None)
                        continue
                    yield message
                    if message.offset() >= end - 1:
                        open_ends.pop(partition, None)
        finally:
            self._consumer.unassign()

    def horizon_ms(self, spans: dict[int, Span]) -> int | None:
        """The Kafka time from which the topic still holds every record it was sent: the
        latest timestamp among the first records of partitions that retention has cut
        (None: nothing was ever deleted, the topic is whole)."""
        cut = {p: Span(p, s.low, s.high, s.low) for p, s in spans.items() if s.low > 0 and s.low < s.high}
        if any(s.low > 0 and s.low >= s.high for s in spans.values()):
            return int(time.time() * 1000)  # a partition emptied by retention: nothing before now is whole
        firsts: dict[int, int] = {}
        for message in self._first_records(cut):
            firsts[message.partition()] = message.timestamp()[1]
        return max(firsts.values()) if firsts else None

    def _first_records(self, spans: dict[int, Span]) -> Iterator[Message]:
        seen: set[int] = set()
        for message in self.records(spans):
            if message.partition() not in seen:
                seen.add(message.partition())
                yield message
            if len(seen) == len(spans):
                return


def header(message: Message, name: str) -> str | None:
    for key, value in message.headers() or ():
        if key == name:
            return (value or b"").decode("utf-8", "replace")
    return None
