"""Reads this node's acknowledgements from the status topic into the outbox.

The job keys acks by edge node id, so they all sit in one partition
(`routing.status_partition`); the listener reads only that one, filtered by key,
from the offset stored in the outbox. Acks and the offset they were read to
commit together, so a crash between them neither loses nor re-applies one. An
unreachable broker is not an error here: the listener reports nothing and tries
again on the next poll.

A stored offset the broker no longer has (the node was away longer than the status
topic's retention) is never skipped silently (librdkafka's default would jump to the
end, and every outstanding entry would wait forever): the listener logs the lost range,
notes it in the outbox, reads on from the earliest offset still there, and once it has
read to where the partition ended, puts every entry still unanswered back to be sent
again; the job answers each copy from its ledger (DESIGN section 4, "Duplicates").
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from edge.errors import InvalidAck
from edge.outbox import AckReport, Outbox
from edge.records import Ack, parse_ack
from edge.routing import status_partition, topic_partitions

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
            # A stored offset that retention deleted is reported (and handled in `_gap_at`), never
            # a silent jump to the end past acks this node still waits for.
            "auto.offset.reset": "error",
            "enable.partition.eof": True,  # `caught_up`: an unanswered entry is overdue only then
        })
        self.partition: int | None = None
        self.caught_up = False

    def close(self) -> None:
        self._consumer.close()

    def _assign(self) -> bool:
        partitions = topic_partitions(self._consumer, self.topic, self._metadata_timeout_s, "status topic")
        if partitions is None:
            return False
        self.partition = status_partition(self.outbox.edge_node_id, len(partitions))
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
        self.caught_up = False
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
        lost_at: int | None = None
        for message in messages:
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self.caught_up = True
                elif error.code() == KafkaError._AUTO_OFFSET_RESET:
                    lost_at = message.offset()
                    break  # the fetcher stopped here; `_gap_at` moves it on
                else:
                    log.info("status topic error", extra={"error": str(error)})
                continue
            self.caught_up = False
            next_offset = message.offset() + 1
            if message.key() != self.node_key:
                continue
            try:
                acks.append(parse_ack(message.value()))
            except InvalidAck as exc:
                log.warning("ignoring an unreadable ack", extra={"offset": message.offset(), "error": str(exc)})
        report = AckReport()
        if next_offset is not None:
            report = self.outbox.apply_acks(acks, self.topic, {self.partition: next_offset})
        lost = self._gap_at(lost_at) if lost_at is not None else 0
        requeued = self.outbox.requeue_after_gaps(self.topic, self.partition)
        if requeued:
            log.warning("acks were lost to the status topic's retention: sending unanswered mutations again",
                        extra={"topic": self.topic, "partition": self.partition, "requeued": requeued})
        return replace(report, lost=lost, requeued=requeued, caught_up=self.caught_up)

    def _gap_at(self, offset: int) -> int:
        """The fetch at `offset` was out of range: note the gap, read on from the earliest
        offset still there, and return how many offsets were lost (0 if none, after all)."""
        partition = TopicPartition(self.topic, self.partition)
        try:
            low, high = self._consumer.get_watermark_offsets(partition, timeout=self._metadata_timeout_s, cached=False)
        except KafkaException as exc:  # offline again: the next poll meets the same error
            log.info("status topic unreachable", extra={"topic": self.topic, "error": str(exc)})
            self.partition = None
            return 0
        if low <= offset <= high:  # in range by now (a transient error): read on where we were
            self._consumer.assign([TopicPartition(self.topic, self.partition, offset)])
            return 0
        lost = low - offset if offset < low else offset  # beyond the end: the whole old topic is gone
        log.warning(
            "acks of this node were deleted before it read them (it was offline longer than the status "
            "topic's retention, or the topic was made anew); reading on from the earliest offset still there, "
            "and sending again whatever stays unanswered",
            extra={"topic": self.topic, "partition": self.partition, "stored_offset": offset,
                   "earliest_offset": low, "end_offset": high},
        )
        self.outbox.note_ack_gap(self.topic, self.partition, offset, low, high)
        self._consumer.assign([TopicPartition(self.topic, self.partition, low)])
        self.caught_up = False
        return lost
