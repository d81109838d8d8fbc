"""Adjusted priority (DESIGN section 4), reproducible on replay."""

from __future__ import annotations

from schemas.mutation import Mutation, Operation
from schemas.registry import EntityType

_OPERATION_BONUS = {Operation.DELETE: 2, Operation.CREATE: 1, Operation.UPDATE: 0}
_MINUTE_MS = 60_000


def adjusted_priority(mutation: Mutation, entity_type: EntityType) -> int:
    """Base priority plus criticality, operation and age bonuses.

    Age runs from the edge timestamp to the Kafka message timestamp, never to
    "now", so a replay of the same log computes the same number.
    """
    edge_ms = int(mutation.timestamp.timestamp() * 1000)
    age_ms = mutation.kafka_timestamp_ms - edge_ms
    age_bonus = 2 if age_ms > 60 * _MINUTE_MS else 1 if age_ms > 15 * _MINUTE_MS else 0
    return (
        mutation.priority
        + entity_type.criticality_bonus
        + _OPERATION_BONUS[mutation.operation]
        + age_bonus
    )
