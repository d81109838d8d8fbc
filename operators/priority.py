"""Adjusted priority (DESIGN section 4), reproducible on replay."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas.mutation import Mutation, Operation
from schemas.registry import EntityType

_OPERATION_BONUS = {Operation.DELETE.value: 2, Operation.CREATE.value: 1, Operation.UPDATE.value: 0}
"""By the operation's value: an Enum member's hash is a Python call, its `_value_` a plain string."""
_MINUTE_US = 60_000_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def adjusted_priority(mutation: Mutation, entity_type: EntityType) -> int:
    """Base priority plus criticality, operation and age bonuses.

    Age runs from the edge timestamp to the Kafka message timestamp, never to
    "now", so a replay of the same log computes the same number.
    """
    edge_us = (mutation.timestamp - _EPOCH) // _MICROSECOND
    age_us = mutation.kafka_timestamp_ms * 1000 - edge_us  # exact integers: no float rounding at the edges
    age_bonus = 2 if age_us > 60 * _MINUTE_US else 1 if age_us > 15 * _MINUTE_US else 0
    return (
        mutation.priority
        + entity_type.criticality_bonus
        + _OPERATION_BONUS[mutation.operation._value_]
        + age_bonus
    )
