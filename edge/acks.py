"""Reads this node's acknowledgements from the status topic into the outbox.

The job keys acks by edge node id, so they all sit in one partition
(`routing.status_partition`); the listener reads only that one, filtered by key,
from the offset stored in the outbox. Acks and the offset they were read to
commit together, so a crash between them neither loses nor re-applies one. An
unreachable broker is not an error here: the listener reports nothing and tries
again on the next poll.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from edge.errors import InvalidAck
from edge.outbox import AckReport, Outbox
from edge.records import Ack, parse_ack
from edge.routing import status_partition

log = logging.getLogger(__name__)


class AckListener:
    """Consumes `edge_node_id`'s acks. Single-threaded, like the outbox it writes to."""

    def __init__(
        self,
        outbox: Outbox,
        kafka_config: Mapping[str, Any],
        topic: str,
        metadata_timeout_s: float = 5.0,
    ):
        self.outbox = outbox
        self.topic = topic
        self.node_key = outbox.edge_node_id.encode()
        self._metadata_timeout_s = metadata_timeout_s
        self._consumer = Consumer({
            **kafka_config,
            # Offsets live in the outbox, next to the acks they produced; no group commits.
            "group.id": f"mutagg-edge-{outbox.edge_node_id}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "socket.connection.setup.timeout.ms": int(metadata_timeout_s * 1000),
            "logger": logging.getLogger("edge.kafka"),
        })
        self.partition: int | None = None

    def close(self) -> None:
        self._consumer.close()

    def _assign(self) -> bool:
        try:
            metadata = self._consumer.list_topics(self.topic, timeout=self._metadata_timeout_s)
        except KafkaException as exc:
            log.info("status topic unreachable", extra={"topic": self.topic, "error": str(exc)})
            return False
        described = metadata.topics.get(self.topic)
        if described is None or described.error is not None or not described.partitions:
            return False
        self.partition = status_partition(self.outbox.edge_node_id, len(described.partitions))
        stored = self.outbox.ack_offsets(self.topic).get(self.partition)
        if stored is not None:
            start = stored
        elif self.outbox.ever_sent():
            start = OFFSET_BEGINNING
        else:
            # Nothing of this node was ever sent, so none of its acks is before today's
            # end: skip other nodes' history. Pinned now, before anything is sent.
            try:
                _low, start = self._consumer.get_watermark_offsets(
                    TopicPartition(self.topic, self.partition), timeout=self._metadata_timeout_s
                )
            except KafkaException as exc:
                log.info("status topic unreachable", extra={"topic": self.topic, "error": str(exc)})
                self.partition = None
                return False
            self.outbox.apply_acks([], self.topic, {self.partition: start})
        self._consumer.assign([TopicPartition(self.topic, self.partition, start)])
        return True

    def poll(self, timeout_s: float = 1.0, max_messages: int = 1000) -> AckReport:
        """Apply whatever acks arrive within `timeout_s`; an empty report when offline."""
        if self.partition is None and not self._assign():
            return AckReport()
        try:
            messages = self._consumer.consume(max_messages, timeout=timeout_s)
        except KafkaException as exc:
            log.info("status topic read failed", extra={"error": str(exc)})
            return AckReport()
        acks: list[Ack] = []
        next_offset: int | None = None
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.info("status topic error", extra={"error": str(error)})
                continue
            next_offset = message.offset() + 1
            if message.key() != self.node_key:
                continue
            try:
                acks.append(parse_ack(message.value()))
            except InvalidAck as exc:
                log.warning("ignoring an unreadable ack", extra={"offset": message.offset(), "error": str(exc)})
        if next_offset is None:
            return AckReport()
        return self.outbox.apply_acks(acks, self.topic, {self.partition: next_offset})
