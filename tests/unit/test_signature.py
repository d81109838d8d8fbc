"""Edge signatures (DESIGN section 2, "Edge signature"): the key derivation, the header, and
the decision rule of the decoder and the sequencer with a master key configured."""

from __future__ import annotations

import hashlib
import hmac

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mutagg.settings import load_settings
from operators.decode import decode_chunk
from operators.sequencer import Sequencer
from schemas.errors import ConfigError
from schemas.mutation import Mutation, RawMessage, Reason, Rejection, decode
from schemas.signature import (
    SIGNATURE_HEADER,
    Signer,
    Verifier,
    _NodeMac,
    node_key,
    read_master_key,
    signature,
)
from tests.unit.test_decode import KAFKA_MS, REGISTRY, VALID

MASTER = b"correct horse battery staple"
SIGNER = Signer(MASTER)
VERIFIER = Verifier(MASTER)


def message(document, headers=(), offset: int = 41, key: bytes | None = b"customer:C1") -> RawMessage:
    value = document if isinstance(document, bytes) else orjson.dumps(document)
    return RawMessage("edge.mutations", 2, offset, key, value, KAFKA_MS, tuple(headers))


def signed(document, node: str | None = None, offset: int = 41, key: bytes | None = b"customer:C1") -> RawMessage:
    value = document if isinstance(document, bytes) else orjson.dumps(document)
    return message(value, [SIGNER.header(node or document["edge_node_id"], value)], offset, key)


def test_node_key_and_signature_are_the_rfc_4231_hmac_sha256():
    # RFC 4231, test case 2: HMAC-SHA256(key "Jefe", "what do ya want for nothing?")
    assert node_key(b"Jefe", "what do ya want for nothing?").hex() == (
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    key = node_key(MASTER, "van-ü")
    assert key == hmac.new(MASTER, "van-ü".encode(), hashlib.sha256).digest() and len(key) == 32
    value = b'{"x": 1}'
    assert signature(key, value) == hmac.new(key, value, hashlib.sha256).hexdigest().encode()
    assert SIGNER.header("van-ü", value) == (SIGNATURE_HEADER, signature(key, value))


def test_a_correctly_signed_message_is_decoded_as_usual():
    mutation = decode(signed(VALID), REGISTRY, verifier=VERIFIER)
    assert isinstance(mutation, Mutation) and mutation.id == VALID["id"]


@pytest.mark.parametrize("forgery", ["missing", "other node's key", "wrong master", "uppercase", "other value",
                                     "empty", "null header"])
def test_a_message_naming_a_node_without_its_signature_is_unauthenticated_and_anonymous(forgery):
    value = orjson.dumps(VALID)
    headers = {
        "missing": [("mutagg-resolves", b"k1")],
        "other node's key": [SIGNER.header("van-2", value)],
        "wrong master": [Signer(b"another master").header("shop-1", value)],
        "uppercase": [(SIGNATURE_HEADER, SIGNER.header("shop-1", value)[1].upper())],
        "other value": [SIGNER.header("shop-1", value + b" ")],
        "empty": [(SIGNATURE_HEADER, b"")],
        "null header": [(SIGNATURE_HEADER, None)],
    }[forgery]
    result = decode(message(value, headers), REGISTRY, verifier=VERIFIER)
    assert isinstance(result, Rejection) and result.code == Reason.UNAUTHENTICATED
    assert "shop-1" in result.message
    # No identity: no ledger row, no ack, no id taken, no dependency satisfied.
    assert (result.mutation_id, result.edge_node_id, result.entity_type, result.entity_id) == (None,) * 4


@pytest.mark.parametrize(("change", "code"), [
    ({"entity_type": "spaceship"}, Reason.UNKNOWN_ENTITY_TYPE),
    ({"edge_node_id": "x" * 129}, Reason.INVALID_FIELD),  # still names a node: checked first
    ({"colour": "red"}, Reason.UNKNOWN_FIELD),
    ({"dependencies": ["m-1"], "id": "m-1"}, Reason.DEPENDENCY_CYCLE),
])
def test_the_signature_is_checked_before_anything_else_is_wrong(change, code):
    document = {**VALID, **change}
    assert decode(message(document), REGISTRY, verifier=VERIFIER).code == Reason.UNAUTHENTICATED
    assert decode(signed(document), REGISTRY, verifier=VERIFIER).code == code
    assert decode(message(document), REGISTRY).code == code  # without a key: as always


def test_an_oversized_message_naming_a_node_is_unauthenticated_unless_signed():
    document = {**VALID, "attributes": {"name": "x" * 2000}}
    assert decode(message(document), REGISTRY, 1000, VERIFIER).code == Reason.UNAUTHENTICATED
    assert decode(signed(document), REGISTRY, 1000, VERIFIER).code == Reason.MESSAGE_TOO_LARGE
    assert decode(message(b"\xff" * 2000), REGISTRY, 1000, VERIFIER).code == Reason.MESSAGE_TOO_LARGE


@pytest.mark.parametrize(("value", "code"), [
    (b"not json", Reason.INVALID_JSON),
    (b"\xff\xfe", Reason.INVALID_ENCODING),
    (b"[1, 2]", Reason.NOT_AN_OBJECT),
    (orjson.dumps({k: v for k, v in VALID.items() if k != "edge_node_id"}), Reason.MISSING_FIELD),
    (orjson.dumps({**VALID, "edge_node_id": 7}), Reason.INVALID_FIELD),
    (orjson.dumps({**VALID, "edge_node_id": ""}), Reason.INVALID_FIELD),
])
def test_a_message_naming_no_node_keeps_its_own_reason_and_identity(value, code):
    with_key = decode(message(value), REGISTRY, verifier=VERIFIER)
    without = decode(message(value), REGISTRY)
    assert with_key.code == without.code == code
    assert with_key.mutation_id == without.mutation_id  # a readable id still gets its ledger row


def test_a_value_of_none_names_no_node():
    assert decode(RawMessage("t", 0, 0, None, None, KAFKA_MS), REGISTRY, verifier=VERIFIER).code == \
        Reason.NOT_AN_OBJECT


@given(st.text(min_size=1, max_size=40), st.binary(max_size=200))
def test_the_verifier_accepts_exactly_the_signers_signature(node, value):
    header = SIGNER.header(node, value)
    assert VERIFIER.problem(node, value, (header,)) is None
    assert VERIFIER.problem(node + "x", value, (header,)) is not None
    assert VERIFIER.problem(node, value + b"x", (header,)) is not None


@given(st.binary(max_size=100), st.binary(max_size=300))
def test_the_cached_node_mac_is_hmac_sha256(key, value):
    assert _NodeMac(key).hexdigest(value) == hmac.new(key, value, hashlib.sha256).hexdigest().encode()
    mac = _NodeMac(key)
    assert mac.hexdigest(value) == mac.hexdigest(value)  # its states are copied, never consumed


def test_decode_chunk_counts_unsigned_messages():
    chunk = [signed(VALID, offset=1), message(VALID, offset=2), message(b"junk", offset=3)]
    assert decode_chunk("edge.mutations", 2, chunk, REGISTRY, 1 << 20).unsigned == 2
    others = [message(VALID, [(SIGNATURE_HEADER, None)]), message(VALID, [("trace", b"t")]),
              message(VALID, [("trace", b"t"), SIGNER.header("shop-1", orjson.dumps(VALID))])]
    assert decode_chunk("edge.mutations", 2, others, REGISTRY, 1 << 20).unsigned == 2
    decoded = decode_chunk("edge.mutations", 2, chunk, REGISTRY, 1 << 20, verifier=VERIFIER)
    assert decoded.unsigned == 2
    assert [m.offset for m in decoded.mutations] == [1]
    assert [(r.raw.offset, r.code) for r in decoded.rejections] == [
        (2, Reason.UNAUTHENTICATED), (3, Reason.INVALID_JSON)]


def _release_all(sequencer: Sequencer):
    release = sequencer.release(at_end_of_input=True)
    sequencer.mark_decided([m.id for m in release.order] + [r.mutation_id for r in release.invalid if r.mutation_id])
    return release


def test_a_forgery_takes_no_id_and_satisfies_no_dependency():
    """A forger squats on id m-1 and on m-0 (which a dependant names): the real m-1 that comes
    later is its id's first copy, and m-2 depending on the forged m-0 misses it."""
    squat = {**VALID, "id": "m-1", "edge_node_id": "shop-1"}
    ghost = {**VALID, "id": "m-0", "entity_id": "C2", "dependencies": []}
    real = {**VALID, "id": "m-1", "edge_node_id": "shop-1", "dependencies": []}
    dependant = {**VALID, "id": "m-2", "entity_id": "C3", "dependencies": ["m-0"]}
    log = [
        message(squat, offset=0),
        message(ghost, offset=1, key=b"customer:C2"),
        signed(real, offset=2),
        signed(dependant, offset=3, key=b"customer:C3"),
    ]
    decoded = decode_chunk("edge.mutations", 2, log, REGISTRY, 1 << 20, verifier=VERIFIER)
    sequencer = Sequencer(dependency_timeout_ms=1000, partitions=frozenset({("edge.mutations", 2)}))
    sequencer.admit(decoded.mutations, decoded.rejections)
    sequencer.observe("edge.mutations", 2, decoded.event_time_ms)
    release = _release_all(sequencer)
    assert [(r.raw.offset, r.code, r.mutation_id) for r in release.invalid] == [
        (0, Reason.UNAUTHENTICATED, None), (1, Reason.UNAUTHENTICATED, None)]
    assert [m.id for m in release.ready] == ["m-1"] and release.copies == []
    assert [(m.id, reason) for m, reason in release.rejected] == [("m-2", Reason.MISSING_DEPENDENCY)]
    # Without a key the squatter's message is the first copy of m-1, and m-0 satisfies m-2.
    decoded = decode_chunk("edge.mutations", 2, log, REGISTRY, 1 << 20)
    assert [(m.id, m.offset) for m in decoded.mutations] == [("m-1", 0), ("m-0", 1), ("m-1", 2), ("m-2", 3)]


def test_a_later_forged_copy_of_a_decided_id_is_no_duplicate():
    document = {**VALID, "dependencies": []}
    real = signed(document, offset=0)
    forged = message({**document, "attributes": {"name": "Mallory"}}, offset=1)
    decoded = decode_chunk("edge.mutations", 2, [real, forged], REGISTRY, 1 << 20, verifier=VERIFIER)
    sequencer = Sequencer(partitions=frozenset({("edge.mutations", 2)}))
    sequencer.admit(decoded.mutations, decoded.rejections)
    release = _release_all(sequencer)
    assert [m.offset for m in release.ready] == [0] and release.copies == []
    assert [(r.raw.offset, r.code) for r in release.invalid] == [(1, Reason.UNAUTHENTICATED)]


def test_the_master_key_file_is_stripped_utf8_and_must_hold_a_key(tmp_path):
    key_file = tmp_path / "master"
    key_file.write_text("  s3cret-ä\n")
    assert read_master_key(str(key_file)) == "s3cret-ä".encode()
    settings = load_settings(environ={"MUTAGG_EDGE_MASTER_KEY_FILE": str(key_file)})
    assert settings.edge_master_key() == "s3cret-ä".encode()
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.as_env())
    assert load_settings(environ={}).edge_master_key() is None
    key_file.write_text(" \n\t")
    with pytest.raises(ConfigError, match=r"MUTAGG_EDGE_MASTER_KEY_FILE .*empty"):
        load_settings(environ={"MUTAGG_EDGE_MASTER_KEY_FILE": str(key_file)})
    with pytest.raises(ConfigError, match=r"MUTAGG_EDGE_MASTER_KEY_FILE .*cannot be read"):
        load_settings(environ={"MUTAGG_EDGE_MASTER_KEY_FILE": str(tmp_path / "missing")})
    key_file.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="cannot be read"):
        load_settings(environ={"MUTAGG_EDGE_MASTER_KEY_FILE": str(key_file)})


def test_the_jobs_own_producers_sign_as_the_node_a_message_names(tmp_path):
    from mutagg.conflicts_cmd import _signature
    from mutagg.producer import signature_headers

    key_file = tmp_path / "master"
    key_file.write_text(MASTER.decode())
    settings = load_settings(environ={"MUTAGG_EDGE_MASTER_KEY_FILE": str(key_file)})
    value = orjson.dumps(VALID)
    job_side = Signer(settings.edge_master_key())
    for headers in (signature_headers(job_side, value), _signature(settings, "shop-1", value)):
        assert VERIFIER.problem("shop-1", value, tuple(headers)) is None
    assert signature_headers(SIGNER, b"not json") is None and signature_headers(None, value) is None
    assert _signature(load_settings(environ={}), "shop-1", value) == []


def test_a_dlq_replay_keeps_the_signature_among_its_headers():
    value = orjson.dumps({**VALID, "dependencies": []})
    replayed = message(value, [("trace", b"t"), SIGNER.header("shop-1", value), ("mutagg-replay-of", b"dlq:0:5")])
    mutation = decode(replayed, REGISTRY, verifier=VERIFIER)
    assert isinstance(mutation, Mutation) and mutation.replayed


def test_forgeries_count_in_the_dlq_metric_not_as_mutations_and_unsigned_reads_are_counted():
    from mutagg.metrics import JobMetrics
    from sinks.outcomes import from_decision, rejected_decision

    metrics = JobMetrics(entity_types=["customer"])
    forged = decode(message(VALID), REGISTRY, verifier=VERIFIER)
    outcome = from_decision(forged, rejected_decision(forged), "b1", "2026-12-07T00:00:00+00:00")
    assert (outcome.mutation_id, outcome.edge_node_id) == (None, None)  # so no ledger row and no ack
    metrics.record_batch([outcome], 0.1)
    sample = metrics.registry.get_sample_value
    assert sample("mutagg_dlq_messages_total", {"reason": "UNAUTHENTICATED"}) == 1
    counted = [s for family in metrics.registry.collect() if family.name == "mutagg_mutations"
               for s in family.samples if s.name == "mutagg_mutations_total"]
    assert counted and not [s for s in counted if s.value]  # every status starts at 0 and stays there
    metrics.count_unsigned(3)
    assert sample("mutagg_unsigned_total", {}) == 3
