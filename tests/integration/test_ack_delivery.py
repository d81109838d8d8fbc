"""Acknowledgements are confirmed by the broker before `AckProducer.send` returns, and a
broker that refuses them stops the job (bytewax's own KafkaSink would drop the error).

The producer asks librdkafka for failed deliveries only: these tests show that a
refusal still reaches `send`, and that delivered acks are on the topic when it returns.
"""

from __future__ import annotations

import time

import orjson
import pytest
from confluent_kafka.admin import AdminClient, NewTopic

from mutagg.settings import Settings
from mutagg.workload import Workload
from operators.strategies import CUSTOM_STRATEGIES
from schemas.errors import ServiceUnavailable
from schemas.mutation import Mutation, RawMessage, decode
from schemas.registry import load_registry
from sinks.acks import AckProducer
from sinks.outcomes import Outcome
from tests.integration.conftest import read_topic

pytestmark = pytest.mark.integration


def _outcomes(settings: Settings, count: int) -> list[Outcome]:
    registry = load_registry(settings.registry, custom_strategies=CUSTOM_STRATEGIES)
    now_ms = int(time.time() * 1000)
    outcomes = []
    for offset, message in enumerate(Workload(seed=3).generate(2 * count)):
        mutation = decode(RawMessage("edge", 0, offset, message.key, message.value, now_ms), registry)
        if not isinstance(mutation, Mutation):  # the workload holds invalid messages too
            continue
        outcomes.append(Outcome(
            mutation, "decided", mutation.id, "APPLIED", None, mutation.entity_type, mutation.entity_id, 1,
            mutation.edge_node_id, (), "batch-1", "2026-11-27T00:00:00+00:00",
        ))
    assert len(outcomes) >= count
    return outcomes[:count]


def _topic(settings: Settings, name: str, **config: str) -> str:
    admin = AdminClient(settings.kafka_client_config())
    for future in admin.create_topics([NewTopic(name, 1, 1, config=config)]).values():
        future.result(30)
    return name


def test_delivered_acks_are_on_the_topic_when_send_returns(settings: Settings) -> None:
    outcomes = _outcomes(settings, 200)
    producer = AckProducer(settings.kafka_client_config(), settings.topic_status, settings.topic_dlq, 30.0)
    assert producer.send(outcomes) == 200
    acks = [orjson.loads(record.value()) for record in read_topic(settings, settings.topic_status)]
    assert sorted(a["mutation_id"] for a in acks) == sorted(o.mutation_id for o in outcomes)


def test_acks_the_broker_refuses_fail_the_send(settings: Settings) -> None:
    # Every ack is larger than the topic admits: the broker refuses each one, for good.
    tiny = _topic(settings, f"{settings.topic_status}.tiny", **{"max.message.bytes": "64"})
    producer = AckProducer(settings.kafka_client_config(), tiny, settings.topic_dlq, 30.0)
    with pytest.raises(ServiceUnavailable, match="acknowledgements not delivered"):
        producer.send(_outcomes(settings, 5))
    # The errors were handed over once: a later send that is delivered succeeds.
    delivered = AckProducer(settings.kafka_client_config(), settings.topic_status, settings.topic_dlq, 30.0)
    assert delivered.send(_outcomes(settings, 1)) == 1
