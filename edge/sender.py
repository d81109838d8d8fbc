"""Sends the outbox to the input topic, in rounds, until it is delivered or a
deadline passes.

One round: take the sendable entries (per entity only the oldest undelivered
one, after the undelivered dependencies recorded before it; while the job is
overloaded, critical ones first and the rest deferred: edge/deferral.py),
mark them sent, produce them with the entity key, wait for every delivery
report, record each outcome. A round with a failure (the network is down, the
broker is away) ends the producer and waits out an exponential backoff with
jitter before the next. The producer is idempotent with acks=all, so a broker
retry never writes a message twice or out of order; what the broker never got
stays PENDING and goes out again in the next round.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from edge.backoff import Backoff
from edge.deferral import SendPolicy, next_deferred_since, plan_round
from edge.outbox import Outbox
from edge.records import OutboxEntry
from edge.signing import signature_header
from schemas.routing import Routing

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RoundResult:
    sent: int
    delivered: int
    failed: int
    errors: tuple[str, ...] = ()


@dataclass(slots=True)
class SendReport:
    """What `Sender.send` achieved before it returned."""

    rounds: int = 0
    delivered: int = 0
    failed: int = 0
    drained: bool = False      # nothing more to send now (deferred entries aside)
    deferred: int = 0          # entries held back at the end, the job being overloaded
    backoff_delays: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def producer_config(kafka_config: Mapping[str, Any], delivery_timeout_s: float) -> dict[str, Any]:
    """Settings that keep one entity's mutations whole and in order."""
    return {
        **kafka_config,
        "enable.idempotence": True,             # broker-side retries never duplicate or reorder
        "acks": "all",                          # delivered means replicated
        "max.in.flight.requests.per.connection": 5,  # the most idempotence keeps ordered
        "message.timeout.ms": max(1000, int(delivery_timeout_s * 1000)),
        "linger.ms": 5,
        "compression.type": "lz4",
        "socket.connection.setup.timeout.ms": max(1000, int(min(delivery_timeout_s, 30.0) * 1000)),
        "logger": logging.getLogger("edge.kafka"),
    }


class Sender:
    """Delivers one outbox to the input topic. Single-threaded: call from the outbox's owner."""

    def __init__(
        self,
        outbox: Outbox,
        kafka_config: Mapping[str, Any],
        topic: str,
        backoff: Backoff | None = None,
        delivery_timeout_s: float = 30.0,
        round_limit: int = 5000,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        node_key: bytes | None = None,
        policy: SendPolicy | None = None,
        routing: Routing | None = None,
        defer_clock: Callable[[], float] | None = None,
    ):
        """With `node_key`, every message carries its signature (`mutagg-sig`, DESIGN section 2).
        `policy` says what to defer while `defer` is set (the owner sets it from the job's state);
        `defer_clock` (default `clock`) measures how long an entry has been deferred."""
        self.outbox = outbox
        self.policy = policy or SendPolicy({})
        self.defer = False
        self.deferred_since: dict[int, float] = {}  # seq -> when first deferred (this process's clock)
        self.deferred = 0  # entries the last round held back
        self._node_key = node_key
        self.topic = topic
        # Lane types go to the priority lane's topic (schemas/routing.py); None: everything to `topic`.
        self.routing = routing
        self.backoff = backoff or Backoff()
        self.delivery_timeout_s = delivery_timeout_s
        self.round_limit = round_limit
        self._config = producer_config(kafka_config, delivery_timeout_s)
        self._clock = clock
        self._defer_clock = defer_clock or clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._producer: Producer | None = None
        self.consecutive_failures = 0
        self._not_before = 0.0

    def close(self) -> None:
        self._drop_producer()

    def _drop_producer(self) -> None:
        if self._producer is not None:
            # Whatever is still queued must not go out after a resend of the same entity.
            self._producer.purge()
            self._producer.flush(0)
            self._producer = None

    def send_round(self) -> RoundResult:
        """Hand every sendable entry to the producer and wait for each delivery report."""
        batch = self._plan()
        if not batch:
            return RoundResult(0, 0, 0)
        if self._producer is None:
            self._producer = Producer(self._config)
        self.outbox.mark_sent([entry.seq for entry in batch])
        reports: dict[int, tuple[KafkaError | None, int, int]] = {}

        def on_delivery(seq: int) -> Callable[[KafkaError | None, Message], None]:
            def delivered(error: KafkaError | None, message: Message) -> None:
                reports[seq] = (error, message.partition(), message.offset())
            return delivered

        try:
            for entry in batch:
                self._produce(entry, on_delivery(entry.seq), reports)
            # Every report arrives within message.timeout.ms; the margin covers callback dispatch.
            self._producer.flush(self.delivery_timeout_s + 10.0)
        finally:
            # Whatever happened, no entry stays IN_FLIGHT past the round: it would hold its entity.
            delivered = [(seq, p, o) for seq, (error, p, o) in reports.items() if error is None]
            failed = [e.seq for e in batch if e.seq not in reports or reports[e.seq][0] is not None]
            self.outbox.mark_delivered(delivered)
            self.outbox.mark_failed(failed)
            if failed:
                self._drop_producer()
        errors = tuple(sorted({str(error) for error, _, _ in reports.values() if error is not None}))
        if len(reports) < len(batch):
            errors += (f"{len(batch) - len(reports)} delivery reports missing",)
        return RoundResult(len(batch), len(delivered), len(failed), errors)

    def _plan(self) -> list[OutboxEntry]:
        undelivered = self.outbox.undelivered()
        now = self._defer_clock()
        plan = plan_round(undelivered, self.policy, self.defer, self.deferred_since, now, self.round_limit)
        self.deferred_since = next_deferred_since(self.deferred_since, plan, undelivered, now)
        self.deferred = len(plan.deferred)
        return plan.chosen

    def _produce(
        self, entry: OutboxEntry, on_delivery: Callable[[KafkaError | None, Message], None],
        reports: dict[int, tuple[KafkaError | None, int, int]],
    ) -> None:
        while True:
            try:
                headers = None if self._node_key is None else [signature_header(self._node_key, entry.payload)]
                topic = self.topic if self.routing is None else self.routing.topic_for(entry.entity_type)
                self._producer.produce(
                    topic, key=entry.kafka_key, value=entry.payload, headers=headers, on_delivery=on_delivery,
                )
                return
            except BufferError:
                self._producer.poll(0.05)
            except KafkaException as exc:  # refused before sending (e.g. too large for the client)
                reports[entry.seq] = (exc.args[0], -1, -1)
                return

    def send(self, deadline_s: float, pause_s: float = 0.0) -> SendReport:
        """Send rounds until nothing is sendable or `deadline_s` has passed; never longer
        than the deadline plus one delivery timeout. Backs off between failed rounds;
        `pause_s` paces successful ones (a constrained uplink)."""
        report = SendReport()
        give_up_at = self._clock() + deadline_s
        while True:
            wait = self._not_before - self._clock()
            if wait > 0:
                if self._clock() + wait > give_up_at:
                    return report
                self._sleep(wait)
            if self._clock() > give_up_at:
                return report
            result = self.send_round()
            report.deferred = self.deferred
            if result.sent == 0:
                report.drained = True
                return report
            report.rounds += 1
            report.delivered += result.delivered
            report.failed += result.failed
            if result.failed:
                delay = self.backoff.delay(self.consecutive_failures, self._rng.random())
                self.consecutive_failures += 1
                self._not_before = self._clock() + delay
                report.backoff_delays.append(delay)
                report.errors.extend(result.errors)
                log.warning("delivery failed; backing off",
                            extra={"failed": result.failed, "retry_in_s": round(delay, 3), "errors": result.errors})
            else:
                self.consecutive_failures = 0
                self._not_before = self._clock() + pause_s
