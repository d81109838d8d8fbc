"""The mutation record and its decoder: bytes from Kafka in, a typed record or a
precise rejection out (DESIGN section 2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import Enum
from operator import itemgetter
from typing import Any

import orjson

from schemas.registry import Registry
from schemas.signature import SIGNATURE_HEADER, Verifier
from schemas.values import COERCERS, CoercionError, parse_rfc3339


class Operation(str, Enum):
    CREATE = "CREATE"
    UPDATE = "UPDATE"
    DELETE = "DELETE"


class Status(str, Enum):
    APPLIED = "APPLIED"
    CONFLICT = "CONFLICT"
    REJECTED = "REJECTED"
    DUPLICATE = "DUPLICATE"
    FAILED = "FAILED"


class Reason:
    """Reason codes; stable strings that analysts and edge nodes match on."""

    MESSAGE_TOO_LARGE = "MESSAGE_TOO_LARGE"
    INVALID_ENCODING = "INVALID_ENCODING"
    INVALID_JSON = "INVALID_JSON"
    NOT_AN_OBJECT = "NOT_AN_OBJECT"
    MISSING_FIELD = "MISSING_FIELD"
    UNKNOWN_FIELD = "UNKNOWN_FIELD"
    INVALID_FIELD = "INVALID_FIELD"
    UNKNOWN_ENTITY_TYPE = "UNKNOWN_ENTITY_TYPE"
    UNKNOWN_ATTRIBUTE = "UNKNOWN_ATTRIBUTE"
    INVALID_ATTRIBUTE_VALUE = "INVALID_ATTRIBUTE_VALUE"
    KEY_MISMATCH = "KEY_MISMATCH"
    TIMESTAMP_OUT_OF_RANGE = "TIMESTAMP_OUT_OF_RANGE"
    UNAUTHENTICATED = "UNAUTHENTICATED"
    """The message names an edge node, and its `mutagg-sig` is missing or wrong (DESIGN section 2)."""
    FUTURE_BASE_VERSION = "FUTURE_BASE_VERSION"
    ENTITY_NOT_FOUND = "ENTITY_NOT_FOUND"
    MISSING_DEPENDENCY = "MISSING_DEPENDENCY"
    DEPENDENCY_CYCLE = "DEPENDENCY_CYCLE"
    SUPERSEDED = "SUPERSEDED"
    DATABASE_ERROR = "DATABASE_ERROR"
    STRATEGY_ERROR = "STRATEGY_ERROR"


FIELDS = (
    "id", "edge_node_id", "entity_type", "entity_id", "operation_type", "attributes",
    "base_version", "timestamp", "priority", "dependencies",
)
OPTIONAL_FIELDS = ("tenant_id",)
MAX_DEPENDENCIES = 1000
RESOLVES_HEADER = "mutagg-resolves"
SETS_HEADER = "mutagg-sets"
"""Set by `mutagg conflicts resolve --set`: the attributes whose values are chosen final values."""
REPLAY_HEADER = "mutagg-replay-of"
"""Set by `mutagg dlq replay`: the DLQ coordinates this message was re-submitted from."""

VALIDATION_REASONS = frozenset({
    "MESSAGE_TOO_LARGE", "INVALID_ENCODING", "INVALID_JSON", "NOT_AN_OBJECT", "MISSING_FIELD", "UNKNOWN_FIELD",
    "INVALID_FIELD", "UNKNOWN_ENTITY_TYPE", "UNKNOWN_ATTRIBUTE", "INVALID_ATTRIBUTE_VALUE", "KEY_MISMATCH",
    "TIMESTAMP_OUT_OF_RANGE",
})
"""Rejections of the message itself: a DLQ replay after a registry change may decide these anew."""


KAFKA_TIME_LIMIT_MS = 253_402_300_800_000
"""10000-01-01T00:00:00Z: Python's datetime (and so the ledger read back) ends before it."""


def is_dlq_replay(raw: RawMessage) -> bool:
    return any(name == REPLAY_HEADER for name, _ in raw.headers)


@dataclass(slots=True)
class RawMessage:
    """One Kafka record as read, kept byte-for-byte for the DLQ."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    headers: tuple[tuple[str, bytes], ...] = ()


@dataclass(slots=True)
class Mutation:
    """A validated mutation with attribute values coerced to their declared types."""

    id: str
    edge_node_id: str
    entity_type: str
    entity_id: str
    operation: Operation
    attributes: dict[str, Any]
    base_version: int
    timestamp: datetime
    priority: int
    dependencies: tuple[str, ...]
    tenant_id: str | None
    topic: str
    partition: int
    offset: int
    kafka_timestamp_ms: int
    resolves: tuple[str, ...] = field(default=())
    """Conflict ids this mutation closes (set by `mutagg conflicts resolve`)."""
    replayed: bool = False
    """Re-submitted from the DLQ: an earlier validation rejection of its id may be revised."""
    sets: tuple[str, ...] = ()
    """Attributes whose value is the value they end with, also for `sum` (not a delta): the chosen
    values of a resolution (DESIGN section 4, `manual`). Read only on a message that resolves conflicts."""

    def __setstate__(self, state: tuple[None, dict[str, Any]]) -> None:
        """Unpickle (a recovery snapshot); one taken before a defaulted field existed gets its default."""
        self.sets = ()
        for name, value in state[1].items():
            setattr(self, name, value)

    @property
    def entity_key(self) -> tuple[str, str]:
        return (self.entity_type, self.entity_id)


@dataclass(slots=True)
class Rejection:
    """A message that could not be accepted, with whatever identity was readable."""

    code: str
    message: str
    raw: RawMessage
    mutation_id: str | None = None
    edge_node_id: str | None = None
    entity_type: str | None = None
    entity_id: str | None = None


_OPERATIONS = {operation.value: operation for operation in Operation}
_CREATE, _UPDATE, _DELETE = Operation.CREATE, Operation.UPDATE, Operation.DELETE  # ~100 ns less per use
_FIELD_VALUES = itemgetter(*FIELDS)
"""All required fields in one lookup: with the document's length, it shows that no field is missing or unknown."""


class _Invalid(Exception):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _string(value: Any, name: str, max_len: int) -> str:
    if not isinstance(value, str) or not 1 <= len(value) <= max_len or "\x00" in value:
        raise _Invalid(Reason.INVALID_FIELD, f"{name} must be a string of 1..{max_len} characters (no NUL)")
    return value


def _integer(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise _Invalid(Reason.INVALID_FIELD, f"{name} must be an integer in {low}..{high}")
    return value


def _readable(document: Any, name: str, max_len: int) -> str | None:
    if isinstance(document, dict):
        value = document.get(name)
        if isinstance(value, str) and 1 <= len(value) <= max_len and "\x00" not in value:
            return value
    return None


def decode(
    raw: RawMessage, registry: Registry, max_bytes: int = 1 << 20, verifier: Verifier | None = None,
) -> Mutation | Rejection:
    """Turn one Kafka record into a `Mutation`, or a `Rejection` saying exactly why not.

    With a `verifier` (a master key is configured) the signature is checked first: a message
    that names an edge node (`claimed_node`) and is not signed by it is `UNAUTHENTICATED`,
    whatever else is wrong with it, and its rejection carries no identity at all (no id, node
    or entity): it writes no ledger row and no ack, takes no id and satisfies no dependency."""
    document: Any = None
    value = raw.value
    try:
        if value is None:
            raise _Invalid(Reason.NOT_AN_OBJECT, "message has no value")
        if len(value) > max_bytes:
            if verifier is not None:  # too large, but it may still claim a node it is not
                forged = _unauthenticated(raw, verifier, _parsed_or_none(value))
                if forged is not None:
                    return forged
            raise _Invalid(Reason.MESSAGE_TOO_LARGE, f"{len(value)} bytes > limit {max_bytes}")
        try:
            if type(value) is not bytes or not value.isascii():  # ASCII bytes are UTF-8 without decoding
                value.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise _Invalid(Reason.INVALID_ENCODING, f"value is not UTF-8: {exc.reason}") from None
        try:
            document = orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            raise _Invalid(Reason.INVALID_JSON, str(exc)[:200]) from None
        if verifier is not None:
            forged = _unauthenticated(raw, verifier, document)
            if forged is not None:
                return forged
        if raw.timestamp_ms >= KAFKA_TIME_LIMIT_MS:  # a producer may set any CreateTime
            raise _Invalid(Reason.TIMESTAMP_OUT_OF_RANGE, f"Kafka timestamp {raw.timestamp_ms} is after year 9999")
        return _validate(document, raw, registry)
    except _Invalid as invalid:
        return Rejection(
            code=invalid.code,
            message=invalid.message.replace("\x00", "\\x00"),
            raw=raw,
            mutation_id=_readable(document, "id", 128),
            edge_node_id=_readable(document, "edge_node_id", 128),
            entity_type=_readable(document, "entity_type", 256),
            entity_id=_readable(document, "entity_id", 256),
        )


def claimed_node(document: Any) -> str | None:
    """The edge node a decoded value names: its `edge_node_id`, if the value is a JSON object
    and that field a non-empty string (any length: the signature is checked before the field's
    rules). None: the message names no node, and is judged by its own validation reason."""
    if type(document) is dict:
        node = document.get("edge_node_id")
        if type(node) is str and node:
            return node
    return None


def _parsed_or_none(value: bytes) -> Any:
    try:
        return orjson.loads(value)  # orjson rejects invalid UTF-8 itself
    except orjson.JSONDecodeError:
        return None


def _unauthenticated(raw: RawMessage, verifier: Verifier, document: Any) -> Rejection | None:
    node = claimed_node(document)
    if node is None:
        return None
    problem = verifier.problem(node, raw.value, raw.headers)
    if problem is None:
        return None
    return Rejection(Reason.UNAUTHENTICATED, problem.replace("\x00", "\\x00"), raw)


def _check_fields(document: dict) -> None:
    missing = [name for name in FIELDS if name not in document]
    if missing:
        raise _Invalid(Reason.MISSING_FIELD, f"missing fields {missing}")
    unknown = sorted(set(document) - set(FIELDS) - set(OPTIONAL_FIELDS))
    if unknown:
        raise _Invalid(Reason.UNKNOWN_FIELD, f"unknown fields {unknown[:10]}")


def _validate(document: Any, raw: RawMessage, registry: Registry) -> Mutation:
    if not isinstance(document, dict):
        raise _Invalid(Reason.NOT_AN_OBJECT, "a mutation must be a JSON object")
    try:
        fields = _FIELD_VALUES(document)
    except KeyError:
        fields = None
    if fields is None or len(document) != len(FIELDS) + (OPTIONAL_FIELDS[0] in document):
        _check_fields(document)  # some field is missing, or one is unknown: say which
    (mutation_id, edge_node_id, type_name, entity_id, operation_type, raw_attributes, base_version, timestamp_text,
     priority, dependencies) = fields
    mutation_id = _string(mutation_id, "id", 128)
    edge_node_id = _string(edge_node_id, "edge_node_id", 128)
    entity_id = _string(entity_id, "entity_id", 256)
    if not isinstance(type_name, str):
        raise _Invalid(Reason.INVALID_FIELD, "entity_type must be a string")
    entity_type = registry.get(type_name)
    if entity_type is None:
        raise _Invalid(Reason.UNKNOWN_ENTITY_TYPE, f"entity type {type_name[:64]!r} is not declared")
    operation = _OPERATIONS.get(operation_type) if isinstance(operation_type, str) else None
    if operation is None:
        raise _Invalid(Reason.INVALID_FIELD, "operation_type must be CREATE, UPDATE or DELETE")
    base_version = _integer(base_version, "base_version", 0, 2**62)
    priority = _integer(priority, "priority", 1, 10)
    try:
        timestamp = parse_rfc3339(timestamp_text)
    except CoercionError as exc:
        raise _Invalid(Reason.INVALID_FIELD, f"timestamp: {exc}") from None
    _check_time_range(timestamp, raw.timestamp_ms)
    timestamp = _no_later_than_kafka(timestamp, raw.timestamp_ms)
    tenant_id = document.get("tenant_id")
    if tenant_id is not None and (not isinstance(tenant_id, str) or "\x00" in tenant_id or len(tenant_id) > 256):
        raise _Invalid(Reason.INVALID_FIELD, "tenant_id must be a string")
    if not isinstance(dependencies, list) or len(dependencies) > MAX_DEPENDENCIES:
        raise _Invalid(Reason.INVALID_FIELD, f"dependencies must be a list of at most {MAX_DEPENDENCIES} ids")
    for dependency in dependencies:
        if not isinstance(dependency, str) or not 1 <= len(dependency) <= 128 or "\x00" in dependency:
            raise _Invalid(Reason.INVALID_FIELD, "dependencies must be mutation ids (strings of 1..128)")
    if mutation_id in dependencies:
        raise _Invalid(Reason.DEPENDENCY_CYCLE, "a mutation cannot depend on itself")
    if not isinstance(raw_attributes, dict):
        raise _Invalid(Reason.INVALID_FIELD, "attributes must be an object")
    if operation is _DELETE and raw_attributes:
        raise _Invalid(Reason.INVALID_FIELD, "attributes must be empty for DELETE")
    attributes: dict[str, Any] = {}
    declared = entity_type.attributes
    for name, value in raw_attributes.items():
        attribute = declared.get(name)
        if attribute is None:
            raise _Invalid(Reason.UNKNOWN_ATTRIBUTE, f"{type_name}.{name[:64]} is not declared")
        try:
            # The registry admits exactly the types in COERCERS.
            coerced = None if value is None else COERCERS[attribute.type](value)
        except CoercionError as exc:
            raise _Invalid(Reason.INVALID_ATTRIBUTE_VALUE, f"{name}: {exc}") from None
        if coerced is None and attribute.strategy == "sum" and operation is _UPDATE:
            raise _Invalid(Reason.INVALID_ATTRIBUTE_VALUE, f"{name}: a sum delta cannot be null")
        attributes[name] = coerced
    if raw.key is not None and raw.key != f"{type_name}:{entity_id}".encode():
        raise _Invalid(Reason.KEY_MISMATCH, "message key does not match entity_type:entity_id")
    headers = raw.headers
    # Then nothing to scan for: no header, or only the signature an edge node's message carries.
    no_headers = headers == () or (len(headers) == 1 and headers[0][0] == SIGNATURE_HEADER)
    # In field order, positionally: binding 17 keywords costs more than the rest of the construction.
    return Mutation(
        mutation_id, edge_node_id, type_name, entity_id, operation, attributes, base_version, timestamp, priority,
        tuple(dict.fromkeys(dependencies)) if dependencies else (),
        tenant_id, raw.topic, raw.partition, raw.offset, raw.timestamp_ms,
        () if no_headers else _resolves(raw),
        False if no_headers else is_dlq_replay(raw),
        () if no_headers else _sets(raw),
    )


_EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
MAX_FUTURE_SKEW = timedelta(days=366)
_SKEW_DAYS = MAX_FUTURE_SKEW.days
_DAY_MS = 86_400_000
_YEAR_2100_MS = 4_102_444_800_000
"""Below this, `datetime.fromtimestamp` of a Kafka timestamp cannot fail, and is off by far less than a day."""


def _check_time_range(timestamp: datetime, kafka_timestamp_ms: int) -> None:
    """An edge clock may be off, and a van offline for weeks; a year ahead of the broker is not a clock."""
    if timestamp < _EARLIEST:
        raise _Invalid(Reason.TIMESTAMP_OUT_OF_RANGE, "timestamp is before 1970")
    if kafka_timestamp_ms > 0:
        # Whole days are cheap to compare and settle all but the day before the limit; the exact check is not.
        days_since_epoch = (timestamp - _EARLIEST).days
        if kafka_timestamp_ms < _YEAR_2100_MS and days_since_epoch < kafka_timestamp_ms // _DAY_MS + _SKEW_DAYS - 1:
            return
        broker_time = datetime.fromtimestamp(kafka_timestamp_ms / 1000, tz=UTC)
        if timestamp - broker_time > MAX_FUTURE_SKEW:
            raise _Invalid(Reason.TIMESTAMP_OUT_OF_RANGE, "timestamp is more than a year after the Kafka timestamp")


def _no_later_than_kafka(timestamp: datetime, kafka_timestamp_ms: int) -> datetime:
    """An edge timestamp later than its Kafka timestamp counts as the Kafka timestamp (DESIGN
    section 4, "Time"): a node with its clock ahead must not win every comparison."""
    # The float test settles every timestamp more than a millisecond early; the exact one the rest.
    if kafka_timestamp_ms > 0 and timestamp.timestamp() * 1000.0 > kafka_timestamp_ms - 1:
        broker_time = _EARLIEST + timedelta(milliseconds=kafka_timestamp_ms)
        if timestamp > broker_time:
            return broker_time
    return timestamp


def _resolves(raw: RawMessage) -> tuple[str, ...]:
    return _header_list(raw, RESOLVES_HEADER)


def _sets(raw: RawMessage) -> tuple[str, ...]:
    """Chosen values count only on a resolution: an edge node's own message always sends deltas."""
    return _header_list(raw, SETS_HEADER) if _resolves(raw) else ()


def _header_list(raw: RawMessage, header: str) -> tuple[str, ...]:
    for name, value in raw.headers:
        if name == header and value:
            try:
                return tuple(part for part in value.decode("utf-8").split(",") if part)
            except UnicodeDecodeError:
                raise _Invalid(Reason.INVALID_FIELD, f"header {name} is not UTF-8") from None
    return ()
