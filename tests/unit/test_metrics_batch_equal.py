"""`record_batch` gives the same samples as the per-outcome loop it replaced (session 8's
code, kept below as the oracle), on a batch with every status, kind and reason."""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections import defaultdict
from datetime import UTC, datetime

import pytest

from bench.after_commit import every_kind, workload_batch
from mutagg.metrics import JobMetrics, observe_many
from mutagg.settings import DEFAULT_REGISTRY
from operators.strategies import CUSTOM_STRATEGIES
from schemas.mutation import Mutation, Reason, Rejection
from schemas.registry import load_registry

EDGE = datetime(2026, 11, 26, 9, 0, tzinfo=UTC).timestamp()  # every_kind's edge time; Kafka's is 2.0-2.2 s later


def record_one_by_one(metrics: JobMetrics, outcomes, batch_seconds: float, committed_at: float) -> None:
    """Session 8's `record_batch`, an outcome at a time (the oracle; no database)."""
    metrics.batch_size.observe(len(outcomes))
    metrics.batch_duration.observe(batch_seconds)
    metrics.note_commit(committed_at)
    by_kind, by_reason, by_status = Tally(), Tally(), Tally()
    reused = 0
    latencies = defaultdict(list)
    for outcome in outcomes:
        by_kind[outcome.kind] += 1
        if outcome.kind == "replayed":
            continue
        if isinstance(outcome.source, Rejection):
            by_reason[outcome.source.code] += 1
            if outcome.source.code == Reason.UNAUTHENTICATED:
                continue
        if outcome.reused:
            reused += 1
        entity = metrics.entity_label(outcome.entity_type)
        by_status[(entity, "DUPLICATE" if outcome.kind == "duplicate" else outcome.status)] += 1
        if outcome.kind != "decided":
            continue
        source = outcome.source
        found = []
        if isinstance(source, Mutation):
            found.append(("edge", committed_at - source.timestamp.timestamp()))
            kafka_ms = source.kafka_timestamp_ms
        else:
            kafka_ms = source.raw.timestamp_ms
        if kafka_ms is not None and kafka_ms >= 0:
            found.append(("kafka", committed_at - kafka_ms / 1000))
        for since, seconds in found:
            latencies[(since, entity)].append(max(0.0, seconds))
    for (since, entity), values in latencies.items():
        observe_many(metrics.latency.labels(since, entity), values)
    if reused:
        metrics.reused_ids.inc(reused)
    for kind, count in by_kind.items():
        metrics.messages.labels(kind).inc(count)
    for reason, count in by_reason.items():
        metrics.dlq.labels(reason).inc(count)
    for (entity, status), count in by_status.items():
        metrics.mutations.labels(entity, status).inc(count)


def samples(metrics: JobMetrics) -> dict:
    """Every sample but creation times and the process collector's."""
    found = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            if sample.name.endswith("_created") or sample.name.startswith("process_"):
                continue
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


@pytest.fixture(scope="module")
def registry():
    return load_registry(str(DEFAULT_REGISTRY), custom_strategies=CUSTOM_STRATEGIES)


def test_record_batch_equals_the_per_outcome_loop(registry):
    kinds = every_kind(registry)
    now = time.time()
    batches = [  # (outcomes, committed at): latencies positive, and clamped (a clock ahead of the commit)
        (kinds, EDGE + 1.0), (workload_batch(registry, 400), now + 100), (list(reversed(kinds)), EDGE + 2.05),
        (workload_batch(registry, 300, seed=9), now + 5000.5), (kinds, EDGE + 86400),
    ]
    assert {o.status for o in kinds} == {"APPLIED", "CONFLICT", "REJECTED", "FAILED"}
    assert {o.kind for o in kinds} == {"decided", "duplicate", "replayed"}
    entity_types = [t.name for t in registry]
    before, after = JobMetrics(entity_types), JobMetrics(entity_types)
    for number, (batch, committed_at) in enumerate(batches):
        record_one_by_one(before, batch, 0.1 * number, committed_at)
        after.record_batch(batch, 0.1 * number, None, committed_at)
    expected = samples(before)
    assert samples(after) == expected
    # The batches reach every reason and both latencies, the clamp included (a stamp after the commit).
    assert {labels[0][1] for (name, labels), v in expected.items() if name == "mutagg_dlq_messages_total" and v} \
        == {v for k, v in vars(Reason).items() if k.isupper()}
    assert expected[("mutagg_end_to_end_latency_seconds_bucket",
                     (("entity_type", "customer"), ("le", "0.01"), ("since", "kafka")))] > 0
