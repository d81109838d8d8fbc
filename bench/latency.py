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


def produce_paced(settings: Settings, messages: list[Message], rate: float) -> float:
    """Produce `messages` at `rate` per second (a schedule kept in 1 ms steps); return the seconds taken.

    Each record's Kafka timestamp is set by the client when it is handed over
    (CreateTime), so a small linger keeps it close to the broker's append time.
    """
    producer = Producer({**settings.kafka_client_config(), "linger.ms": 2, "compression.type": "lz4",
                         "enable.idempotence": True})
    began = time.perf_counter()
    sent = 0
    total = len(messages)
    while sent < total:
        due = min(total, int((time.perf_counter() - began) * rate) + 1)
        while sent < due:
            message = messages[sent]
            try:
                producer.produce(settings.topic_mutations, key=message.key, value=message.value)
            except BufferError:
                producer.poll(0.01)
                continue
            sent += 1
        producer.poll(0)
        time.sleep(0.001)
    seconds = time.perf_counter() - began
    if producer.flush(settings.service_deadline_s):
        raise RuntimeError("could not deliver every paced message to Kafka")
    return seconds


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.25) -> None:
    give_up = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > give_up:
            raise TimeoutError(f"{what}: not reached within {timeout_s:.0f}s")
        time.sleep(interval_s)


def utc_now() -> datetime:
    return datetime.now(UTC)
