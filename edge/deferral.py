"""Which outbox entries a send round takes (pure rules, no I/O), and which it defers while
the central job is overloaded (edge/central.py).

Always (whatever the job's state):
- per entity, only the oldest undelivered entry, and only if it is PENDING
  (`transitions.sendable`): a change never overtakes an earlier one of its entity;
- an entry whose dependency is an undelivered entry of this outbox recorded before it goes
  only in a round that sends that dependency ahead of it, or after the dependency is
  delivered. (A dependency recorded after its dependent is not waited for: such a pair may
  be a cycle, which the job rejects, and waiting would hold both forever.)

While deferring (the job is overloaded), a round takes only entries that must go now:
- *urgent* ones: of an entity type whose criticality is in `send_first` (or a type the map
  does not know: what cannot be classified is not held back), or deferred for `defer_max_s`;
- and everything an urgent one needs first: the earlier undelivered entries of its entity
  and its earlier undelivered dependencies, recursively (a critical change that depends on
  a standard one takes that one along instead of waiting behind it).
Every other entry stays PENDING in the outbox (nothing is dropped) and goes when the job is
no longer overloaded, or `defer_max_s` after it was first deferred, whichever comes first.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson

from edge import transitions
from edge.records import OutboxEntry

DEFAULT_SEND_FIRST = frozenset({"critical"})


@dataclass(frozen=True, slots=True)
class SendPolicy:
    """`criticality`: entity type -> critical | important | standard (the registry's, README
    "Edge nodes: when the centre is behind"); empty: nothing is ever deferred."""

    criticality: Mapping[str, str]
    send_first: frozenset[str] = DEFAULT_SEND_FIRST
    defer_max_s: float = 300.0

    def __post_init__(self) -> None:
        if self.defer_max_s < 0:
            raise ValueError("defer_max_s must be >= 0")

    def sends_first(self, entity_type: str) -> bool:
        level = self.criticality.get(entity_type)
        return level is None or level in self.send_first


@dataclass(frozen=True, slots=True)
class RoundPlan:
    chosen: list[OutboxEntry]      # to send now, in this order
    deferred: frozenset[int]       # seqs held back because the job is overloaded


def next_deferred_since(
    deferred_since: Mapping[int, float], plan: RoundPlan, undelivered: Sequence[OutboxEntry], now: float
) -> dict[int, float]:
    """The deferral clocks after a round: a clock starts at an entry's first deferral and runs
    until it is delivered (so `defer_max_s` bounds the wait however the state flaps)."""
    present = {entry.seq for entry in undelivered}
    kept = {seq: since for seq, since in deferred_since.items() if seq in present}
    return {**{seq: now for seq in plan.deferred}, **kept}


def dependencies_of(entry: OutboxEntry) -> tuple[str, ...]:
    """The mutation ids the recorded change depends on (read from its payload)."""
    return tuple(orjson.loads(entry.payload).get("dependencies") or ())


def plan_round(
    undelivered: Sequence[OutboxEntry],
    policy: SendPolicy,
    defer: bool,
    deferred_since: Mapping[int, float],
    now: float,
    limit: int,
) -> RoundPlan:
    """The entries of one round from the outbox's PENDING and IN_FLIGHT entries (see the module
    docstring). `deferred_since`: seq -> when it was first deferred (the caller keeps it)."""
    entries = sorted(undelivered, key=lambda e: e.seq)
    by_id = {e.mutation_id: e for e in entries}
    depends = {e.seq: [by_id[d] for d in dependencies_of(e) if d in by_id and by_id[d].seq < e.seq] for e in entries}
    candidates = transitions.sendable(entries)
    deferred: set[int] = set()
    if defer and policy.criticality:
        allowed = _needed_now(entries, depends, policy, deferred_since, now)
        deferred = {e.seq for e in entries if e.seq not in allowed}
        candidates = [e for e in candidates if e.seq in allowed]
    chosen: list[OutboxEntry] = []
    taken: set[int] = set()
    for entry in candidates:  # record order: a dependency recorded first is ahead of its dependent
        if all(d.seq in taken for d in depends[entry.seq]):
            chosen.append(entry)
            taken.add(entry.seq)
            if len(chosen) >= limit:
                break
    return RoundPlan(chosen, frozenset(deferred))


def _needed_now(
    entries: list[OutboxEntry], depends: Mapping[int, list[OutboxEntry]], policy: SendPolicy,
    deferred_since: Mapping[int, float], now: float,
) -> set[int]:
    """Seqs of the urgent entries and of everything they need first (strictly earlier seqs)."""
    earlier_of_entity: dict[int, OutboxEntry | None] = {}
    last: dict[tuple[str, str], OutboxEntry] = {}
    for entry in entries:
        earlier_of_entity[entry.seq] = last.get(entry.entity_key)
        last[entry.entity_key] = entry
    stack = [e for e in entries if policy.sends_first(e.entity_type)
             or now - deferred_since.get(e.seq, now) >= policy.defer_max_s]
    needed: set[int] = set()
    while stack:
        entry = stack.pop()
        if entry.seq in needed:
            continue
        needed.add(entry.seq)
        previous = earlier_of_entity[entry.seq]
        if previous is not None:
            stack.append(previous)
        stack.extend(depends[entry.seq])
    return needed
