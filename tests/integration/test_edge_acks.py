"""The ack listener against the real job's ack producer: a node reads only its own
partition of the status topic (the job's partitioner agrees with the node's), a
fresh node skips history it cannot own, and acks move the outbox exactly once."""

from __future__ import annotations

import orjson
from confluent_kafka import Producer

from edge.client import EdgeConfig, EdgeNode
from edge.routing import status_partition
from tests.integration.conftest import read_topic, run_job


def test_a_fresh_node_skips_old_history_and_receives_its_own_acks(settings, tmp_path):
    node_id = "shop-09"
    # A re-provisioned device: acks under its id from a previous life are on the topic.
    stale = Producer(settings.kafka_client_config())
    for n in range(3):
        stale.produce(settings.topic_status, key=node_id.encode(), value=orjson.dumps({
            "mutation_id": f"old-{n}", "status": "APPLIED", "entity_type": "customer", "entity_id": "C-9",
            "entity_version": 100 + n, "reason": None, "conflict_ids": [],
        }))
    assert stale.flush(30) == 0

    config = EdgeConfig(node_id=node_id, outbox_path=tmp_path / "shop-09.sqlite3",
                        kafka_config=settings.kafka_client_config(), topic_mutations=settings.topic_mutations,
                        topic_status=settings.topic_status, delivery_timeout_s=10.0)
    with EdgeNode(config) as node:
        first = node.receive_acks(1.0)  # pins the end of its partition: history skipped
        assert (first.applied, first.unknown) == (0, 0)
        assert node.outbox.known_version("customer", "C-9") == 0

        created = node.create("customer", "C-9", {"name": "Corner shop", "balance": "0.00"})
        updated = node.update("customer", "C-9", {"balance": "12.00"})
        assert updated.base_version == 0  # nothing acknowledged yet: the edge knows no version
        assert node.send(30.0).drained
        run_job(settings)
        assert node.wait_until_decided(30.0)
        assert node.outbox.entries() == []
        assert node.outbox.known_version("customer", "C-9") == 2

    # Restarted, the node resumes after the acks it applied: nothing is applied twice.
    with EdgeNode(config) as node:
        report = node.receive_acks(1.0)
        assert (report.applied, report.unknown) == (0, 0)

    acks = [r for r in read_topic(settings, settings.topic_status) if r.key() == node_id.encode()]
    partitions = {r.partition() for r in acks}
    assert partitions == {status_partition(node_id, settings.topic_partitions)}  # the job's partitioner agrees
    assert {orjson.loads(r.value())["mutation_id"] for r in acks} >= {created.id, updated.id}
