"""Pure rules of the outbox: how an entry's state moves, which entries may be
sent now, and what an acknowledgement teaches about an entity's version.

Order. Only the oldest undelivered entry of each entity may be in flight. A
message that times out can leave a gap after which a later message of the same
partition is still written (librdkafka's gapless guarantee excludes timeouts),
so a later change of an entity must not be in flight while an earlier one can
still fail. Resends are safe: the job decides an id once and re-acknowledges
repeats, so only the first copy of each id counts, and first copies keep the
recorded order.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

from edge.errors import IllegalTransition
from edge.records import EntryState, OutboxEntry

FINAL = frozenset({EntryState.APPLIED, EntryState.CONFLICT, EntryState.REJECTED, EntryState.FAILED})
"""The job has decided; nothing the transport reports can change that."""

REMOVABLE = frozenset({EntryState.APPLIED})
"""Confirmed and needing nobody's attention: dropped from the outbox."""

UNDELIVERED = frozenset({EntryState.PENDING, EntryState.IN_FLIGHT})
"""Not yet known to be in Kafka: these block later changes of the same entity."""

ACK_STATES = {
    "APPLIED": EntryState.APPLIED,
    "CONFLICT": EntryState.CONFLICT,
    "REJECTED": EntryState.REJECTED,
    "FAILED": EntryState.FAILED,
}

RESOLUTION_MARK = ":resolution:"
"""`mutagg conflicts resolve` names its mutation `{held id}:resolution:{n}`."""


class Event(StrEnum):
    SEND = "SEND"                          # handed to the producer
    DELIVERED = "DELIVERED"                # delivery callback without error
    DELIVERY_FAILED = "DELIVERY_FAILED"    # delivery callback with an error, or purged
    RESTART = "RESTART"                    # the process stopped; in-flight deliveries are unknown
    REQUEUE = "REQUEUE"                    # no decision for too long: send again (the job dedupes)


def after_event(state: EntryState, event: Event) -> EntryState:
    """The state after a transport event; `IllegalTransition` where none exists."""
    if state in FINAL:
        # A late delivery report of something the job already decided changes nothing.
        if event in (Event.DELIVERED, Event.DELIVERY_FAILED, Event.RESTART):
            return state
        raise IllegalTransition(state, event)
    if event is Event.SEND and state is EntryState.PENDING:
        return EntryState.IN_FLIGHT
    if event is Event.DELIVERED and state in (EntryState.IN_FLIGHT, EntryState.DELIVERED):
        return EntryState.DELIVERED
    if event is Event.DELIVERY_FAILED and state is EntryState.IN_FLIGHT:
        return EntryState.PENDING
    if event is Event.DELIVERY_FAILED and state is EntryState.DELIVERED:
        return EntryState.DELIVERED  # a failed resend of something already delivered
    if event is Event.RESTART:
        return EntryState.PENDING if state is EntryState.IN_FLIGHT else state
    if event is Event.REQUEUE and state is EntryState.DELIVERED:
        return EntryState.PENDING
    raise IllegalTransition(state, event)


def after_ack(state: EntryState, status: str) -> EntryState:
    """The state after the job's acknowledgement. The first decision sticks: acks may
    repeat (always with the same decision), and an unknown status changes nothing."""
    if state in FINAL:
        return state
    return ACK_STATES.get(status, state)


def sendable(entries: Iterable[OutboxEntry]) -> list[OutboxEntry]:
    """Entries to hand to the producer now, in record order: per entity the oldest
    undelivered one, and only if it is PENDING (an IN_FLIGHT one holds its entity)."""
    blocked: set[tuple[str, str]] = set()
    chosen: list[OutboxEntry] = []
    for entry in sorted(entries, key=lambda e: e.seq):
        if entry.state not in UNDELIVERED or entry.entity_key in blocked:
            continue
        blocked.add(entry.entity_key)
        if entry.state is EntryState.PENDING:
            chosen.append(entry)
    return chosen


def known_version(current: int | None, acknowledged: int | None) -> int | None:
    """Versions only grow: keep the larger. Acks can arrive out of order across
    partitions and repeat, so an older version must never overwrite a newer one."""
    if acknowledged is None:
        return current
    if current is None:
        return acknowledged
    return max(current, acknowledged)


def resolved_mutation_id(mutation_id: str) -> str | None:
    """The held mutation a resolution closes, or None for an ordinary mutation."""
    held, mark, attempt = mutation_id.rpartition(RESOLUTION_MARK)
    return held if mark and held and attempt.isdigit() else None


def requeue_wait(requeues: int, after_s: float, max_wait_s: float) -> float:
    """How long a DELIVERED entry waits for its decision before it is sent again: `after_s`,
    doubled for each time it was already sent again, capped at `max_wait_s` (never below
    `after_s`). A job that is down for a day then gets a few copies of an entry, not one per poll."""
    return max(after_s, min(max_wait_s, after_s * 2.0 ** min(requeues, 60)))
