"""Decode a chunk of raw Kafka records into mutations and rejections."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.mutation import Mutation, RawMessage, Rejection, decode
from schemas.registry import Registry


@dataclass(slots=True)
class DecodedChunk:
    """The decoded records of one chunk, and the offset after its last record."""

    topic: str
    partition: int
    next_offset: int
    mutations: list[Mutation]
    rejections: list[Rejection]


def decode_chunk(
    topic: str, partition: int, messages: list[RawMessage], registry: Registry, max_bytes: int
) -> DecodedChunk:
    mutations: list[Mutation] = []
    rejections: list[Rejection] = []
    for message in messages:
        result = decode(message, registry, max_bytes)
        (mutations if isinstance(result, Mutation) else rejections).append(result)
    return DecodedChunk(topic, partition, messages[-1].offset + 1, mutations, rejections)
