"""Edge signatures with the real job (DESIGN section 2, "Edge signature"; issue 20 item 4):
with a master key, a forger writing as another node (no signature, its own key, a key of
another master; squatting on an id the real node then uses, or a dependency a real mutation
names) reaches the DLQ only, as UNAUTHENTICATED: no ledger row, no ack, no id taken, no
dependency satisfied, also across a crash and the replay after it. The edge client, provisioned
with `mutagg edge-key`, is accepted."""

from __future__ import annotations

import subprocess
import sys

import orjson
from confluent_kafka import Producer

from edge.client import EdgeConfig, EdgeNode
from edge.signing import load_node_key
from mutagg.settings import with_overrides
from schemas.signature import Signer
from tests.integration.conftest import mutagg, query, read_topic, run_job, settings_env

MASTER = "integration master key"


def document(mutation_id: str, node: str | None, entity_id: str, name: str, operation: str = "CREATE") -> dict:
    found = {
        "id": mutation_id, "edge_node_id": node, "entity_type": "customer", "entity_id": entity_id,
        "operation_type": operation, "attributes": {"name": name}, "base_version": 0,
        "timestamp": "2026-12-01T10:00:00+00:00", "priority": 5, "dependencies": [],
    }
    return found if node is not None else {k: v for k, v in found.items() if k != "edge_node_id"}


def produce(settings, messages: list[tuple[bytes, list]]) -> None:
    producer = Producer(settings.kafka_client_config())
    for value, headers in messages:
        try:
            key = f"customer:{orjson.loads(value)['entity_id']}".encode()
        except orjson.JSONDecodeError:
            key = b"customer:junk"
        producer.produce(settings.topic_mutations, key=key, value=value, headers=headers)
    assert producer.flush(30) == 0


def test_forgers_reach_only_the_dlq_and_signed_nodes_are_decided(settings, tmp_path):
    master_file = tmp_path / "master.key"
    master_file.write_text(f"{MASTER}\n")
    settings = with_overrides(settings, edge_master_key_file=str(master_file))
    key_file = tmp_path / "shop-1.key"
    mutagg(settings, "edge-key", "shop-1", "--out", str(key_file))
    node = EdgeNode(EdgeConfig(
        node_id="shop-1", outbox_path=tmp_path / "shop-1.sqlite3", kafka_config=settings.kafka_client_config(),
        topic_mutations=settings.topic_mutations, topic_status=settings.topic_status, delivery_timeout_s=10.0,
        node_key=load_node_key(key_file)))
    real = node.create("customer", "S1", {"name": "Real shop"})
    dependant = node.create("customer", "S2", {"name": "Needs ghost"}, dependencies=["ghost-1"])

    job_side = Signer(MASTER.encode())  # what `mutagg edge-key` gives a node called "mallory"
    squat = orjson.dumps(document(real.id, "shop-1", "S1", "Mallory"))
    ghost = orjson.dumps(document("ghost-1", "shop-1", "S3", "Ghost"))
    elsewhere = orjson.dumps(document("f-3", "shop-1", "S4", "Other master"))
    honest = orjson.dumps(document("m-1", "mallory", "S5", "Mallory's own"))
    no_node = orjson.dumps(document("nonode-1", None, "S6", "Nobody"))
    forged = [
        (squat, []),  # before the real node's message with the same id
        (ghost, [job_side.header("mallory", ghost)]),  # a forger's own valid key, another node's name
        (elsewhere, [Signer(b"another master").header("shop-1", elsewhere)]),
    ]
    produce(settings, [*forged, (honest, [job_side.header("mallory", honest)]), (b"not json", []), (no_node, [])])
    assert node.send(30.0).drained
    later_copy = orjson.dumps(document(real.id, "shop-1", "S1", "Mallory again", "UPDATE"))
    produce(settings, [(later_copy, [("mutagg-sig", b"0" * 64)])])

    # Killed after its first batch's acks (before it records where to resume), then run again.
    crashed = subprocess.run(
        [sys.executable, "-m", "mutagg.cli", "run", "--until-idle"], capture_output=True, text=True, timeout=120,
        env=settings_env(settings, MUTAGG_FAULT_POINT="after_acks:1", MUTAGG_BATCH_SIZE="3"))
    assert crashed.returncode == -9, crashed.stderr[-3000:]
    run_job(settings)

    ledger = {row[0]: row[1:] for row in query(settings, "SELECT mutation_id, status, reason, edge_node_id, version "
                                                         "FROM mutation_log")}
    assert ledger == {
        real.id: ("APPLIED", None, "shop-1", 1),
        dependant.id: ("REJECTED", "MISSING_DEPENDENCY", "shop-1", None),  # the forged ghost-1 satisfies nothing
        "m-1": ("APPLIED", None, "mallory", 1),
        "nonode-1": ("REJECTED", "MISSING_FIELD", None, None),  # names no node: its own reason, as without a key
    }
    assert query(settings, "SELECT id, name, version FROM customer ORDER BY id") == [
        ("S1", "Real shop", 1), ("S5", "Mallory's own", 1)]
    assert query(settings, "SELECT count(*) FROM mutation_duplicates") == [(0,)]  # a forged copy is no copy

    by_source: dict[tuple[int, int], set] = {}
    for record in read_topic(settings, settings.topic_dlq):
        headers = dict(record.headers())
        source = (int(headers["mutagg.source.partition"]), int(headers["mutagg.source.offset"]))
        by_source.setdefault(source, set()).add((record.value(), headers["mutagg.error.code"].decode()))
    assert all(len(found) == 1 for found in by_source.values())  # a repeat after the crash is the same record
    assert sorted(next(iter(found)) for found in by_source.values()) == sorted([
        (squat, "UNAUTHENTICATED"), (ghost, "UNAUTHENTICATED"), (elsewhere, "UNAUTHENTICATED"),
        (later_copy, "UNAUTHENTICATED"), (b"not json", "INVALID_JSON"), (no_node, "MISSING_FIELD")])

    acks = {(r.key().decode(), *(lambda a: (a["mutation_id"], a["status"], a["reason"]))(orjson.loads(r.value())))
            for r in read_topic(settings, settings.topic_status)}
    assert acks == {("shop-1", real.id, "APPLIED", None), ("shop-1", dependant.id, "REJECTED", "MISSING_DEPENDENCY"),
                    ("mallory", "m-1", "APPLIED", None)}
    assert node.wait_until_decided(30.0)
    assert node.outbox.known_version("customer", "S1") == 1
    node.close()
    # Every input offset is accounted for: the forged ones by their DLQ records alone.
    verified = mutagg(settings, "verify").stdout  # exit 0: no problem found
    assert "checked         9 input offsets" in verified and "records for 6 input messages" in verified, verified
