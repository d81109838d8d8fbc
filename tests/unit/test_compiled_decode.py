"""The decode step with the compiled core on it (operators/decode.py `decode_chunk`) gives
the chunk the Python decoder gives, message by message (`schemas.mutation.decode`, the
oracle): every field of every Mutation and Rejection in order, each value of the same type
and rendering (`repr`: a Decimal's exponent, a datetime's offset, -0.0), on generated
messages, hand-made ones of every reason code, signed and forged ones."""

from __future__ import annotations

import json
from datetime import date

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.decide_ab import workload_chunks
from operators import compiled
from operators.decode import DecodedChunk, decode_chunk
from schemas.errors import CoreMissing
from schemas.mutation import (
    KAFKA_TIME_LIMIT_MS,
    REPLAY_HEADER,
    RESOLVES_HEADER,
    SETS_HEADER,
    Mutation,
    RawMessage,
    Rejection,
    decode,
)
from schemas.signature import SIGNATURE_HEADER, Signer, Verifier, header_signature
from tests.unit.test_decide_prototypes import hand_made
from tests.unit.test_decide_prototypes import messages as prototype_chunks
from tests.unit.test_decode import REGISTRY, VALID, json_values
from tests.unit.test_decode_shortcuts import decimal_inputs, timestamps

MASTER = b"correct horse battery staple"
SIGNER, VERIFIER = Signer(MASTER), Verifier(MASTER)
KAFKA_MS = 1_800_000_000_000  # 2027-01-15T08:00:00Z


def python_chunk(messages: list[RawMessage], max_bytes: int, verifier: Verifier | None) -> DecodedChunk:
    """The decode step as it was before the core: the Python decoder on every message."""
    results = [decode(message, REGISTRY, max_bytes, verifier) for message in messages]
    unsigned = sum(
        1 for m in messages
        if not m.headers or (m.headers[0][1] if m.headers[0][0] == SIGNATURE_HEADER else header_signature(m.headers))
        is None
    )
    return DecodedChunk(
        "edge.mutations", 2, messages[-1].offset + 1, [r for r in results if isinstance(r, Mutation)],
        [r for r in results if isinstance(r, Rejection)],
        max(m.timestamp_ms if m.timestamp_ms < KAFKA_TIME_LIMIT_MS else 0 for m in messages), unsigned,
    )


def assert_same_chunk(messages: list[RawMessage], max_bytes: int = 1 << 20, verifier: Verifier | None = None):
    actual = decode_chunk("edge.mutations", 2, messages, REGISTRY, max_bytes, verifier=verifier)
    expected = python_chunk(messages, max_bytes, verifier)
    assert actual == expected
    assert repr(actual) == repr(expected)  # types and renderings too: Decimal('7.50'), tzinfo, -0.0, True vs 1


def test_the_core_decodes_every_valid_message_of_the_workload_itself():
    """On the path, not beside it: it leaves to Python only what Python rejects."""
    (chunk,) = workload_chunks(3000, 3000, seed=5)
    _, refused = compiled.decoder(REGISTRY).decode(chunk, 1 << 20)
    assert refused == [i for i, m in enumerate(chunk) if isinstance(decode(m, REGISTRY), Rejection)]
    assert len(refused) < 100
    assert_same_chunk(chunk)


def test_every_reason_code_and_later_copy_as_the_python_decoder():
    messages = hand_made()
    long = RawMessage(messages[0].topic, 0, len(messages), b"customer:C1", b'{"id": "' + b"n" * 700 + b'"}', KAFKA_MS)
    assert_same_chunk([*messages, long], max_bytes=700)
    assert_same_chunk(messages)


def test_signed_forged_and_unsigned_messages_with_a_master_key():
    value = orjson.dumps(VALID)
    other = orjson.dumps({**VALID, "id": "m-2", "edge_node_id": "van-9"})
    chunk = [
        RawMessage("edge.mutations", 2, 0, b"customer:C1", value, KAFKA_MS, (SIGNER.header("shop-1", value),)),
        RawMessage("edge.mutations", 2, 1, b"customer:C1", value, KAFKA_MS, (SIGNER.header("van-9", value),)),
        RawMessage("edge.mutations", 2, 2, b"customer:C1", other, KAFKA_MS),
        RawMessage("edge.mutations", 2, 3, b"customer:C1", other, KAFKA_MS, ((SIGNATURE_HEADER, None),)),
        RawMessage("edge.mutations", 2, 4, b"customer:C1", b"{junk", KAFKA_MS, (SIGNER.header("x", b"{junk"),)),
    ]
    assert_same_chunk(chunk, verifier=VERIFIER)
    assert_same_chunk(chunk)
    decoded = decode_chunk("edge.mutations", 2, chunk, REGISTRY, 1 << 20, verifier=VERIFIER)
    assert [m.offset for m in decoded.mutations] == [0]


@pytest.mark.parametrize("text", [
    b"-0", b"-0.0", b"0.0", b"1e400", b"5e-324", b"18446744073709551615", b"18446744073709551616",
    b"-9223372036854775809", b"1.7976931348623157e308", b'"\\ud800"', b'"a\\u0000b"', b'"\\u00e9\\n"', b"1.0",
    b'"2025-11-26T08:00:00.5+02:00"', b'"2025-11-26T08:00:00-00:00"', b'"+12"', b'"1e3"', b'{"a": 1, "a": 2}',
    b'[1.5, {"k": "\\\\"}]', b'"2024-02-29"', b"true",
])
def test_json_texts_where_two_parsers_may_differ(text):
    """serde_json in the core, orjson in Python: numbers at the edges, escapes, repeated keys."""
    chunk = []
    for offset, name in enumerate(["name", "credit_limit", "balance", "customer_since", "shoe_size"]):
        for entity_type, attribute in [("customer", name), ("article", "weight_kg"), ("article", "tags"),
                                       ("article", "active"), ("stock_level", "last_counted_at")]:
            document = orjson.dumps({**VALID, "entity_type": entity_type, "attributes": {attribute: "@"}})
            value = document.replace(b'"@"', text)
            chunk.append(RawMessage("edge.mutations", 2, len(chunk), None, value, KAFKA_MS + offset))
    assert_same_chunk(chunk)


def test_without_the_core_the_job_does_not_start(monkeypatch):
    monkeypatch.setattr(compiled, "mutagg_core", None)
    with pytest.raises(CoreMissing, match="run `make`"):
        compiled.require()


EDGE_TIMESTAMPS = st.builds(
    "{}T{}:{}:{}{}{}".format, st.dates(date(1969, 12, 31), date(2028, 1, 20)).map(str),
    st.sampled_from(["00", "09", "23"]), st.sampled_from(["00", "59"]),
    st.sampled_from(["00", "30", "59"]), st.sampled_from(["", ".5", ".123456", ".1234567"]),
    st.sampled_from(["Z", "+00:00", "-00:00", "+01:00", "-05:30", "+14:00"]),
)
"""The shapes edge nodes send (`YYYY-MM-DDTHH:MM:SS[.f](Z|±HH:MM)`), around the Kafka time's year."""
TYPED_VALUES = {
    "string": st.text(max_size=8),
    "integer": st.one_of(st.integers(-(2**64), 2**64), st.floats(), st.text("+-0123456789", max_size=21)),
    "decimal": decimal_inputs.filter(lambda v: not isinstance(v, list)),
    "float": st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-(2**70), 2**70)),
    "boolean": st.booleans(),
    "timestamp": st.one_of(EDGE_TIMESTAMPS, timestamps),
    "date": st.one_of(st.dates().map(str), st.text("0123456789-", max_size=11)),
    "json": json_values,
}
KAFKA_TIMES = st.sampled_from([KAFKA_MS] * 6 + [0, -1, 1, 4_102_444_800_000, KAFKA_TIME_LIMIT_MS - 1,
                                                KAFKA_TIME_LIMIT_MS])
HEADERS = st.sampled_from([
    (), (), ((SIGNATURE_HEADER, b"0" * 64),), ((SIGNATURE_HEADER, None),), ((RESOLVES_HEADER, b"c-1"),),
    ((RESOLVES_HEADER, b"c-1,c-2"), (SETS_HEADER, b"name")), ((SIGNATURE_HEADER, b"0" * 64), (REPLAY_HEADER, b"t/0/1")),
    (("trace", b"t"),),
])


@st.composite
def documents(draw) -> RawMessage:
    """VALID with attribute values of each declared type, valid and not, in every shape; now
    and then a field replaced by any JSON value, dropped, or joined by an unknown one; any
    key, Kafka time and headers."""
    entity_type = REGISTRY.entity_types[draw(st.sampled_from(["customer", "stock_level", "article"]))]
    names = draw(st.lists(st.sampled_from([*entity_type.attributes, "nope"]), max_size=4, unique=True))
    document = {
        **VALID, "entity_type": entity_type.name, "timestamp": draw(EDGE_TIMESTAMPS),
        "operation_type": draw(st.sampled_from(["CREATE", "UPDATE", "UPDATE", "DELETE"])),
        "attributes": {
            name: draw(st.none() | TYPED_VALUES[entity_type.attributes[name].type] if name != "nope" else json_values)
            for name in names
        },
    }
    if document["operation_type"] == "DELETE" and draw(st.booleans()):
        document["attributes"] = {}
    for field in draw(st.lists(st.sampled_from([*document, "tenant_id", "x"]), max_size=2))[:draw(st.integers(-2, 2))]:
        if draw(st.booleans()):
            document.pop(field, None)
        else:
            document[field] = draw(json_values)
    key = draw(st.sampled_from([f"{entity_type.name}:C1".encode(), None, b"customer:C1"]))
    value = json.dumps(document, ensure_ascii=draw(st.booleans())).encode()  # any int; escapes or UTF-8
    return RawMessage("edge.mutations", 2, 41, key, value, draw(KAFKA_TIMES), draw(HEADERS))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(documents(), min_size=1, max_size=4))
def test_generated_documents_decode_as_the_python_decoder(chunk):
    assert_same_chunk(chunk)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(prototype_chunks())
def test_generated_chunks_decode_as_the_python_decoder(chunk):
    assert_same_chunk(chunk)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=200), min_size=1, max_size=3))
def test_arbitrary_bytes_decode_as_the_python_decoder(values):
    assert_same_chunk([RawMessage("edge.mutations", 2, i, None, v, KAFKA_MS) for i, v in enumerate(values)])
