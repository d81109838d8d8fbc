"""An edge node that is offline for a while (its bootstrap is unreachable: the
producer really fails, the sender really backs off), then reconnects: everything
it recorded reaches Kafka once, in each entity's order, is decided once by the
real job, comes back acknowledged, and its next change carries the right base."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import orjson

from edge.backoff import Backoff
from edge.client import EdgeConfig, EdgeNode
from edge.records import EntryState
from mutagg.settings import Settings
from tests.integration.conftest import query, read_topic, run_job

UNREACHABLE = "127.0.0.1:1"


def _node(settings: Settings, path: Path, **overrides) -> EdgeNode:
    kafka_config = {**settings.kafka_client_config(), **overrides.pop("kafka", {})}
    return EdgeNode(EdgeConfig(
        node_id="van-07", outbox_path=path, kafka_config=kafka_config,
        topic_mutations=settings.topic_mutations, topic_status=settings.topic_status,
        delivery_timeout_s=overrides.pop("delivery_timeout_s", 10.0),
        backoff=overrides.pop("backoff", Backoff(0.2, 2.0, 2.0)), **overrides,
    ))


def _trip(node: EdgeNode) -> list[str]:
    """A van's offline morning: new customers, sales from stock, an order with lines."""
    ids = []
    for n in range(4):
        ids.append(node.create("customer", f"C-van-{n}", {"name": f"Kiosk {n}", "balance": "0.00"}).id)
    ids.append(node.create("article", "SKU-van-1", {"name": "Water 6x1.5l", "price": "3.49", "active": True}).id)
    ids.append(node.create("stock_level", "VAN7/SKU-van-1", {"warehouse": "VAN7", "sku": "SKU-van-1",
                                                             "quantity": 40}).id)
    for n in range(24):
        ids.append(node.update("stock_level", "VAN7/SKU-van-1", {"quantity": -1}).id)
        ids.append(node.update("customer", f"C-van-{n % 4}", {"balance": "3.49"}).id)
    order = node.create("sales_order", "SO-van-1", {"customer_id": "C-van-0", "status": "NEW", "total": "6.98"})
    ids.append(order.id)
    for line in range(2):
        ids.append(node.create("order_line", f"SO-van-1-{line}", {"order_id": "SO-van-1", "sku": "SKU-van-1",
                                                                   "quantity": 1, "unit_price": "3.49"},
                               dependencies=[order.id]).id)
    ids.append(node.update("sales_order", "SO-van-1", {"status": "CONFIRMED"}).id)
    return ids


def _first_copies_by_entity(records) -> dict[bytes, list[str]]:
    by_entity: dict[bytes, list[str]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition(), r.offset())):
        mutation_id = orjson.loads(record.value())["id"]
        if mutation_id not in by_entity[record.key()]:
            by_entity[record.key()].append(mutation_id)
    return by_entity


def test_an_offline_node_delivers_everything_exactly_once_after_reconnecting(settings, tmp_path):
    path = tmp_path / "van-07.sqlite3"
    with _node(settings, path, kafka={"bootstrap.servers": UNREACHABLE}, delivery_timeout_s=1.0) as offline:
        recorded = _trip(offline)
        expected_order = {e.kafka_key: [] for e in offline.outbox.entries()}
        for entry in offline.outbox.entries():
            expected_order[entry.kafka_key].append(entry.mutation_id)

        report = offline.send(deadline_s=4.0)
        assert report.delivered == 0 and not report.drained
        assert report.rounds >= 2 and len(report.backoff_delays) == report.rounds
        ceilings = [offline.config.backoff.ceiling(attempt) for attempt in range(len(report.backoff_delays))]
        assert ceilings == sorted(ceilings) and ceilings[1] > ceilings[0]  # the waits grow ...
        assert all(delay <= ceiling for delay, ceiling in zip(report.backoff_delays, ceilings))  # ... bounded
        entries = offline.outbox.entries()
        assert {e.state for e in entries} == {EntryState.PENDING}
        assert max(e.attempts for e in entries) == report.rounds
    assert read_topic(settings, settings.topic_mutations) == []

    # The network is back (the node restarts its uplink over the same outbox).
    with _node(settings, path) as node:
        report = node.send(deadline_s=60.0)
        assert report.drained and report.failed == 0
        assert {e.state for e in node.outbox.entries()} == {EntryState.DELIVERED}

        records = read_topic(settings, settings.topic_mutations)
        ids = [orjson.loads(r.value())["id"] for r in records]
        assert sorted(ids) == sorted(recorded)  # every recorded mutation, each once
        assert _first_copies_by_entity(records) == expected_order  # in each entity's recorded order

        run_job(settings)
        ledger = dict(query(settings, "SELECT mutation_id, status FROM mutation_log"))
        assert sorted(ledger) == sorted(recorded)
        assert set(ledger.values()) == {"APPLIED"}
        assert query(settings, "SELECT count(*) FROM mutation_duplicates")[0][0] == 0
        assert query(settings, "SELECT quantity, version FROM stock_level WHERE id = 'VAN7/SKU-van-1'") == [(16, 25)]

        # Acks come back: confirmed entries leave the outbox; versions are learnt.
        assert node.wait_until_decided(deadline_s=30.0)
        assert node.outbox.entries() == []
        versions = dict(query(settings, "SELECT id, version FROM customer"))
        assert {c: node.outbox.known_version("customer", c) for c in versions} == versions

        # The next local change carries the version the job holds, and applies without conflict.
        change = node.update("customer", "C-van-2", {"name": "Kiosk 2 (new owner)"})
        assert change.base_version == versions["C-van-2"]
        assert node.send(deadline_s=30.0).drained
        run_job(settings)
        assert query(settings, "SELECT status, version FROM mutation_log WHERE mutation_id = %s", (change.id,)) == [
            ("APPLIED", versions["C-van-2"] + 1)]
        assert query(settings, "SELECT count(*) FROM conflicts") == [(0,)]
        assert node.wait_until_decided(deadline_s=30.0)
        assert node.outbox.known_version("customer", "C-van-2") == versions["C-van-2"] + 1
