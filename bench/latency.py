"""Latency at a fixed offered rate: the job tails the topic while mutations are
produced at `rate` per second; percentiles of Kafka append -> commit come from
the ledger (decided_at - kafka_timestamp)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from confluent_kafka import Producer

from mutagg.settings import Settings
from mutagg.workload import Message


class PacedProducer:
    """Produces the warm-up, then `messages` at a fixed rate, through ONE producer.

    Each record's Kafka timestamp is set by the client when it is handed over
    (CreateTime), so a small linger keeps it close to the broker's append time. A
    producer's first records wait for its connections and its idempotent id (~0.5-0.8 s
    here) while their timestamps already run: the warm-up, delivered in full before the
    paced phase, takes that wait, so the timed records measure the job, not the client.
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self.producer = Producer({**settings.kafka_client_config(), "linger.ms": 2, "compression.type": "lz4",
                                  "enable.idempotence": True})

    def warm_up(self, messages: list[Message]) -> None:
        """Produce `messages` at once and wait until every one is delivered."""
        for message in messages:
            self._produce(message)
        self._flush()

    def paced(self, messages: list[Message], rate: float) -> float:
        """Produce `messages` at `rate` per second (a schedule kept in 1 ms steps); the seconds taken."""
        producer = self.producer
        began = time.perf_counter()
        sent = 0
        total = len(messages)
        while sent < total:
            due = min(total, int((time.perf_counter() - began) * rate) + 1)
            while sent < due:
                if not self._produce(messages[sent]):
                    continue
                sent += 1
            producer.poll(0)
            time.sleep(0.001)
        seconds = time.perf_counter() - began
        self._flush()
        return seconds

    def _produce(self, message: Message) -> bool:
        try:
            self.producer.produce(self.settings.topic_mutations, key=message.key, value=message.value)
            return True
        except BufferError:
            self.producer.poll(0.01)
            return False

    def _flush(self) -> None:
        if self.producer.flush(self.settings.service_deadline_s):
            raise RuntimeError("could not deliver every message to Kafka")


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.25) -> None:
    give_up = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > give_up:
            raise TimeoutError(f"{what}: not reached within {timeout_s:.0f}s")
        time.sleep(interval_s)


def utc_now() -> datetime:
    return datetime.now(UTC)
