"""Acknowledgements to edge nodes and raw rejects to the DLQ, after the commit.

Delivery is confirmed before `send` returns (bytewax's own KafkaSink would drop
delivery errors); an undeliverable batch raises, the job stops, and the restart
re-acknowledges from the ledger. Acks may repeat, never contradict: a repeat
always carries the ledger's decision.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer

from mutagg.security import KafkaErrorWatch, kafka_denied
from schemas.errors import MutaggError, ServiceUnavailable
from schemas.mutation import Rejection
from sinks.outcomes import Outcome

log = logging.getLogger(__name__)


def ack_value(outcome: Outcome) -> bytes:
    return orjson.dumps(
        {
            "mutation_id": outcome.mutation_id,
            "status": outcome.status,
            "entity_type": outcome.entity_type,
            "entity_id": outcome.entity_id,
            "entity_version": outcome.version,
            "reason": outcome.reason,
            "conflict_ids": list(outcome.conflict_ids),
            "batch_id": outcome.batch_id,
            "processed_at": outcome.processed_at,
        }
    )


def dlq_headers(rejection: Rejection) -> list[tuple[str, bytes]]:
    raw = rejection.raw
    return [
        ("mutagg.error.code", rejection.code.encode()),
        ("mutagg.error.message", rejection.message.encode("utf-8", "replace")[:4000]),
        ("mutagg.source.topic", raw.topic.encode()),
        ("mutagg.source.partition", str(raw.partition).encode()),
        ("mutagg.source.offset", str(raw.offset).encode()),
        ("mutagg.source.timestamp", str(raw.timestamp_ms).encode()),
        *((f"mutagg.original.{name}", value or b"") for name, value in raw.headers),
    ]


class AckProducer:
    """Produces acks (key: edge node id) and DLQ records, and waits for delivery."""

    def __init__(
        self, kafka_config: dict, status_topic: str, dlq_topic: str, deadline_s: float = 300.0
    ):
        self.status_topic = status_topic
        self.dlq_topic = dlq_topic
        self.deadline_s = deadline_s
        self._watch = KafkaErrorWatch.for_config(kafka_config)
        self._producer = Producer(
            {
                **kafka_config,
                "error_cb": self._watch,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "compression.type": "lz4",
                "delivery.timeout.ms": int(deadline_s * 1000),
                "message.max.bytes": 8 * 1024 * 1024,
                # Failed deliveries only: a report per delivered ack cost ~1 us of Python each.
                "delivery.report.only.error": True,
                "on_delivery": self._on_delivery,  # every record's, acks and DLQ alike
            }
        )
        self._errors: list[KafkaError] = []
        self._denied: MutaggError | None = None  # an ACL refused a write: no retry helps

    def warm(self, timeout_s: float = 10.0) -> None:
        """Look up the topics it writes to before the first batch: its broker connections and their
        metadata then come before the first commit, not after it, where the first batch's acks
        waited for them and held the next commits' after-commit work back (README "Priority lane").
        Best effort: an unreachable broker is the first `send`'s to wait for and report, as before."""
        for topic in (self.status_topic, self.dlq_topic):
            try:
                self._producer.list_topics(topic, timeout=timeout_s)
            except KafkaException as exc:
                log.debug("warming the ack producer failed; the first batch waits instead",
                          extra={"topic": topic, "error": str(exc)})
                return

    def _on_delivery(self, error: KafkaError | None, message) -> None:
        if error is not None:
            self._errors.append(error)
            self._denied = self._denied or kafka_denied(
                error, self._watch.bootstrap, self._watch.username, message.topic())

    def send(self, outcomes: Iterable[Outcome]) -> int:
        """Produce every ack and DLQ record for `outcomes`; return how many were sent."""
        produce, status_topic = self._producer.produce, self.status_topic
        sent = 0
        for outcome in outcomes:
            source = outcome.source
            if isinstance(source, Rejection):
                raw = source.raw
                self._produce(self.dlq_topic, raw.key, raw.value, dlq_headers(source))
                sent += 1
            node = outcome.edge_node_id
            if node is None or outcome.mutation_id is None:
                continue
            key, value = node.encode(), ack_value(outcome)
            try:  # positional, the delivery callback set once on the producer: ~0.5 us less per ack
                produce(status_topic, value, key)
            except BufferError:
                self._produce(status_topic, key, value, None)
            sent += 1
        self.flush()
        return sent

    def _produce(self, topic: str, key: bytes | None, value: bytes | None, headers) -> None:
        while True:
            try:
                self._producer.produce(topic, value=value, key=key, headers=headers)
                return
            except BufferError:
                self._producer.poll(0.1)

    def flush(self) -> None:
        remaining = self._producer.flush(self.deadline_s)
        if remaining or self._errors:
            self._watch.raise_if_failed()  # the cause, if the broker rejected our credentials or certificate
            if self._denied is not None:
                raise self._denied
            errors, self._errors = self._errors, []
            raise ServiceUnavailable(
                f"acknowledgements not delivered to Kafka ({remaining} pending, "
                f"errors: {[str(e) for e in errors[:3]]})"
            )
