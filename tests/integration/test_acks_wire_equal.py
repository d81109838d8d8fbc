"""The acks and DLQ records `AckProducer.send` produces are the ones session 8's producer
did (kept below as the oracle: one keyword `produce` with its own delivery callback per
record, the value built by a dict and orjson): the same partition, key, value bytes and
headers, in the same order, for a batch with every status, kind and reason (DESIGN
section 2's wire format). Real broker, ~3 s."""

from __future__ import annotations

import orjson
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from bench.after_commit import every_kind, workload_batch
from mutagg.settings import Settings
from operators.strategies import CUSTOM_STRATEGIES
from schemas.mutation import Rejection
from schemas.registry import load_registry
from sinks.acks import AckProducer, dlq_headers
from tests.integration.conftest import read_topic

pytestmark = pytest.mark.integration


def send_one_by_one(config: dict, status_topic: str, dlq_topic: str, outcomes) -> int:
    """Session 8's `AckProducer.send` (same producer settings), the oracle."""
    errors = []
    producer = Producer({**config, "enable.idempotence": True, "acks": "all", "linger.ms": 5,
                         "compression.type": "lz4", "delivery.report.only.error": True})

    def on_delivery(error, message) -> None:
        if error is not None:
            errors.append(error)

    sent = 0
    for outcome in outcomes:
        if isinstance(outcome.source, Rejection):
            raw = outcome.source.raw
            producer.produce(dlq_topic, value=raw.value, key=raw.key, headers=dlq_headers(outcome.source),
                             on_delivery=on_delivery)
            sent += 1
        if outcome.edge_node_id is not None and outcome.mutation_id is not None:
            value = orjson.dumps({
                "mutation_id": outcome.mutation_id, "status": outcome.status, "entity_type": outcome.entity_type,
                "entity_id": outcome.entity_id, "entity_version": outcome.version, "reason": outcome.reason,
                "conflict_ids": list(outcome.conflict_ids), "batch_id": outcome.batch_id,
                "processed_at": outcome.processed_at,
            })
            producer.produce(status_topic, value=value, key=outcome.edge_node_id.encode(), headers=None,
                             on_delivery=on_delivery)
            sent += 1
    assert producer.flush(30) == 0 and not errors
    return sent


def records(settings: Settings, topic: str) -> list[tuple]:
    """(partition, key, value, headers) in offset order per partition."""
    found = sorted((r.partition(), r.offset(), r.key(), r.value(), tuple(r.headers() or ()))
                   for r in read_topic(settings, topic))
    return [(partition, key, value, headers) for partition, _, key, value, headers in found]


def test_acks_and_dlq_records_are_byte_for_byte_those_of_the_per_record_producer(settings: Settings) -> None:
    registry = load_registry(settings.registry, custom_strategies=CUSTOM_STRATEGIES)
    batch = [*every_kind(registry), *workload_batch(registry, 600)]
    before = [f"{settings.topic_status}.before", f"{settings.topic_dlq}.before"]
    admin = AdminClient(settings.kafka_client_config())
    # As `mutagg topics create` makes them (mutagg/topics.py): the status topic partitioned, the DLQ one partition.
    for future in admin.create_topics([NewTopic(before[0], 4, 1), NewTopic(before[1], 1, 1)]).values():
        future.result(30)
    config = settings.kafka_client_config()

    expected_sent = send_one_by_one(config, *before, batch)
    sent = AckProducer(config, settings.topic_status, settings.topic_dlq, 30.0).send(batch)

    assert sent == expected_sent
    acks, expected_acks = records(settings, settings.topic_status), records(settings, before[0])
    dlq, expected_dlq = records(settings, settings.topic_dlq), records(settings, before[1])
    assert acks == expected_acks and dlq == expected_dlq
    assert len({r[0] for r in acks}) == 4  # keys spread over every partition, as before
    assert len(acks) + len(dlq) == sent and sum(r[1] is None for r in dlq) >= 10
