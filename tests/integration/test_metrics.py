"""The metrics endpoint against the ledger: messages read from the real broker,
committed by the real Postgres sink, counted by `record_batch`, scraped over HTTP."""

from __future__ import annotations

import math
import time
import urllib.request
from collections import Counter, defaultdict

import pytest
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, ResourceType
from prometheus_client.parser import text_string_to_metric_families

from mutagg.metrics import OTHER, JobMetrics, start_metrics
from mutagg.producer import produce
from mutagg.refresher import StateRefresher
from mutagg.workload import Workload
from operators.strategies import CUSTOM_STRATEGIES
from schemas.mutation import Mutation, RawMessage, Rejection, decode
from schemas.registry import load_registry
from sinks.outcomes import Batch
from sinks.postgres import PostgresCommitter
from tests.integration.conftest import query, read_topic

pytestmark = pytest.mark.integration


def scrape(port: int) -> dict[str, list]:
    """Samples by name: [(labels, value), ...]."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples: dict[str, list] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name].append((sample.labels, sample.value))
    return samples


def by(samples: list, *labels: str) -> Counter:
    totals: Counter = Counter()
    for sample_labels, value in samples:
        if value:
            totals[tuple(sample_labels[label] for label in labels)] += value
    return totals


def test_scraped_counters_match_the_ledger(settings):
    registry = load_registry(settings.registry, custom_strategies=CUSTOM_STRATEGIES)
    produce(settings, Workload(seed=21).generate(1200))
    records = read_topic(settings, settings.topic_mutations)
    by_partition: dict[int, list] = defaultdict(list)
    for record in records:
        raw = RawMessage(record.topic(), record.partition(), record.offset(), record.key(), record.value(),
                         record.timestamp()[1], tuple(record.headers() or ()))
        by_partition[raw.partition].append(decode(raw, registry))
    held_back = max(by_partition)  # this partition is never committed: its lag is all of it

    metrics = JobMetrics(entity_types=[t.name for t in registry])
    service = start_metrics(metrics, settings, port=0, address="127.0.0.1", refresh_interval_s=0.2)
    committer = PostgresCommitter(settings.database_url, registry, CUSTOM_STRATEGIES)
    outcomes_seen, batches, replayed = [], 0, 0
    try:
        for partition, items in sorted(by_partition.items()):
            if partition == held_back:
                continue
            for start in range(0, len(items), 150):
                part = items[start : start + 150]
                resume = {(settings.topic_mutations, partition): part[-1].raw.offset + 1
                          if isinstance(part[-1], Rejection) else part[-1].offset + 1}
                began = time.perf_counter()
                outcomes = committer.commit(Batch(part, resume), f"test-{partition}-{start}")
                metrics.record_batch(outcomes, time.perf_counter() - began, committer.connection)
                outcomes_seen += outcomes
                batches += 1
        # The same messages again (a restart without recovery data): re-acknowledged, not counted twice.
        again = committer.commit(Batch(by_partition[min(by_partition)][:40]), "test-replay")
        metrics.record_batch(again, 0.01, committer.connection)
        replayed = sum(o.kind == "replayed" for o in again)
        batches += 1

        sizes = Counter(record.partition() for record in records)
        expected_lag = Counter({(str(held_back),): sizes[held_back]})  # committed partitions: no lag
        deadline = time.monotonic() + 15
        while True:  # until the refresher has run after the last commit
            samples = scrape(service.port)
            lag = by(samples["mutagg_consumer_lag_messages"], "partition")
            if lag == expected_lag or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        committer.close()
        service.close()

    # Mutations by entity type and final status: the ledger, plus unreadable rejects and duplicates.
    known = {t.name for t in registry}
    expected: Counter = Counter()
    for entity_type, status, count in query(
        settings, "SELECT entity_type, status, count(*) FROM mutation_log GROUP BY 1, 2"
    ):
        expected[(entity_type if entity_type in known else OTHER, status)] += count
    expected[(OTHER, "REJECTED")] += sum(1 for o in outcomes_seen if o.mutation_id is None)
    for outcome in outcomes_seen:
        if outcome.kind == "duplicate":
            expected[(outcome.entity_type if outcome.entity_type in known else OTHER, "DUPLICATE")] += 1
    assert by(samples["mutagg_mutations_total"], "entity_type", "status") == expected
    assert query(settings, "SELECT count(*) FROM mutation_duplicates")[0][0] == sum(
        1 for o in outcomes_seen if o.kind == "duplicate")
    assert by(samples["mutagg_messages_total"], "kind")[("replayed",)] == replayed == 40

    conflicts = Counter({tuple(row[:3]): row[3] for row in query(
        settings, "SELECT entity_type, strategy, COALESCE(winner, 'open'), count(*) FROM conflicts GROUP BY 1, 2, 3")})
    assert conflicts and by(samples["mutagg_conflicts_total"], "entity_type", "strategy", "winner") == conflicts

    rejections = [o for o in outcomes_seen + again if isinstance(o.source, Rejection)]
    assert rejections and sum(v for _l, v in samples["mutagg_dlq_messages_total"]) == len(rejections)

    decided = [o for o in outcomes_seen if o.kind == "decided"]
    latency = by(samples["mutagg_end_to_end_latency_seconds_count"], "since")
    assert latency[("kafka",)] == len(decided)
    assert latency[("edge",)] == sum(isinstance(o.source, Mutation) for o in decided)
    assert samples["mutagg_batch_size_count"][0][1] == batches
    assert samples["mutagg_batch_size_sum"][0][1] == len(outcomes_seen) + len(again)
    assert samples["mutagg_batch_duration_seconds_count"][0][1] == batches
    assert samples["mutagg_last_commit_timestamp_seconds"][0][1] > time.time() - 60

    # Gauges refreshed from the broker and the database.
    assert lag == expected_lag
    open_now = dict(query(settings, "SELECT entity_type, count(*) FROM conflicts WHERE status = 'OPEN' GROUP BY 1"))
    gauge = {labels["entity_type"]: value for labels, value in samples["mutagg_open_manual_conflicts"]}
    assert {k: v for k, v in gauge.items() if v} == open_now


def test_the_capacity_gauges_come_from_the_broker_and_the_process(settings):
    """What the dashboard's capacity row divides: the input's end offsets (input rate), its
    retention.ms in seconds (+Inf for -1), and the process collector's CPU and memory."""
    produce(settings, Workload(seed=5).generate(60))
    sizes = Counter(record.partition() for record in read_topic(settings, settings.topic_mutations))
    metrics = JobMetrics(entity_types=["customer"])
    sample = metrics.registry.get_sample_value
    StateRefresher(metrics, settings).refresh_once()
    topic = settings.topic_mutations
    assert {p: sample("mutagg_input_end_offset", {"topic": topic, "partition": str(p)}) for p in range(4)} == {
        p: sizes[p] for p in range(4)}
    assert sample("mutagg_input_retention_seconds", {"topic": topic}) == settings.topic_retention_input_ms / 1000
    assert sample("process_cpu_seconds_total") > 0 and sample("process_resident_memory_bytes") > 0

    resource = ConfigResource(ResourceType.TOPIC, topic, incremental_configs=[
        ConfigEntry("retention.ms", "-1", incremental_operation=AlterConfigOpType.SET)])
    admin = AdminClient(settings.kafka_client_config())
    for future in admin.incremental_alter_configs([resource]).values():
        future.result(timeout=30)
    StateRefresher(metrics, settings).refresh_once()  # a new process reads it at its first refresh
    assert sample("mutagg_input_retention_seconds", {"topic": topic}) == math.inf
