"""Where messages go: the input topic's key, and the status-topic partition that
holds one node's acknowledgements."""

from __future__ import annotations

import logging
import zlib

from confluent_kafka import Consumer, KafkaException

log = logging.getLogger(__name__)


def entity_key(entity_type: str, entity_id: str) -> bytes:
    return f"{entity_type}:{entity_id}".encode()


def status_partition(edge_node_id: str, partitions: int) -> int:
    """The partition the job's ack producer writes `edge_node_id`'s acks to.

    The job keys acks by edge node id and uses librdkafka's default partitioner
    (`consistent_random`: CRC-32 of the key modulo the partition count), so a node
    reads one partition, not every node's acks.
    """
    if partitions < 1:
        raise ValueError("a topic has at least one partition")
    return zlib.crc32(edge_node_id.encode()) % partitions


def topic_partitions(consumer: Consumer, topic: str, timeout_s: float, what: str) -> list[int] | None:
    """The partitions of `topic` as the broker describes them; None (logged: `what` unreachable)
    when the broker does not answer, or the topic is missing or has none yet."""
    try:
        metadata = consumer.list_topics(topic, timeout=timeout_s)
    except KafkaException as exc:
        log.info("%s unreachable", what, extra={"topic": topic, "error": str(exc)})
        return None
    described = metadata.topics.get(topic)
    if described is None or described.error is not None or not described.partitions:
        return None
    return sorted(described.partitions)
