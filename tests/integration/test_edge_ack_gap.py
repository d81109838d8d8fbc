"""A van that comes back after its acks were deleted (issue 20, item 5).

A van delivers its changes and goes offline; the real job decides them and acks;
the status topic's retention then deletes those acks (the test broker checks retention
every second: services/services.sh). Back online, the van's listener finds its stored
offset gone, reads on from the earliest offset, sends every unanswered change again,
and the job answers each copy from its ledger: every change ends in the ledger's status,
and the rejected and conflicting ones reach the ERP with their reasons. Another van whose
position was past its acks (no gap to detect) gets its answers through the resend bound.
"""

from __future__ import annotations

import logging
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

from edge.client import EdgeConfig, EdgeNode
from edge.erp import Outcome, explain
from edge.outbox import AckReport, Outbox
from edge.records import EdgeMutation, EntryState, Operation
from edge.routing import status_partition
from mutagg.settings import Settings
from tests.integration.conftest import query, run_job, settings_env, wait_for

VAN = "van-11"


def _node(settings: Settings, node_id: str, path: Path, **config) -> EdgeNode:
    on_outcome = config.pop("on_outcome", None)
    return EdgeNode(EdgeConfig(
        node_id=node_id, outbox_path=path, kafka_config=settings.kafka_client_config(),
        topic_mutations=settings.topic_mutations, topic_status=settings.topic_status,
        delivery_timeout_s=10.0, **config,
    ), on_outcome=on_outcome)


def _set_status_retention(settings: Settings, **config: str) -> None:
    admin = AdminClient(settings.kafka_client_config())
    resource = ConfigResource("topic", settings.topic_status, incremental_configs=[
        ConfigEntry(name.replace("_", "."), value, incremental_operation=AlterConfigOpType.SET)
        for name, value in config.items()])
    admin.incremental_alter_configs([resource])[resource].result(timeout=30)


def _watermarks(settings: Settings, partition: int) -> tuple[int, int]:
    consumer = Consumer({**settings.kafka_client_config(), "group.id": "test-ack-gap"})
    try:
        return consumer.get_watermark_offsets(TopicPartition(settings.topic_status, partition), timeout=10,
                                              cached=False)
    finally:
        consumer.close()



def _van_trip(settings: Settings, van: EdgeNode, tmp_path: Path) -> list[str]:
    """Two new customers (APPLIED), a change from a version the centre never had (REJECTED),
    and an edit of a field a shop changed meanwhile whose strategy is `manual` (CONFLICT)."""
    ids = [van.create("customer", "C-van-1", {"name": "Kiosk 1", "balance": "0.00"}).id,
           van.create("customer", "C-van-2", {"name": "Kiosk 2", "balance": "0.00"}).id]
    assert van.send(30.0).drained
    with _node(settings, "shop-02", tmp_path / "shop-02.sqlite3") as shop:
        shop.observe({("customer", "C-van-1"): 1})
        shop.update("customer", "C-van-1", {"notes": "call first"})
        assert shop.send(30.0).drained
    ids.append(van.update("customer", "C-van-1", {"notes": "VIP"}).id)
    future = EdgeMutation(van.new_mutation_id(), VAN, "customer", "C-van-2", Operation.UPDATE,
                          {"balance": "9.99"}, 7, datetime.now(UTC))
    van.record(future)
    ids.append(future.id)
    assert van.send(30.0).drained
    return ids


def _poll_until_requeued(node: EdgeNode) -> list[AckReport]:
    reports: list[AckReport] = []
    wait_for(lambda: reports.append(node.receive_acks(0.5)) or reports[-1].requeued, 30.0,
             f"{node.node_id} to send its unanswered changes again", interval_s=0.2)
    return reports


def test_vans_whose_acks_are_gone_get_every_answer(settings, tmp_path, caplog):
    """van-11 was offline past the status topic's retention: its stored offset is gone (the
    gap). van-12's position is past its acks (as if they were written before a position it
    took over): no gap, so only the bound (`requeue_after_s`) brings its answers."""
    path, late_path = tmp_path / f"{VAN}.sqlite3", tmp_path / "van-12.sqlite3"
    partition, late_partition = (status_partition(n, settings.topic_partitions) for n in (VAN, "van-12"))
    with _node(settings, VAN, path) as van:
        van.receive_acks(0.2)  # online once: the listener pins its position
        stored = van.outbox.ack_offsets(settings.topic_status)[partition]
        recorded = _van_trip(settings, van, tmp_path)
    with _node(settings, "van-12", late_path) as late:
        late.receive_acks(0.2)
        late_ids = [late.create("customer", f"C-late-{n}", {"name": f"n{n}"}).id for n in range(2)]
        assert late.send(30.0).drained
    # Both vans are offline now. The job decides everything and acks ...
    run_job(settings)
    ledger = {row[0]: row[1:] for row in query(
        settings, "SELECT mutation_id, status, reason, conflict_ids FROM mutation_log WHERE mutation_id = ANY(%s)",
        (recorded,))}
    assert sorted(status for status, _, _ in ledger.values()) == ["APPLIED", "APPLIED", "CONFLICT", "REJECTED"]
    with Outbox(late_path, "van-12") as outbox:
        outbox.apply_acks([], settings.topic_status, {late_partition: _watermarks(settings, late_partition)[1]})
    _low, end = _watermarks(settings, partition)
    assert end > stored
    # ... and retention deletes the acks.
    _set_status_retention(settings, retention_ms="200", segment_ms="100")
    wait_for(lambda: _watermarks(settings, partition)[0] >= end, 60.0, "retention to delete the acks", interval_s=0.2)
    _set_status_retention(settings, retention_ms="-1")  # what comes now stays

    heard: list[Outcome] = []
    caplog.set_level(logging.WARNING, logger="edge.acks")
    with _node(settings, VAN, path, on_outcome=heard.append) as van, \
            _node(settings, "van-12", late_path, requeue_after_s=1.0, requeue_max_s=60.0) as late:
        assert {e.state for e in van.outbox.entries()} == {EntryState.DELIVERED}
        reports = _poll_until_requeued(van)
        assert sum(r.lost for r in reports) >= end - stored
        assert sum(r.requeued for r in reports) == len(recorded)
        assert any("deleted before it read them" in r.message for r in caplog.records)
        (gap,) = van.outbox.ack_gaps(settings.topic_status)
        assert gap[:2] == (partition, stored) and gap[3] == len(recorded)
        assert {e.state for e in van.outbox.entries()} == {EntryState.PENDING}
        late_reports = _poll_until_requeued(late)
        assert sum(r.requeued for r in late_reports) == len(late_ids) and not any(r.lost for r in late_reports)
        assert late.outbox.ack_gaps(settings.topic_status) == []

        assert van.send(30.0).drained and late.send(30.0).drained
        run_job(settings)
        assert van.wait_until_decided(30.0) and late.wait_until_decided(30.0)

        # Each change ends as the ledger decided it, decided once (the copies are duplicates).
        assert query(settings, "SELECT count(*) FROM mutation_duplicates") == [(len(recorded) + len(late_ids),)]
        assert late.outbox.entries() == []
        for mutation_id in recorded:
            status, reason, conflict_ids = ledger[mutation_id]
            entry = van.outbox.entry(mutation_id)
            if status == "APPLIED":
                assert entry is None, entry
            else:
                assert (entry.state, entry.reason, entry.conflict_ids) == (status, reason, tuple(conflict_ids))
        assert van.outbox.known_version("customer", "C-van-1") == 1  # learnt from the re-ack of its create

        # The ERP heard the rejection and the conflict, with their reasons, once each.
        expected = {i: (s, r, tuple(c)) for i, (s, r, c) in ledger.items() if s != "APPLIED"}
        assert {o.mutation_id: (o.status, o.reason, o.conflict_ids) for o in heard} == expected
        assert len(heard) == len(expected)
        rejected = next(o for o in heard if o.status == "REJECTED")
        assert rejected.reason == "FUTURE_BASE_VERSION" and rejected.attributes == {"balance": "9.99"}
        assert "FUTURE_BASE_VERSION" in explain(rejected)
        van.receive_acks(0.2)
        assert len(heard) == len(expected)  # reported once
    with sqlite3.connect(path) as db:  # the same, for an ERP that reads the outbox file itself
        rows = db.execute("SELECT mutation_id, status, reason FROM erp_outcomes").fetchall()
    assert {m: (s, r) for m, s, r in rows} == {i: (s, r) for i, (s, r, _) in expected.items()}
    shell = subprocess.run([sys.executable, "-m", "edge.node", "--node-id", VAN, "--outbox", str(path), "outcomes"],
                           env=settings_env(settings), capture_output=True, text=True, timeout=60, check=True)
    listed = [line.split("\t") for line in shell.stdout.splitlines()]
    assert {fields[0]: (fields[1], fields[2] or None) for fields in listed} == {
        i: (s, r) for i, (s, r, _) in expected.items()}
