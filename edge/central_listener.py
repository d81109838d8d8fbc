"""Reads the job's state records (the compacted central-state topic) and keeps the latest
of each job process with when it arrived; `edge.central.classify` turns them into what the
ERP shows. The topic is small (compacted, one record per job process and interval), so the
listener reads it from the beginning at start and keeps no offsets. An unreachable broker
or a missing topic is not an error: the view is then `unknown` (README "Central state").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from edge.central import CentralView, InvalidStateRecord, StateRecord, Thresholds, classify, parse_state_record
from edge.routing import topic_partitions

log = logging.getLogger(__name__)


class CentralListener:
    """Single-threaded, like the node that owns it."""

    def __init__(
        self,
        kafka_config: Mapping[str, Any],
        topic: str,
        edge_node_id: str,
        thresholds: Thresholds,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        metadata_timeout_s: float = 5.0,
    ):
        self.topic = topic
        self.thresholds = thresholds
        self._monotonic = monotonic
        self._wall = wall
        self._metadata_timeout_s = metadata_timeout_s
        self._consumer = Consumer({
            **kafka_config,
            "group.id": f"mutagg-edge-{edge_node_id}",  # the ack listener's group: the ACL plan's
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": True,
            "socket.connection.setup.timeout.ms": int(metadata_timeout_s * 1000),
            "logger": logging.getLogger("edge.kafka"),
        })
        self._partitions: set[int] = set()
        self._at_end: set[int] = set()
        self.heard: dict[str, tuple[StateRecord, float]] = {}

    def close(self) -> None:
        self._consumer.close()

    def _assign(self) -> bool:
        partitions = topic_partitions(self._consumer, self.topic, self._metadata_timeout_s, "central-state topic")
        if partitions is None:
            return False
        self._partitions = set(partitions)
        self._consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in sorted(self._partitions)])
        return True

    def poll(self, timeout_s: float = 0.1) -> int:
        """Read what arrived (waiting at most `timeout_s`, longer only for the first read to the
        end); return how many records were read."""
        if not self._partitions and not self._assign():
            return 0
        first = self._at_end != self._partitions
        give_up_at = self._monotonic() + (max(timeout_s, 2.0) if first else timeout_s)
        read = 0
        while True:
            remaining = give_up_at - self._monotonic()
            if remaining <= 0:
                return read
            message = self._consumer.poll(remaining)
            if message is None:
                return read
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    self._at_end.add(message.partition())
                    if self._at_end == self._partitions:
                        return read
                else:
                    log.info("central-state topic read failed", extra={"topic": self.topic, "error": str(error)})
                continue
            read += 1
            self._take(message.key(), message.value())

    def _take(self, key: bytes | None, value: bytes | None) -> None:
        try:
            record = parse_state_record(key, value)
        except InvalidStateRecord as exc:
            log.warning("central-state record skipped", extra={"topic": self.topic, "error": str(exc)})
            return
        name = (key or b"").decode("utf-8", "replace")
        if record is None:
            self.heard.pop(name, None)  # a tombstone: that job process is gone
        else:
            self.heard[name] = (record, self._monotonic())

    def view(self) -> CentralView:
        return classify(self.heard.values(), self._wall(), self._monotonic(), self.thresholds)
