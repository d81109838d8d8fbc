"""The state of one entity as the conflict engine sees it: version, values,
tombstone and per-attribute provenance."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any


@dataclass(slots=True)
class Provenance:
    """Who wrote an attribute's current value, and when another writer last did.

    `edge_node_id` is None for a writer outside this job (a foreign writer).
    `other_version` is the latest version at which a writer *different from*
    `edge_node_id` wrote the attribute (0 if none): together the two answer
    "did anyone but node N write this after version b?" exactly.
    Never changed in place (a write replaces it), so attributes may share one.
    """

    version: int
    mutation_id: str | None
    edge_node_id: str | None
    timestamp: datetime | None
    priority: int | None
    other_version: int = 0
    other_mutation_id: str | None = None
    stored: list[Any] | None = field(default=None, compare=False, repr=False)
    """The entry as read from the row, written back as is when the attribute is untouched."""

    def written_by_other_after(self, edge_node_id: str, base_version: int) -> bool:
        if self.edge_node_id != edge_node_id:
            return self.version > base_version
        return self.other_version > base_version

    def succeeded_by(
        self, version: int, mutation_id: str, edge_node_id: str, timestamp: datetime, priority: int
    ) -> Provenance:
        if self.edge_node_id == edge_node_id:
            other = (self.other_version, self.other_mutation_id)
        else:
            other = (self.version, self.mutation_id)
        return Provenance(version, mutation_id, edge_node_id, timestamp, priority, *other)

    def latest_by_other(self, edge_node_id: str) -> tuple[int, str | None]:
        """(version, mutation id) of the latest write by a writer other than `edge_node_id`."""
        if self.edge_node_id != edge_node_id:
            return (self.version, self.mutation_id)
        return (self.other_version, self.other_mutation_id)

    def to_json(self) -> list[Any]:
        """Compact form stored in the row: [version, mutation, node, time, priority, other version, other mutation]."""
        if self.stored is not None:
            return self.stored
        return [
            self.version, self.mutation_id, self.edge_node_id,
            self.timestamp.isoformat() if self.timestamp else None,
            self.priority, self.other_version, self.other_mutation_id,
        ]

    def entry(self) -> list[Any]:
        """`to_json` with the timestamp left a datetime, for orjson to render: it writes an
        aware datetime exactly as `isoformat` does, at a fraction of the cost."""
        if self.stored is not None:
            return self.stored
        return [
            self.version, self.mutation_id, self.edge_node_id, self.timestamp,
            self.priority, self.other_version, self.other_mutation_id,
        ]

    @staticmethod
    def from_json(entry: list[Any]) -> Provenance:
        version, mutation_id, edge_node_id, stamp, priority, other_version, other_mutation_id = entry
        return Provenance(
            version, mutation_id, edge_node_id, datetime.fromisoformat(stamp) if stamp else None,
            priority, other_version or 0, other_mutation_id, entry,
        )


def first_write(
    version: int, mutation_id: str, edge_node_id: str, timestamp: datetime, priority: int
) -> Provenance:
    return Provenance(version, mutation_id, edge_node_id, timestamp, priority, 0, None)


TOMBSTONE = "#deleted"
"""Provenance key of the `deleted` flag (not a valid attribute name)."""


@dataclass(slots=True)
class EntityState:
    """Mutable working copy of one entity row; version 0 means absent.

    A row read from the database keeps its provenance as read in `stored_provenance`;
    an entry is parsed into `provenance` only when a mutation needs it (most rows in a
    batch are touched on one or two attributes), so read `provenance_of` /
    `all_provenance`, not `provenance`, for a loaded row.
    """

    version: int = 0
    deleted: bool = False
    values: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Provenance] = field(default_factory=dict)
    stored_provenance: dict[str, Any] | None = None

    @property
    def absent(self) -> bool:
        return self.version == 0

    def copy(self) -> EntityState:
        return replace(self, values=dict(self.values), provenance=dict(self.provenance))

    def provenance_of(self, name: str) -> Provenance | None:
        """The provenance of attribute (or `TOMBSTONE`) `name`; None if it was never written."""
        found = self.provenance.get(name)
        if found is None and self.stored_provenance:
            entry = self.stored_provenance.get(name)
            if isinstance(entry, list):  # anything else in the column is not ours: ignored, as always
                found = self.provenance[name] = Provenance.from_json(entry)
        return found

    def all_provenance(self) -> dict[str, Provenance]:
        """Every provenance entry, parsed."""
        if self.stored_provenance:
            for name in self.stored_provenance:
                self.provenance_of(name)
        return self.provenance

    def provenance_json(self) -> dict[str, Any]:
        """The provenance column's value, for orjson: entries as read, with the parsed (and
        new) ones in their place (see `Provenance.entry`)."""
        stored = self.stored_provenance
        entries = {name: entry for name, entry in stored.items() if isinstance(entry, list)} if stored else {}
        for name, prov in self.provenance.items():
            entries[name] = prov.entry()
        return entries
