"""The edge's wire records agree with the job's: what the edge encodes the job's
decoder accepts, and what the job's ack producer writes the edge parses."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.errors import InvalidAck, InvalidMutation
from edge.records import EdgeMutation, Operation, encode, parse_ack
from edge.routing import entity_key, status_partition
from mutagg.settings import DEFAULT_REGISTRY
from operators.strategies import CUSTOM_STRATEGIES
from schemas.mutation import Mutation, RawMessage, decode
from schemas.registry import load_registry

REGISTRY = load_registry(str(DEFAULT_REGISTRY), custom_strategies=CUSTOM_STRATEGIES)


def _decode(mutation: EdgeMutation):
    return decode(RawMessage("edge.mutations", 0, 0, mutation.kafka_key, encode(mutation), 0), REGISTRY)


def test_an_edge_mutation_decodes_on_the_job_side_with_the_same_meaning():
    stamp = datetime(2026, 11, 26, 8, 30, tzinfo=timezone(timedelta(hours=2)))
    mutation = EdgeMutation(
        id="van-07-000001", edge_node_id="van-07", entity_type="customer", entity_id="C000042",
        operation=Operation.UPDATE, attributes={"credit_limit": Decimal("900.00"), "balance": "-12.50"},
        base_version=3, timestamp=stamp, priority=8, dependencies=("van-07-000000",), tenant_id="acme",
    )
    decoded = _decode(mutation)
    assert isinstance(decoded, Mutation), decoded
    assert (decoded.id, decoded.edge_node_id, decoded.entity_key, decoded.base_version, decoded.priority) == (
        "van-07-000001", "van-07", ("customer", "C000042"), 3, 8)
    assert decoded.attributes == {"credit_limit": Decimal("900.00"), "balance": Decimal("-12.50")}
    assert decoded.timestamp == stamp
    assert decoded.dependencies == ("van-07-000000",)
    assert decoded.tenant_id == "acme"


def test_encode_refuses_what_the_job_would_reject_on_form():
    base = EdgeMutation("m1", "n1", "customer", "C1", Operation.UPDATE, {}, 1, datetime.now(UTC))
    cases = {
        "base_version": -1, "priority": 0, "id": "x" * 129, "entity_id": "", "dependencies": ("m1",),
        "timestamp": datetime(2026, 1, 1),
    }
    for name, value in cases.items():
        with pytest.raises(InvalidMutation):
            encode(EdgeMutation(**{**_fields(base), name: value}))
    with pytest.raises(InvalidMutation, match="MESSAGE_TOO_LARGE"):
        encode(EdgeMutation(**{**_fields(base), "attributes": {"notes": "x" * 500}}), max_bytes=400)
    with pytest.raises(InvalidMutation):
        encode(EdgeMutation(**{**_fields(base), "attributes": {"notes": object()}}))


def _fields(mutation: EdgeMutation) -> dict:
    return {name: getattr(mutation, name) for name in mutation.__dataclass_fields__}


def test_acks_in_the_jobs_format_parse():
    value = orjson.dumps({
        "mutation_id": "m1", "status": "APPLIED", "entity_type": "customer", "entity_id": "C1",
        "entity_version": 7, "reason": None, "conflict_ids": ["k1", "k2"], "batch_id": "b",
        "processed_at": "2026-11-26T08:00:00+00:00",
    })
    ack = parse_ack(value)
    assert (ack.mutation_id, ack.status, ack.entity_version, ack.conflict_ids) == ("m1", "APPLIED", 7, ("k1", "k2"))
    for broken in (b"{", b"[]", b'{"status": "APPLIED"}', b'{"mutation_id": "m", "status": "X", '
                   b'"entity_version": "7"}', None):
        with pytest.raises(InvalidAck):
            parse_ack(broken)


@given(st.text(min_size=1, max_size=128), st.integers(1, 256))
def test_the_status_partition_is_librdkafkas_consistent_partitioner(node_id, partitions):
    partition = status_partition(node_id, partitions)
    assert 0 <= partition < partitions
    assert partition == zlib.crc32(node_id.encode()) % partitions


def test_the_entity_key_is_type_colon_id():
    assert entity_key("stock_level", "WH1/SKU-1") == b"stock_level:WH1/SKU-1"
