from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mutagg.settings import DEFAULT_REGISTRY
from operators.conflicts import Decision
from schemas.ddl import LEDGER_COLUMNS
from schemas.mutation import Mutation, Operation, RawMessage, Reason, Rejection, Status, decode
from schemas.registry import load_registry
from sinks.ledger import ledger_row

REGISTRY = load_registry(DEFAULT_REGISTRY, custom_strategies=["max_value"])

VALID = {
    "id": "m-1", "edge_node_id": "shop-1", "entity_type": "customer", "entity_id": "C1",
    "operation_type": "UPDATE", "attributes": {"name": "Ada", "credit_limit": "1500.50", "balance": -3},
    "base_version": 4, "timestamp": "2026-11-26T10:00:00.123456789+01:00", "priority": 7,
    "dependencies": ["m-0", "m-0"], "tenant_id": "acme",
}


def raw(document, key: bytes | None = b"customer:C1") -> RawMessage:
    value = document if isinstance(document, bytes) else orjson.dumps(document)
    return RawMessage("edge.mutations", 2, 41, key, value, KAFKA_MS)


KAFKA_MS = 1_800_000_000_000  # 2027-01-15T08:00:00Z: after VALID's edge timestamp


def test_valid_mutation_is_typed_and_coerced():
    mutation = decode(raw(VALID), REGISTRY)
    assert isinstance(mutation, Mutation)
    assert mutation.operation is Operation.UPDATE
    assert mutation.attributes == {"name": "Ada", "credit_limit": Decimal("1500.50"), "balance": Decimal(-3)}
    assert mutation.dependencies == ("m-0",)
    assert mutation.timestamp.utcoffset().total_seconds() == 3600
    assert mutation.timestamp.microsecond == 123456
    assert (mutation.partition, mutation.offset) == (2, 41)


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"id": ""}, Reason.INVALID_FIELD),
        ({"id": "x" * 129}, Reason.INVALID_FIELD),
        ({"entity_type": "spaceship"}, Reason.UNKNOWN_ENTITY_TYPE),
        ({"operation_type": "UPSERT"}, Reason.INVALID_FIELD),
        ({"attributes": {"colour": "red"}}, Reason.UNKNOWN_ATTRIBUTE),
        ({"attributes": {"credit_limit": "lots"}}, Reason.INVALID_ATTRIBUTE_VALUE),
        ({"attributes": {"balance": None}}, Reason.INVALID_ATTRIBUTE_VALUE),
        ({"attributes": {"customer_since": "2026-13-01"}}, Reason.INVALID_ATTRIBUTE_VALUE),
        ({"base_version": -1}, Reason.INVALID_FIELD),
        ({"base_version": True}, Reason.INVALID_FIELD),
        ({"operation_type": "DELETE"}, Reason.INVALID_FIELD),  # DELETE needs empty attributes
        ({"timestamp": "2026-11-26T10:00:00"}, Reason.INVALID_FIELD),  # no offset
        ({"timestamp": "yesterday"}, Reason.INVALID_FIELD),
        ({"priority": 0}, Reason.INVALID_FIELD),
        ({"priority": 11}, Reason.INVALID_FIELD),
        ({"dependencies": "m-0"}, Reason.INVALID_FIELD),
        ({"dependencies": ["m-1"]}, Reason.DEPENDENCY_CYCLE),
        ({"tenant_id": 5}, Reason.INVALID_FIELD),
        ({"surprise": 1}, Reason.UNKNOWN_FIELD),
    ],
)
def test_each_rule_rejects_with_its_reason(change, code):
    result = decode(raw({**VALID, **change}), REGISTRY)
    assert isinstance(result, Rejection)
    assert result.code == code, result.message
    assert result.mutation_id == (change.get("id", "m-1") if isinstance(change.get("id", "m-1"), str)
                                  and 1 <= len(change.get("id", "m-1")) <= 128 else None)


def test_missing_field_and_broken_bytes():
    document = dict(VALID)
    del document["priority"]
    assert decode(raw(document), REGISTRY).code == Reason.MISSING_FIELD
    assert decode(raw(b"{nope"), REGISTRY).code == Reason.INVALID_JSON
    assert decode(raw(b"\xff\xfe"), REGISTRY).code == Reason.INVALID_ENCODING
    assert decode(raw(b"[1, 2]"), REGISTRY).code == Reason.NOT_AN_OBJECT
    assert decode(raw(VALID, key=b"customer:C2"), REGISTRY).code == Reason.KEY_MISMATCH
    assert isinstance(decode(raw(VALID, key=None), REGISTRY), Mutation)


def test_size_limit():
    big = {**VALID, "attributes": {"name": "x" * 5000}}
    assert decode(raw(big), REGISTRY, max_bytes=4096).code == Reason.MESSAGE_TOO_LARGE
    assert isinstance(decode(raw(big), REGISTRY, max_bytes=1 << 20), Mutation)


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(value):
    assert isinstance(decode(raw(value), REGISTRY), Mutation | Rejection)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=8,
)


@settings(max_examples=300)
@given(st.dictionaries(st.sampled_from([*VALID, "x"]), json_values, max_size=12))
def test_arbitrary_documents_never_raise(document):
    result = decode(raw(document), REGISTRY)
    assert isinstance(result, Mutation | Rejection)


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"entity_id": "C\x001"}, Reason.INVALID_FIELD),
        ({"edge_node_id": "n\x00"}, Reason.INVALID_FIELD),
        ({"dependencies": ["a\x00"]}, Reason.INVALID_FIELD),
        ({"attributes": {"name": "a\x00b"}}, Reason.INVALID_ATTRIBUTE_VALUE),
        ({"attributes": {"credit_limit": "1e5000"}}, Reason.INVALID_ATTRIBUTE_VALUE),
        ({"timestamp": "1969-12-31T23:59:59Z"}, Reason.TIMESTAMP_OUT_OF_RANGE),
        ({"timestamp": "2099-01-01T00:00:00Z"}, Reason.TIMESTAMP_OUT_OF_RANGE),
        ({"base_version": 2**63}, Reason.INVALID_FIELD),
        ({"dependencies": [f"d{i}" for i in range(1001)]}, Reason.INVALID_FIELD),
    ],
)
def test_hostile_values_are_rejected_before_they_reach_the_database(change, code):
    result = decode(raw({**VALID, **change}), REGISTRY)
    assert isinstance(result, Rejection)
    assert result.code == code, result.message


def test_json_attributes_cannot_smuggle_nul():
    article = {**VALID, "entity_type": "article", "attributes": {"tags": {"k": ["x\x00"]}}}
    result = decode(raw(article, key=b"article:C1"), REGISTRY)
    assert isinstance(result, Rejection) and result.code == Reason.INVALID_ATTRIBUTE_VALUE


def test_deep_nesting_is_rejected_not_crashing():
    deep = b'{"a":' * 2000 + b"1" + b"}" * 2000
    assert decode(raw(deep), REGISTRY).code == Reason.INVALID_JSON


@pytest.mark.parametrize("timestamp_ms", [253_402_300_800_000, 2**62, 2**63 - 1])
def test_a_kafka_timestamp_past_year_9999_is_rejected_not_raised(timestamp_ms):
    message = raw(VALID)
    message.timestamp_ms = timestamp_ms  # a producer may set any CreateTime
    result = decode(message, REGISTRY)
    assert isinstance(result, Rejection) and result.code == Reason.TIMESTAMP_OUT_OF_RANGE
    assert result.mutation_id == VALID["id"]
    row = ledger_row(result_decision(result), result, REGISTRY, "b1", "2026-11-26T00:00:00+00:00")
    assert row[LEDGER_COLUMNS.index("kafka_timestamp")] is None  # none the ledger could not read back


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_any_kafka_timestamp_decodes_without_raising(timestamp_ms):
    message = raw(VALID)
    message.timestamp_ms = timestamp_ms
    assert isinstance(decode(message, REGISTRY), Mutation | Rejection)


def result_decision(rejection: Rejection) -> Decision:
    return Decision(rejection.mutation_id, Status.REJECTED, rejection.code, rejection.entity_type,
                    rejection.entity_id, None, rejection.edge_node_id)


def test_an_edge_clock_ahead_of_kafka_counts_as_the_kafka_timestamp():
    """DESIGN section 4, "Time": an edge timestamp later than the Kafka timestamp counts as the
    Kafka timestamp (for last_writer_wins and for age); one earlier stays as the edge said."""
    kafka = datetime(2027, 1, 15, 8, 0, tzinfo=UTC)
    weeks_ahead = decode(raw({**VALID, "timestamp": "2027-02-20T08:00:00+00:00"}), REGISTRY)
    assert weeks_ahead.timestamp == kafka
    one_microsecond_ahead = decode(raw({**VALID, "timestamp": "2027-01-15T08:00:00.000001Z"}), REGISTRY)
    assert one_microsecond_ahead.timestamp == kafka
    exactly = decode(raw({**VALID, "timestamp": "2027-01-15T09:00:00+01:00"}), REGISTRY)
    assert exactly.timestamp == kafka and exactly.timestamp.utcoffset().total_seconds() == 3600
    behind = decode(raw({**VALID, "timestamp": "2027-01-15T07:59:59.999999Z"}), REGISTRY)
    assert behind.timestamp == kafka - timedelta(microseconds=1)


def test_a_create_with_a_base_version_is_accepted():
    """DESIGN section 2: a CREATE with another base is accepted (it acts from version 0)."""
    created = decode(raw({**VALID, "operation_type": "CREATE", "base_version": 7}), REGISTRY)
    assert isinstance(created, Mutation) and created.operation is Operation.CREATE
