"""`record_batch` on outcomes built from real decoded messages; no broker, no database."""

from __future__ import annotations

import socket
import urllib.request
from datetime import UTC, datetime

import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from mutagg.metrics import LATENCY_BUCKETS, OTHER, JobMetrics, observe_many, serve_job_metrics, start_metrics
from mutagg.settings import DEFAULT_REGISTRY, Settings
from operators.strategies import CUSTOM_STRATEGIES
from schemas.mutation import Mutation, RawMessage, Rejection, decode
from schemas.registry import load_registry
from sinks.outcomes import Outcome

EDGE = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
KAFKA_MS = int(EDGE.timestamp() * 1000) + 2_000
COMMITTED = EDGE.timestamp() + 5.0


@pytest.fixture(scope="module")
def registry():
    return load_registry(str(DEFAULT_REGISTRY), custom_strategies=CUSTOM_STRATEGIES)


def message(registry, offset: int, document: dict | bytes) -> Mutation | Rejection:
    value = document if isinstance(document, bytes) else orjson.dumps(document)
    return decode(RawMessage("edge.mutations", 0, offset, None, value, KAFKA_MS), registry)


def mutation_document(mutation_id: str, entity_type: str = "customer") -> dict:
    return {
        "id": mutation_id, "edge_node_id": "van-1", "entity_type": entity_type, "entity_id": "C1",
        "operation_type": "UPDATE", "attributes": {}, "base_version": 1, "timestamp": EDGE.isoformat(),
        "priority": 5, "dependencies": [],
    }


def outcome(source, kind: str = "decided", status: str = "APPLIED", conflict_ids=()) -> Outcome:
    entity_type = getattr(source, "entity_type", None)
    mutation_id = source.id if isinstance(source, Mutation) else source.mutation_id
    return Outcome(source, kind, mutation_id, status, None, entity_type, "C1", 2, "van-1", tuple(conflict_ids),
                   "b1", "")


def value(metrics: JobMetrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_record_batch_counts_statuses_kinds_latency_and_dlq(registry):
    metrics = JobMetrics(entity_types=[t.name for t in registry])
    applied = message(registry, 1, mutation_document("m1"))
    held = message(registry, 2, mutation_document("m2"))
    broken = message(registry, 3, b"{not json")
    alien = message(registry, 4, mutation_document("m4", entity_type="spaceship"))
    assert isinstance(applied, Mutation) and isinstance(broken, Rejection) and isinstance(alien, Rejection)
    outcomes = [
        outcome(applied), outcome(held, status="CONFLICT", conflict_ids=("c1",)),
        outcome(broken, status="REJECTED"), outcome(alien, status="REJECTED"),
        outcome(applied, kind="replayed"), outcome(held, kind="duplicate", status="CONFLICT"),
    ]
    metrics.record_batch(outcomes, 0.25, connection=None, committed_at=COMMITTED)

    assert value(metrics, "mutagg_mutations_total", entity_type="customer", status="APPLIED") == 1
    assert value(metrics, "mutagg_mutations_total", entity_type="customer", status="CONFLICT") == 1
    assert value(metrics, "mutagg_mutations_total", entity_type="customer", status="DUPLICATE") == 1
    assert value(metrics, "mutagg_mutations_total", entity_type=OTHER, status="REJECTED") == 2  # bounded labels
    assert value(metrics, "mutagg_messages_total", kind="replayed") == 1
    assert value(metrics, "mutagg_dlq_messages_total", reason="INVALID_JSON") == 1
    assert value(metrics, "mutagg_dlq_messages_total", reason="UNKNOWN_ENTITY_TYPE") == 1
    # Edge -> commit is 5 s, Kafka -> commit 3 s, for the two decided mutations.
    assert value(metrics, "mutagg_end_to_end_latency_seconds_sum", since="edge", entity_type="customer") == 10
    assert value(metrics, "mutagg_end_to_end_latency_seconds_sum", since="kafka", entity_type="customer") == 6
    assert value(metrics, "mutagg_end_to_end_latency_seconds_count", since="kafka", entity_type=OTHER) == 2
    assert value(metrics, "mutagg_batch_size_sum") == 6 and value(metrics, "mutagg_batch_size_count") == 1
    assert value(metrics, "mutagg_batch_duration_seconds_sum") == 0.25
    assert value(metrics, "mutagg_last_commit_timestamp_seconds") == COMMITTED
    assert value(metrics, "mutagg_conflicts_total", entity_type="customer", strategy="manual", winner="open") == 0


def test_a_dlq_record_resent_after_a_crash_is_not_counted_again(registry):
    """Issue 18 item 4: a rejection an earlier run decided comes back as `replayed` (its DLQ
    record is re-sent, a repeat); the metric counts each source message once."""
    metrics = JobMetrics(entity_types=[t.name for t in registry])
    alien = message(registry, 4, mutation_document("m4", entity_type="spaceship"))
    metrics.record_batch([outcome(alien, status="REJECTED")], 0.1, committed_at=COMMITTED)
    metrics.record_batch([outcome(alien, kind="replayed", status="REJECTED")], 0.1, committed_at=COMMITTED)
    assert value(metrics, "mutagg_dlq_messages_total", reason="UNKNOWN_ENTITY_TYPE") == 1
    assert value(metrics, "mutagg_messages_total", kind="replayed") == 1


def test_input_gaps_are_counted_per_partition():
    metrics = JobMetrics(entity_types=["customer"])
    metrics.count_input_gap("edge.mutations", 2, 40)
    metrics.count_input_gap("edge.mutations", 2, 2)
    assert value(metrics, "mutagg_input_gap_messages_total", topic="edge.mutations", partition="2") == 42


def test_lag_and_open_conflict_gauges(registry):
    metrics = JobMetrics(entity_types=["customer", "article"])
    metrics.set_consumer_lag("edge.mutations", 3, high_watermark=120, position=100)
    metrics.set_consumer_lag("edge.mutations", 4, high_watermark=10, position=12)  # never negative
    metrics.set_open_conflicts({"customer": 2})
    assert value(metrics, "mutagg_consumer_lag_messages", topic="edge.mutations", partition="3") == 20
    assert value(metrics, "mutagg_consumer_lag_messages", topic="edge.mutations", partition="4") == 0
    assert value(metrics, "mutagg_open_manual_conflicts", entity_type="customer") == 2
    assert value(metrics, "mutagg_open_manual_conflicts", entity_type="article") == 0
    metrics.set_open_conflicts({})
    assert value(metrics, "mutagg_open_manual_conflicts", entity_type="customer") == 0


def test_the_endpoint_serves_the_registry_over_http():
    metrics = JobMetrics(entity_types=["customer"])
    metrics.set_consumer_lag("edge.mutations", 0, 7, 2)
    service = start_metrics(metrics, settings=None, port=0, address="127.0.0.1")
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{service.port}/metrics", timeout=10) as response:
            text = response.read().decode()
    finally:
        service.close()
    assert 'mutagg_consumer_lag_messages{partition="0",topic="edge.mutations"} 5.0' in text
    assert "mutagg_last_commit_timestamp_seconds" in text


def test_the_job_endpoint_is_optional_and_never_fatal():
    metrics = JobMetrics(entity_types=["customer"])
    assert serve_job_metrics(metrics, Settings(), 0) is None  # disabled
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        assert serve_job_metrics(metrics, Settings(), taken.getsockname()[1]) is None  # logged, job goes on


@given(st.lists(st.floats(min_value=0, max_value=1e6, allow_nan=False), max_size=200))
@example([0.0, 0.01, 0.25, 1.0, 86400.0, 1e6])  # on the bucket bounds: `le` is inclusive
def test_observe_many_equals_observing_one_by_one(values):
    one_by_one, at_once = CollectorRegistry(), CollectorRegistry()
    for registry, record in ((one_by_one, None), (at_once, observe_many)):
        histogram = Histogram("h", "h", ["l"], buckets=LATENCY_BUCKETS, registry=registry)
        child = histogram.labels("x")
        if record is None:
            for value in values:
                child.observe(value)
        else:
            record(child, values)
    assert samples(at_once) == samples(one_by_one)


def samples(registry: CollectorRegistry) -> dict:
    """Bucket and count samples exactly, the sum to float precision (summed in another order)."""
    found = {}
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name.endswith("_created"):
                continue
            value = pytest.approx(sample.value, rel=1e-9) if sample.name.endswith("_sum") else sample.value
            found[(sample.name, tuple(sorted(sample.labels.items())))] = value
    return found
