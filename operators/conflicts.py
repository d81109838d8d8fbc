"""The conflict rule of DESIGN section 4: one mutation against one entity state.

`decide` is pure apart from updating the `EntityState` it is given (the working
copy of the row), so a window of mutations on one entity coalesces into one
final row that equals applying them one by one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from operators.entity_state import TOMBSTONE, EntityState, Provenance
from operators.priority import adjusted_priority
from operators.strategies import CustomStrategy, resolve
from schemas.mutation import Mutation, Operation, Reason, Status
from schemas.registry import EntityType
from schemas.values import add_numeric, to_json_value


@dataclass(slots=True)
class ConflictRecord:
    """One detected conflict: which attributes, both sides, and who won."""

    conflict_id: str
    entity_type: str
    entity_id: str
    attributes: tuple[str, ...]
    mutation_id: str
    other_mutation_id: str | None
    incoming_edge_node_id: str
    other_edge_node_id: str | None
    strategy: str
    winner: str | None
    status: str
    incoming_values: dict[str, Any]
    server_values: dict[str, Any]
    result_values: dict[str, Any] | None
    base_version: int
    entity_version: int


@dataclass(slots=True)
class Decision:
    """The final status of one mutation, as it goes to the ledger and the ack."""

    mutation_id: str
    status: Status
    reason: str | None
    entity_type: str | None
    entity_id: str | None
    version: int | None
    edge_node_id: str | None
    conflicts: tuple[ConflictRecord, ...] = ()
    written: tuple[str, ...] = field(default=())
    priority: int | None = None
    """The mutation's adjusted priority (None for an item never decided against an entity)."""
    detail: str | None = None
    """Why it failed, for the ledger's `detail` (e.g. the error of a custom strategy)."""


@dataclass(slots=True)
class _Writer:
    """The other side of a delete conflict when it is not the current value's writer."""

    mutation_id: str | None
    edge_node_id: str | None = None


def conflict_id(mutation_id: str, subject: str) -> str:
    """Deterministic id, so a replay or another run finds the same conflict."""
    digest = hashlib.blake2b(f"{mutation_id}\x00{subject}".encode(), digest_size=12).hexdigest()
    return f"c_{digest}"


class _Builder:
    """Collects the outcome of one mutation while `decide` walks the rules."""

    __slots__ = ("base_version", "conflicts", "mutation", "priority", "state")

    def __init__(self, mutation: Mutation, state: EntityState, base_version: int, priority: int):
        self.mutation = mutation
        self.state = state
        self.base_version = base_version
        self.priority = priority
        self.conflicts: list[ConflictRecord] = []

    def record(
        self,
        subject: str,
        attributes: list[str],
        other: Provenance | _Writer | None,
        strategy: str,
        winner: str | None,
        result: dict[str, Any] | None,
    ) -> None:
        mutation = self.mutation
        self.conflicts.append(
            ConflictRecord(
                conflict_id=conflict_id(mutation.id, subject),
                entity_type=mutation.entity_type,
                entity_id=mutation.entity_id,
                attributes=tuple(attributes),
                mutation_id=mutation.id,
                other_mutation_id=other.mutation_id if other else None,
                incoming_edge_node_id=mutation.edge_node_id,
                other_edge_node_id=other.edge_node_id if other else None,
                strategy=strategy,
                winner=winner,
                status="OPEN" if winner is None else "AUTO_RESOLVED",
                incoming_values={a: to_json_value(mutation.attributes.get(a)) for a in attributes},
                server_values={a: to_json_value(self.state.values.get(a)) for a in attributes},
                result_values=result,
                base_version=mutation.base_version,
                entity_version=self.state.version,
            )
        )

    def finish(
        self, status: Status, reason: str | None = None, written: tuple[str, ...] = ()
    ) -> Decision:
        mutation = self.mutation
        return Decision(
            mutation.id, status, reason, mutation.entity_type, mutation.entity_id,
            self.state.version if status is Status.APPLIED else None, mutation.edge_node_id,
            tuple(self.conflicts) if self.conflicts else (), written, self.priority,
        )


def decide(
    state: EntityState,
    mutation: Mutation,
    entity_type: EntityType,
    custom: Mapping[str, CustomStrategy],
) -> Decision:
    """Decide `mutation` against `state` and apply its effect to `state` in place."""
    priority = adjusted_priority(mutation, entity_type)
    operation = mutation.operation
    if state.version == 0:  # absent (`state.absent`, without the property call)
        builder = _Builder(mutation, state, mutation.base_version, priority)
        if operation is not Operation.CREATE:
            return builder.finish(Status.REJECTED, Reason.ENTITY_NOT_FOUND)
        return _write(builder, dict(mutation.attributes), tombstone=False, priority=priority)

    base_version = 0 if operation is Operation.CREATE else mutation.base_version
    builder = _Builder(mutation, state, base_version, priority)
    if base_version > state.version:
        return builder.finish(Status.REJECTED, Reason.FUTURE_BASE_VERSION)

    revive = False
    if state.deleted:
        if operation is Operation.DELETE:
            return builder.finish(Status.APPLIED, Reason.SUPERSEDED)
        incoming_wins = entity_type.delete_rule == "update_wins"
        builder.record(
            "#delete", sorted(mutation.attributes), state.provenance_of(TOMBSTONE),
            entity_type.delete_rule, "incoming" if incoming_wins else "server", None,
        )
        if not incoming_wins:
            return builder.finish(Status.APPLIED, Reason.SUPERSEDED)
        revive = True

    if operation is Operation.DELETE:
        return _delete(builder, entity_type, priority)
    return _update(builder, entity_type, priority, custom, revive)


def _delete(builder: _Builder, entity_type: EntityType, priority: int) -> Decision:
    mutation, state = builder.mutation, builder.state
    changed = sorted(
        name
        for name, prov in state.all_provenance().items()
        if name != TOMBSTONE and prov.written_by_other_after(mutation.edge_node_id, builder.base_version)
    )
    if changed:
        _, other_id = max(state.provenance[name].latest_by_other(mutation.edge_node_id) for name in changed)
        incoming_wins = entity_type.delete_rule == "delete_wins"
        builder.record(
            "#delete", changed, _Writer(other_id), entity_type.delete_rule,
            "incoming" if incoming_wins else "server", None,
        )
        if not incoming_wins:
            return builder.finish(Status.APPLIED, Reason.SUPERSEDED)
    return _write(builder, {}, tombstone=True, priority=priority)


def _update(
    builder: _Builder,
    entity_type: EntityType,
    priority: int,
    custom: Mapping[str, CustomStrategy],
    revive: bool,
) -> Decision:
    mutation, state = builder.mutation, builder.state
    writes: dict[str, Any] = {}
    held: list[str] = []
    # A CREATE's `sum` values are initial values, also when it revives a deleted entity; only
    # a CREATE of a live entity (an UPDATE from version 0) adds them as deltas (DESIGN section 4).
    initial = revive and mutation.operation is Operation.CREATE
    for name in sorted(mutation.attributes):
        incoming = mutation.attributes[name]
        attribute = entity_type.attributes[name]
        if attribute.strategy == "sum" and not initial and name not in mutation.sets:  # a chosen value is final
            incoming_value = add_numeric(attribute.type, state.values.get(name), incoming)
        else:
            incoming_value = incoming
        prov = state.provenance_of(name)
        if prov is None or not prov.written_by_other_after(mutation.edge_node_id, builder.base_version):
            writes[name] = incoming_value
            continue
        if attribute.strategy == "manual":
            held.append(name)
            continue
        resolution = resolve(
            attribute.strategy, mutation, priority, name, incoming, state, custom, entity_type.foreign_priority
        )
        if resolution.winner == "incoming":
            writes[name] = incoming_value
        elif resolution.winner == "merged":
            writes[name] = incoming_value if attribute.strategy == "sum" else resolution.value
        result = {name: to_json_value(writes.get(name, state.values.get(name)))}
        builder.record(name, [name], prov, attribute.strategy, resolution.winner, result)
    if held:
        builder.conflicts = []  # nothing of a held mutation applies, so no auto-resolution stands
        for name in held:
            builder.record(name, [name], state.provenance[name], "manual", None, None)
        return builder.finish(Status.CONFLICT)
    return _write(builder, writes, tombstone=False if revive else None, priority=priority)


def _write(
    builder: _Builder, writes: dict[str, Any], tombstone: bool | None, priority: int
) -> Decision:
    """Apply `writes` (and the tombstone flag, when not None) as one new version."""
    mutation, state = builder.mutation, builder.state
    if not writes and tombstone is None:
        return builder.finish(Status.APPLIED, Reason.SUPERSEDED)
    version = state.version + 1
    mutation_id, edge_node_id, timestamp = mutation.id, mutation.edge_node_id, mutation.timestamp
    names = list(writes)
    if tombstone is not None:
        state.deleted = tombstone
        names.append(TOMBSTONE)
    state.values.update(writes)
    provenance, stored = state.provenance, state.stored_provenance
    first = None  # every first write of this version has the same provenance: one (immutable) object
    for name in names:
        previous = provenance.get(name)
        if previous is None and stored:
            previous = state.provenance_of(name)
        # `Provenance.succeeded_by`, inlined: this loop runs for every attribute written.
        if previous is None:
            if first is None:
                first = Provenance(version, mutation_id, edge_node_id, timestamp, priority)
            provenance[name] = first
        elif previous.edge_node_id == edge_node_id:
            provenance[name] = Provenance(
                version, mutation_id, edge_node_id, timestamp, priority,
                previous.other_version, previous.other_mutation_id,
            )
        else:
            provenance[name] = Provenance(
                version, mutation_id, edge_node_id, timestamp, priority, previous.version, previous.mutation_id
            )
    state.version = version
    return builder.finish(Status.APPLIED, None, tuple(sorted(writes)))
