"""Which input topic a mutation is produced to: part of the wire format (README "Wire format",
"Priority lane").

An entity type whose registry criticality is in the lane (`MUTAGG_PRIORITY_LANE`, default
`critical`) goes to the lane topic (`MUTAGG_TOPIC_CRITICAL`, default `edge.mutations.critical`),
every other type to the standard input topic, with the same key and value. A type lives on one
topic, so an entity is always in one partition of one topic: DESIGN section 4's "per entity, in
the order of Kafka offsets" still holds, and the job may drain the lane ahead of the backlog.

Pure and without dependencies: the edge client and the job both route with it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

LANE_LEVELS = ("critical", "important")
"""The criticalities that may be in the lane (`standard` is what the lane overtakes)."""


def parse_lane(text: str | Iterable[str]) -> frozenset[str]:
    """`critical`, `critical,important` or empty (no lane) as a set; ValueError for anything else."""
    words = text.split(",") if isinstance(text, str) else list(text)
    levels = frozenset(word.strip() for word in words if word.strip())
    unknown = levels - set(LANE_LEVELS)
    if unknown:
        raise ValueError(f"priority lane {sorted(unknown)}: expected a comma-separated subset of "
                         f"{','.join(LANE_LEVELS)} (or empty: no lane)")
    return levels


@dataclass(frozen=True, slots=True)
class Routing:
    """The two input topics and which entity types go to the lane."""

    standard: str
    lane: str
    lane_types: frozenset[str]

    @classmethod
    def of(cls, standard: str, lane: str, criticality: Mapping[str, str], levels: str | Iterable[str]) -> Routing:
        """From a map entity type -> criticality (the registry's) and the lane setting."""
        chosen = parse_lane(levels)
        return cls(standard, lane, frozenset(name for name, level in criticality.items() if level in chosen))

    @property
    def enabled(self) -> bool:
        return bool(self.lane_types) and self.lane != self.standard

    def topic_for(self, entity_type: str) -> str:
        """Where a mutation of `entity_type` is produced (an unknown type: the standard topic)."""
        return self.lane if self.enabled and entity_type in self.lane_types else self.standard

    def misrouted(self, topic: str, entity_type: str | None) -> bool:
        """A message of `entity_type` read from `topic`, not the topic the routing gives it.
        It is accepted and decided in its own topic's order all the same (only counted)."""
        if entity_type is None or topic not in (self.standard, self.lane):
            return False
        return topic != self.topic_for(entity_type)
