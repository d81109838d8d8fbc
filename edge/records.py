"""Typed records of the edge client: the mutation as the edge makes it, the
outbox entry that carries it until the central job has decided it, and the
acknowledgement that says what was decided (DESIGN section 2)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

import orjson

from edge.errors import InvalidAck, InvalidMutation


class Operation(StrEnum):
    CREATE = "CREATE"
    UPDATE = "UPDATE"
    DELETE = "DELETE"


class EntryState(StrEnum):
    """Where one outbox entry is on its way to a final status."""

    PENDING = "PENDING"        # recorded; (re)send when the network allows
    IN_FLIGHT = "IN_FLIGHT"    # handed to the producer; delivery not yet known
    DELIVERED = "DELIVERED"    # the broker has it (acks=all); awaiting the job's decision
    APPLIED = "APPLIED"        # the job applied it (removed from the outbox once recorded)
    CONFLICT = "CONFLICT"      # held for a person; kept until its resolution is acknowledged
    REJECTED = "REJECTED"      # invalid for the job; kept for the user to see and dismiss
    FAILED = "FAILED"          # quarantined after a database error; kept for the user to see


@dataclass(frozen=True, slots=True)
class EdgeMutation:
    """One local change, exactly the wire format's fields."""

    id: str
    edge_node_id: str
    entity_type: str
    entity_id: str
    operation: Operation
    attributes: Mapping[str, Any]
    base_version: int
    timestamp: datetime
    priority: int = 5
    dependencies: tuple[str, ...] = ()
    tenant_id: str | None = None

    @property
    def entity_key(self) -> tuple[str, str]:
        return (self.entity_type, self.entity_id)

    @property
    def kafka_key(self) -> bytes:
        """`{entity_type}:{entity_id}`: one entity always lands in one partition."""
        return f"{self.entity_type}:{self.entity_id}".encode()

    def document(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "id": self.id,
            "edge_node_id": self.edge_node_id,
            "entity_type": self.entity_type,
            "entity_id": self.entity_id,
            "operation_type": self.operation.value,
            "attributes": dict(self.attributes),
            "base_version": self.base_version,
            "timestamp": self.timestamp.isoformat(),
            "priority": self.priority,
            "dependencies": list(self.dependencies),
        }
        if self.tenant_id is not None:
            document["tenant_id"] = self.tenant_id
        return document


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def encode(mutation: EdgeMutation, max_bytes: int = 1 << 20) -> bytes:
    """The wire bytes of `mutation`, or `InvalidMutation` for anything the job would
    reject on form alone (types against the registry are the job's to judge)."""

    def invalid(message: str) -> InvalidMutation:
        return InvalidMutation("INVALID_FIELD", message, mutation.id if isinstance(mutation.id, str) else None)

    for name, limit in (("id", 128), ("edge_node_id", 128), ("entity_id", 256), ("entity_type", 256)):
        value = getattr(mutation, name)
        if not isinstance(value, str) or not 1 <= len(value) <= limit:
            raise invalid(f"{name} must be a string of 1..{limit} characters")
    if not isinstance(mutation.operation, Operation):
        raise invalid("operation must be an Operation")
    if isinstance(mutation.base_version, bool) or not isinstance(mutation.base_version, int) \
            or mutation.base_version < 0:
        raise invalid("base_version must be an integer >= 0")
    if mutation.operation is Operation.DELETE and mutation.attributes:
        raise invalid("attributes must be empty for DELETE")
    if isinstance(mutation.priority, bool) or not isinstance(mutation.priority, int) \
            or not 1 <= mutation.priority <= 10:
        raise invalid("priority must be an integer in 1..10")
    if mutation.timestamp.tzinfo is None or mutation.timestamp.utcoffset() is None:
        raise invalid("timestamp must carry a UTC offset")
    if mutation.id in mutation.dependencies:
        raise invalid("a mutation cannot depend on itself")
    if any(not isinstance(d, str) or not 1 <= len(d) <= 128 for d in mutation.dependencies):
        raise invalid("dependencies must be mutation ids (strings of 1..128)")
    try:
        payload = orjson.dumps(mutation.document(), default=_json_default)
    except TypeError as exc:
        raise invalid(f"attributes are not JSON: {exc}") from None
    if len(payload) > max_bytes:
        raise InvalidMutation("MESSAGE_TOO_LARGE", f"{len(payload)} bytes > limit {max_bytes}", mutation.id)
    return payload


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    """One recorded mutation and what is known of its fate."""

    seq: int
    mutation_id: str
    entity_type: str
    entity_id: str
    payload: bytes
    state: EntryState
    attempts: int = 0
    partition: int | None = None
    offset: int | None = None
    reason: str | None = None
    entity_version: int | None = None
    conflict_ids: tuple[str, ...] = field(default=())

    @property
    def entity_key(self) -> tuple[str, str]:
        return (self.entity_type, self.entity_id)

    @property
    def kafka_key(self) -> bytes:
        return f"{self.entity_type}:{self.entity_id}".encode()


@dataclass(frozen=True, slots=True)
class Ack:
    """The job's decision on one mutation, as sent on the status topic."""

    mutation_id: str
    status: str
    entity_type: str | None
    entity_id: str | None
    entity_version: int | None
    reason: str | None
    conflict_ids: tuple[str, ...] = ()
    batch_id: str | None = None
    processed_at: str | None = None


def parse_ack(value: bytes | None) -> Ack:
    """Decode one status-topic value; `InvalidAck` if it is not one."""
    try:
        document = orjson.loads(value or b"")
    except orjson.JSONDecodeError as exc:
        raise InvalidAck(f"not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidAck("an ack must be a JSON object")
    mutation_id, status = document.get("mutation_id"), document.get("status")
    if not isinstance(mutation_id, str) or not isinstance(status, str):
        raise InvalidAck("an ack needs string mutation_id and status")
    version = document.get("entity_version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
        raise InvalidAck(f"entity_version must be an integer, not {version!r}")
    conflict_ids = document.get("conflict_ids") or []
    return Ack(
        mutation_id=mutation_id,
        status=status,
        entity_type=_optional_str(document.get("entity_type")),
        entity_id=_optional_str(document.get("entity_id")),
        entity_version=version,
        reason=_optional_str(document.get("reason")),
        conflict_ids=tuple(str(c) for c in conflict_ids) if isinstance(conflict_ids, list) else (),
        batch_id=_optional_str(document.get("batch_id")),
        processed_at=_optional_str(document.get("processed_at")),
    )


def _optional_str(value: Any) -> str | None:
    return None if value is None else str(value)
