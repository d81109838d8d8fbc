"""What the committer takes (items, batches) and gives back (one `Outcome` per
delivered message), and how an outcome is made from a decision or a ledger entry."""

from __future__ import annotations

from dataclasses import dataclass, field

from operators.conflicts import Decision
from operators.shard_view import Publication
from schemas.mutation import Mutation, Rejection, Status
from sinks.ledger import LedgerEntry


@dataclass(slots=True)
class Unmet:
    """A mutation the sequencer rejected before it reached its entity."""

    mutation: Mutation
    reason: str


Item = Mutation | Rejection | Unmet


@dataclass(frozen=True, slots=True)
class SharedWrite:
    """What a shard's batch transaction writes to the shared tables first (operators/shard_view.py):
    the claims of its first copies, the shard's publication, the cycle members it found."""

    firsts: tuple[tuple[str, tuple[str, int]], ...]
    publication: Publication
    cycles: frozenset[tuple[str, tuple[str, int]]] = frozenset()


@dataclass
class Batch:
    """Items in commit order, and the offsets a restart may resume from after it; for a shard of
    the input, what it writes to the shared tables. `riders`: priority-lane items that boarded
    the batch before its transaction began (sinks/commit_pipeline.py), committed after `items`
    in the same transaction."""

    items: list[Item]
    resume_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    shared: SharedWrite | None = None
    riders: list[Item] = field(default_factory=list)


@dataclass(slots=True)
class Outcome:
    """The final answer for one delivered message, as acknowledged to its edge node."""

    source: Mutation | Rejection
    kind: str  # "decided", "replayed" (same message again) or "duplicate" (id seen before)
    mutation_id: str | None
    status: str
    reason: str | None
    entity_type: str | None
    entity_id: str | None
    version: int | None
    edge_node_id: str | None
    conflict_ids: tuple[str, ...]
    batch_id: str | None
    processed_at: str
    reused: bool = False
    """A duplicate whose first copy was read in another partition: an id reused for another entity."""


def item_id(item: Item) -> str | None:
    """The mutation id an item decides, if it has one."""
    if isinstance(item, Mutation):
        return item.id
    if isinstance(item, Unmet):
        return item.mutation.id
    return item.mutation_id


def decided_ids(items: list[Item]) -> list[str]:
    """The distinct mutation ids a batch decides, sorted (the order the ledger is read in)."""
    return sorted({i for i in map(item_id, items) if i is not None})


def source_of(item: Item) -> Mutation | Rejection:
    return item.mutation if isinstance(item, Unmet) else item


def rejected_decision(item: Rejection | Unmet) -> Decision:
    """The decision for an item that never reaches its entity."""
    if isinstance(item, Rejection):
        return Decision(
            item.mutation_id or "", Status.REJECTED, item.code, item.entity_type,
            item.entity_id, None, item.edge_node_id,
        )
    m = item.mutation
    return Decision(m.id, Status.REJECTED, item.reason, m.entity_type, m.entity_id, None, m.edge_node_id)


def from_decision(source: Mutation | Rejection, decision: Decision, batch_id: str, now: str) -> Outcome:
    conflicts = decision.conflicts
    return Outcome(
        source, "decided", decision.mutation_id or None, decision.status._value_, decision.reason,
        decision.entity_type, decision.entity_id, decision.version, decision.edge_node_id,
        tuple(c.conflict_id for c in conflicts) if conflicts else (), batch_id, now,
    )


def from_ledger(source: Mutation | Rejection, entry: LedgerEntry, kind: str, now: str) -> Outcome:
    return Outcome(
        source=source,
        kind=kind,
        mutation_id=entry.mutation_id,
        status=entry.status,
        reason=entry.reason,
        entity_type=entry.entity_type,
        entity_id=entry.entity_id,
        version=entry.version,
        edge_node_id=source.edge_node_id,  # a copy is acknowledged to its own node (DESIGN section 4)
        conflict_ids=entry.conflict_ids,
        batch_id=entry.batch_id,
        processed_at=entry.decided_at.isoformat() if entry.decided_at else now,
    )


def again(source: Mutation | Rejection, first: Outcome) -> Outcome:
    """A later copy in the same batch: the first copy's decision, acknowledged to the copy's own node."""
    return Outcome(
        source, "duplicate", first.mutation_id, first.status, first.reason, first.entity_type,
        first.entity_id, first.version, source.edge_node_id, first.conflict_ids, first.batch_id,
        first.processed_at,
    )
