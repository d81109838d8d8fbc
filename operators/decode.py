"""Decode a chunk of raw Kafka records into mutations and rejections."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.mutation import KAFKA_TIME_LIMIT_MS, Mutation, RawMessage, Rejection, decode
from schemas.registry import Registry

EVENT_TIME_LEAD_MS = 60_000
"""How far past the time of reading a record's Kafka timestamp still counts as event time.
A producer sets any CreateTime: one edge node with its clock a year ahead would otherwise
move every partition it writes to a year on, and with them the dependency timeouts."""


@dataclass(slots=True)
class DecodedChunk:
    """The decoded records of one chunk, and the offset after its last record."""

    topic: str
    partition: int
    next_offset: int | None
    mutations: list[Mutation]
    rejections: list[Rejection]
    event_time_ms: int
    """The latest event time the partition has shown with this chunk."""


def decode_chunk(
    topic: str, partition: int, messages: list[RawMessage], registry: Registry, max_bytes: int,
    caught_up_ms: int | None = None,
    read_ms: int | None = None,
) -> DecodedChunk:
    if not messages:  # a caught-up heartbeat
        return DecodedChunk(topic, partition, None, [], [], caught_up_ms or 0)
    mutations: list[Mutation] = []
    rejections: list[Rejection] = []
    for message in messages:
        result = decode(message, registry, max_bytes)
        (mutations if isinstance(result, Mutation) else rejections).append(result)
    # A timestamp past any datetime is the producer's doing, not time passing; so is one
    # well ahead of the time the record was read (see EVENT_TIME_LEAD_MS).
    event_time = max(m.timestamp_ms if m.timestamp_ms < KAFKA_TIME_LIMIT_MS else 0 for m in messages)
    if read_ms is not None:
        event_time = min(event_time, read_ms + EVENT_TIME_LEAD_MS)
    return DecodedChunk(topic, partition, messages[-1].offset + 1, mutations, rejections, event_time)
