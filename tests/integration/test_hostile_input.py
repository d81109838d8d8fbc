"""Issue 8: hostile input never stops the job and is never silently dropped.

100,000 broken messages of many kinds are produced between valid ones; every one
must be accounted for (applied + rejected-in-ledger/DLQ = produced), every valid
one applied, and the database left untouched by the invalid ones."""

from __future__ import annotations

import os
import random
from collections import Counter

import orjson

from mutagg.producer import produce
from mutagg.workload import Message
from tests.integration.conftest import query, read_topic, run_job

MAX_BYTES = 64 * 1024


def valid(i: int) -> tuple[Message, str]:
    document = {
        "id": f"ok-{i}", "edge_node_id": f"shop-{i % 7}", "entity_type": "article", "entity_id": f"A{i}",
        "operation_type": "CREATE", "attributes": {"name": f"Article {i}", "price": "9.99", "tags": ["x"]},
        "base_version": 0, "timestamp": "2026-11-26T08:00:00Z", "priority": 5, "dependencies": [],
    }
    return Message(f"article:A{i}".encode(), orjson.dumps(document)), document["id"]


def hostile(i: int, rng: random.Random) -> tuple[Message, str | None, str]:
    """A broken message, the id the ledger should hold for it (if readable), and its reason code."""
    base = {
        "id": f"bad-{i}", "edge_node_id": "van-66", "entity_type": "customer", "entity_id": f"H{i}",
        "operation_type": "UPDATE", "attributes": {"name": "x"}, "base_version": 1,
        "timestamp": "2026-11-26T08:00:00Z", "priority": 5, "dependencies": [],
    }
    key = f"customer:H{i}".encode()
    kind = i % 18

    def doc(code: str, **change) -> tuple[Message, str | None, str]:
        return Message(key, orjson.dumps({**base, **change})), f"bad-{i}", code

    if kind == 0:
        return Message(key, bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64))) + b"\xff"), None, "*"
    if kind == 1:
        return Message(key, orjson.dumps(base)[: rng.randint(1, 40)]), None, "INVALID_JSON"
    if kind == 2:
        return Message(key, b"\xc3\x28" + orjson.dumps(base)), None, "INVALID_ENCODING"
    if kind == 3:
        return Message(key, b'{"a":' * 1500 + b"1" + b"}" * 1500), None, "INVALID_JSON"
    if kind == 4:
        return doc("UNKNOWN_ENTITY_TYPE", entity_type="spaceship")
    if kind == 5:
        return doc("UNKNOWN_ATTRIBUTE", attributes={f"a{j}": j for j in range(2000)})
    if kind == 6:
        return doc("INVALID_ATTRIBUTE_VALUE", attributes={"credit_limit": {"$gt": ""}})
    if kind == 7:
        return doc("INVALID_FIELD", base_version=-1)
    if kind == 8:
        value = orjson.dumps(base).replace(b'"base_version":1', b'"base_version":1000000000000000000000000000000')
        return Message(key, value), f"bad-{i}", "INVALID_FIELD"
    if kind == 9:
        return doc("TIMESTAMP_OUT_OF_RANGE", timestamp="9999-12-31T23:59:59Z")
    if kind == 10:
        return doc("TIMESTAMP_OUT_OF_RANGE", timestamp="0001-01-01T00:00:00+14:00")
    if kind == 11:
        return doc("INVALID_FIELD", dependencies=[f"d{j}" for j in range(5000)])
    if kind == 12:
        return doc("DEPENDENCY_CYCLE", dependencies=[f"bad-{i}"])
    if kind == 13:
        without_priority = {k: v for k, v in base.items() if k != "priority"}
        return Message(key, orjson.dumps(without_priority)), f"bad-{i}", "MISSING_FIELD"
    if kind == 14:
        return Message(b"customer:someone-else", orjson.dumps(base)), f"bad-{i}", "KEY_MISMATCH"
    if kind == 15:
        return doc("INVALID_FIELD", entity_id="robert'); DROP TABLE customer;--\x00")
    if kind == 16:  # not even parsed: its id is not read, so it has no ledger row
        return Message(key, orjson.dumps({**base, "attributes": {"name": "x" * (MAX_BYTES + 1)}})), None, "*"
    return doc("UNKNOWN_FIELD", **{"__proto__": {"admin": True}})


def test_a_flood_of_hostile_messages_is_accounted_for(settings):
    """Every kind of hostile message, many times over, between valid ones: each hostile one in the
    DLQ once and in the ledger when its id was readable, the valid ones applied, nothing else
    written. CI floods 40,000; the long form: MUTAGG_HOSTILE_MESSAGES=200000 pytest -k flood."""
    count = int(os.environ.get("MUTAGG_HOSTILE_MESSAGES", "40000"))
    rng = random.Random(8)
    messages, expected, valid_ids = [], {}, []
    for i in range(count):
        message, mutation_id, code = hostile(i, rng)
        messages.append(message)
        if mutation_id is not None:
            expected[mutation_id] = code
        if i % 10 == 0:
            good, good_id = valid(i)
            messages.append(good)
            valid_ids.append(good_id)
    produce(settings, messages)
    run_job(settings, timeout=900, MUTAGG_MAX_MESSAGE_BYTES=str(MAX_BYTES))

    ledger = {r[0]: r[1:] for r in query(settings, "SELECT mutation_id, status, reason FROM mutation_log")}
    dlq = read_topic(settings, settings.topic_dlq)
    assert len(dlq) == count  # every hostile message is in the DLQ, once
    missing = Counter(int(i.split("-")[1]) % 18 for i in set(expected) - set(ledger))
    assert not missing, f"hostile kinds with a readable id but no ledger row: {missing}"
    assert len(ledger) == len(expected) + len(valid_ids)  # and in the ledger when its id was readable
    for mutation_id in valid_ids:
        assert ledger[mutation_id] == ("APPLIED", None)
    for mutation_id, code in expected.items():
        assert ledger[mutation_id] == ("REJECTED", code), (mutation_id, ledger[mutation_id])
    codes = Counter(dict(record.headers())["mutagg.error.code"].decode() for record in dlq)
    assert set(codes) >= {"INVALID_JSON", "INVALID_ENCODING", "UNKNOWN_ENTITY_TYPE", "KEY_MISMATCH",
                          "MESSAGE_TOO_LARGE", "TIMESTAMP_OUT_OF_RANGE", "DEPENDENCY_CYCLE"}
    # The database holds exactly what the valid messages made, and nothing else.
    assert query(settings, "SELECT count(*), min(version), max(version) FROM article")[0] == (len(valid_ids), 1, 1)
    assert query(settings, "SELECT count(*) FROM customer")[0][0] == 0
    assert query(settings, "SELECT count(*) FROM conflicts")[0][0] == 0


def test_a_flooding_node_cannot_starve_the_others(settings):
    """One node floods a hot entity; a quiet node's few changes still go in early."""
    def change(mutation_id: str, node: str, entity_id: str, operation: str, base: int) -> Message:
        document = {
            "id": mutation_id, "edge_node_id": node, "entity_type": "stock_level", "entity_id": entity_id,
            "operation_type": operation, "attributes": {"quantity": 1}, "base_version": base,
            "timestamp": "2026-11-26T08:00:00Z", "priority": 5, "dependencies": [],
        }
        return Message(f"stock_level:{entity_id}".encode(), orjson.dumps(document))

    flood = [change("f0", "flooder", "HOT", "CREATE", 0)] + [
        change(f"f{i}", "flooder", "HOT", "UPDATE", i) for i in range(1, 6000)
    ]
    quiet = [change(f"q{i}", "quiet", f"Q{i}", "CREATE", 0) for i in range(20)]
    produce(settings, flood + quiet)  # the quiet node's changes queue behind the whole flood
    run_job(settings, MUTAGG_BATCH_SIZE="200", MUTAGG_NODE_SHARE="0.5", MUTAGG_LOG_LEVEL="INFO")
    order = [row[0] for row in query(settings, "SELECT mutation_id FROM mutation_log ORDER BY batch_id, kafka_offset")]
    last_quiet = max(order.index(f"q{i}") for i in range(20))
    assert last_quiet < len(order) - 1000, "the quiet node waited for (nearly) the whole flood"
    assert query(settings, "SELECT quantity, version FROM stock_level WHERE id = 'HOT'")[0] == (6000, 6000)


def test_values_built_to_break_out_of_quoting_are_stored_verbatim(settings):
    """No injection: ids and values travel as COPY data and parameters, never as SQL."""
    nasty = [
        "O'Brien", 'x"; DROP TABLE customer; --', "a\\'); DELETE FROM mutation_log; --", "$$;$$", "\\N", "",
        "tab\there", "line\nbreak", "comma,quote\",", "{\"json\": 1}", "E'\\\\x41'",
    ]
    messages = []
    for i, text in enumerate(nasty):
        entity_id = text or "empty-name"
        document = {
            "id": f"inj-{i}-{text}"[:128], "edge_node_id": f"node'{i}", "entity_type": "customer",
            "entity_id": entity_id, "operation_type": "CREATE",
            "attributes": {"name": text, "notes": text, "segment": text}, "base_version": 0,
            "timestamp": "2026-11-26T08:00:00Z", "priority": 5, "dependencies": [],
        }
        messages.append(Message(f"customer:{entity_id}".encode(), orjson.dumps(document)))
    produce(settings, messages)
    run_job(settings)
    rows = {r[0]: r[1:] for r in query(settings, "SELECT id, name, notes, segment FROM customer")}
    assert rows == {(t or "empty-name"): (t, t, t) for t in nasty}
    statuses = {r[0] for r in query(settings, "SELECT status FROM mutation_log")}
    assert statuses == {"APPLIED"}
    assert query(settings, "SELECT count(*) FROM mutation_log")[0][0] == len(nasty)
