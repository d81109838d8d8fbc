"""Latency at a fixed offered rate: the job tails the topic while mutations are
produced at `rate` per second; percentiles of Kafka append -> commit come from
the ledger (decided_at - kafka_timestamp)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType

from mutagg.producer import signature_headers
from mutagg.settings import Settings
from mutagg.workload import Message
from schemas.signature import Signer


class PacedProducer:
    """Produces the warm-up, then `messages` at a fixed rate, through ONE producer.

    The topic stamps records with the broker's append time (`log_append_time`), the
    start of the latency the issue asks for, so the client's linger is not measured
    and may be long enough to spare the broker: at 2,000/s a 2 ms linger made the
    broker alone use 0.4-0.6 of this machine's 2 cores, a 20 ms one 0.12. A producer's
    first records wait for its connections and its idempotent id (~0.5-0.8 s here): the
    warm-up, delivered in full before the paced phase, takes that wait.
    """

    def __init__(self, settings: Settings, topic: str | None = None):
        self.settings = settings
        self.topic = topic or settings.topic_mutations
        self.producer = Producer({**settings.kafka_client_config(), "linger.ms": 20, "compression.type": "lz4",
                                  "enable.idempotence": True})
        master_key = settings.edge_master_key()
        self.signer = Signer(master_key) if master_key is not None else None  # signed as the job expects

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

    def until(self, messages: list[Message], rate: float, stop: Callable[[], bool]) -> int:
        """Produce `messages` at `rate` per second until `stop()` (asked every 0.1 s); how many were produced."""
        producer = self.producer
        began = time.perf_counter()
        sent, asked_at = 0, began
        while sent < len(messages):
            now = time.perf_counter()
            if now - asked_at >= 0.1:
                asked_at = now
                if stop():
                    break
            due = min(len(messages), int((now - began) * rate) + 1)
            while sent < due:
                if self._produce(messages[sent]):
                    sent += 1
            producer.poll(0)
            # Asleep until the next message is due (at least 1 ms, at most until the next `stop()`):
            # 1 ms steps at 200/s woke this process 1,000 times a second on the job's 2 shared cores.
            time.sleep(min(0.1, max(0.001, began + sent / rate - time.perf_counter())))
        self._flush()
        return sent

    def _produce(self, message: Message) -> bool:
        try:
            self.producer.produce(self.topic, key=message.key, value=message.value,
                                  headers=signature_headers(self.signer, message.value))
            return True
        except BufferError:
            self.producer.poll(0.01)
            return False

    def _flush(self) -> None:
        if self.producer.flush(self.settings.service_deadline_s):
            raise RuntimeError("could not deliver every message to Kafka")


def log_append_time(settings: Settings, topic: str) -> None:
    """Make the broker stamp `topic`'s records with their append time (not the producer's clock)."""
    admin = AdminClient(settings.kafka_client_config())
    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("message.timestamp.type", "LogAppendTime", incremental_operation=AlterConfigOpType.SET),
    ])
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=60)


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.25) -> None:
    give_up = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > give_up:
            raise TimeoutError(f"{what}: not reached within {timeout_s:.0f}s")
        time.sleep(interval_s)


def utc_now() -> datetime:
    return datetime.now(UTC)
