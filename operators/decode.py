"""Decode a chunk of raw Kafka records into mutations and rejections: the compiled core
(operators/compiled.py) builds the mutations it can; the Python decoder
(`schemas.mutation.decode`) answers for every other message, one at a time (each rejection's
wording and identity, headers beyond a signature, shapes the core leaves to it), and the
signature of each message the core decoded is checked here, as the Python decoder does."""

from __future__ import annotations

from dataclasses import dataclass

from operators import compiled
from schemas.mutation import KAFKA_TIME_LIMIT_MS, Mutation, RawMessage, Rejection, decode
from schemas.registry import Registry
from schemas.signature import SIGNATURE_HEADER, Verifier, header_signature


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
    unsigned: int = 0
    """Records without a `mutagg-sig` header (counted by `mutagg_unsigned_total`)."""


def event_time_cap(read_ms: int | None, lead_s: float) -> int | None:
    """The latest event time a chunk read at `read_ms` may show (`Settings.event_time_lead_s`; 0: no cap)."""
    return read_ms + int(lead_s * 1000) if lead_s > 0 and read_ms is not None else None


def decode_chunk(
    topic: str, partition: int, messages: list[RawMessage], registry: Registry, max_bytes: int,
    caught_up_ms: int | None = None,
    event_time_cap_ms: int | None = None,
    verifier: Verifier | None = None,
) -> DecodedChunk:
    """`event_time_cap_ms` (see Settings.event_time_lead_s): the latest event time this chunk may show.
    `verifier`: the master key's, when one is configured (see `schemas.mutation.decode`)."""
    if not messages:  # a caught-up heartbeat
        return DecodedChunk(topic, partition, None, [], [], caught_up_ms or 0)
    if type(messages) is not list:
        messages = list(messages)
    results, refused = compiled.decoder(registry).decode(messages, max_bytes)
    if verifier is not None:  # one the core decoded names a node it is not signed by: the Python decoder words it
        for index, result in enumerate(results):
            if result is not None:
                message = messages[index]
                if verifier.problem(result.edge_node_id, message.value, message.headers) is not None:
                    refused.append(index)
    for index in refused:
        results[index] = decode(messages[index], registry, max_bytes, verifier)
    if refused:
        mutations: list[Mutation] = []
        rejections: list[Rejection] = []
        for result in results:
            (mutations if type(result) is Mutation else rejections).append(result)
    else:
        mutations, rejections = results, []
    unsigned = 0
    for message in messages:
        headers = message.headers  # an edge node's message: the signature is its first (only) header
        if not headers or (headers[0][1] if headers[0][0] == SIGNATURE_HEADER else header_signature(headers)) is None:
            unsigned += 1
    # A timestamp past any datetime is the producer's doing, not time passing.
    event_time = max(m.timestamp_ms if m.timestamp_ms < KAFKA_TIME_LIMIT_MS else 0 for m in messages)
    if event_time_cap_ms is not None:
        event_time = min(event_time, event_time_cap_ms)
    return DecodedChunk(topic, partition, messages[-1].offset + 1, mutations, rejections, event_time, unsigned)
