"""Prometheus metrics of a running job (DESIGN section 8), served over HTTP.

One `JobMetrics` per process, on its own registry. The after-commit thread makes one call
after each commit, `record_batch(outcomes, seconds, connection)`; a `StateRefresher` thread
(mutagg/refresher.py) keeps the gauges that come from the database and the broker: lag in
messages and in time, the input's end offsets and retention, open manual conflicts, the latest
verify run, and the last commit the database recorded. The process collector (CPU seconds,
resident memory) is on the same registry: the dashboard's capacity row divides them by the
mutation rate. Every counter with a status, kind or reason label starts at 0 for each
value, so that `increase()` sees the first FAILED.
`start_metrics(metrics, settings, port)` starts the refresher and the HTTP endpoint (/metrics,
/healthz, /readyz: mutagg/endpoint.py) and returns a handle to close.
"""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_left
from collections import Counter as Tally
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter
from wsgiref.simple_server import WSGIServer

import psycopg
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

from mutagg.endpoint import Probes, serve_endpoint
from mutagg.heartbeat import HEARTBEAT
from mutagg.refresher import StateRefresher
from mutagg.settings import Settings
from operators.throttle import REASONS as THROTTLE_REASONS
from schemas.mutation import Reason, Rejection, Status
from sinks.outcomes import Outcome

log = logging.getLogger(__name__)

OTHER = "_other"
"""Label for an entity type the registry does not declare (or none): bounds label cardinality."""
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 14400, 86400)
BATCH_SIZE_BUCKETS = (1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
MESSAGE_KINDS = ("decided", "replayed", "duplicate")
REASONS = tuple(sorted(value for name, value in vars(Reason).items() if name.isupper()))
PREPARED_RESULTS = ("used", "stale", "not_prepared", "paused", "shares_ids", "failed")
LOOKUP_SOURCES = ("database", "kafka")


class JobMetrics:
    """The job's metrics on a private registry (several jobs may live in one test process)."""

    def __init__(self, entity_types: Iterable[str], registry: CollectorRegistry | None = None):
        self.entity_types = frozenset(entity_types)
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.mutations = Counter(
            "mutagg_mutations", "Messages decided, by final status (DUPLICATE: id decided before)",
            ["entity_type", "status"], registry=r)
        self.messages = Counter(
            "mutagg_messages", "Messages acknowledged, by kind (decided, replayed, duplicate)",
            ["kind"], registry=r)
        self.reused_ids = Counter(
            "mutagg_reused_ids", "Duplicates whose id was first read in another partition: an id a client "
            "reused for another entity (recorded in mutation_duplicates with content_differs)", registry=r)
        self.latency = Histogram(
            "mutagg_end_to_end_latency_seconds", "From the edge timestamp or the Kafka timestamp to commit",
            ["since", "entity_type"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram(
            "mutagg_batch_size", "Messages per committed micro-batch", buckets=BATCH_SIZE_BUCKETS, registry=r)
        self.batch_duration = Histogram(
            "mutagg_batch_duration_seconds", "Commit and acknowledgement time of a micro-batch",
            buckets=DURATION_BUCKETS, registry=r)
        self.last_commit = Gauge(
            "mutagg_last_commit_timestamp_seconds", "When the last batch committed: this process's, or the "
            "last one recorded in the database (job_commits) by any run; 0 until one is known",
            registry=r)
        self.conflicts = Counter(
            "mutagg_conflicts", "Conflicts detected, by strategy and winner (open: held for a person)",
            ["entity_type", "strategy", "winner"], registry=r)
        self.dlq = Counter(
            "mutagg_dlq_messages", "Input messages dead-lettered. A DLQ record re-sent after a crash for a message "
            "an earlier run decided (its ledger row says so) is not counted again; only a message without a "
            "ledger row (no readable id, or UNAUTHENTICATED) in flight at the crash can count twice",
            ["reason"], registry=r)
        self.unsigned = Counter(
            "mutagg_unsigned", "Input messages read without a mutagg-sig header (counted when read: a message "
            "re-read after a crash counts again). Without a master key they are accepted; with one, those that "
            "name an edge node are dead-lettered UNAUTHENTICATED (README \"Edge signatures\")", registry=r)
        self.misrouted = Counter(
            "mutagg_misrouted", "Input messages read from the input topic their entity type is not routed to "
            "(a lane type on the standard topic or the reverse: README \"Priority lane\"); accepted and decided "
            "in their own topic's order all the same (counted when read: a re-read counts again)",
            ["entity_type"], registry=r)
        self.input_gaps = Counter(
            "mutagg_input_gap_messages", "Input offsets deleted from the broker before the job read them "
            "(recorded in input_gaps; the job stops unless MUTAGG_ON_INPUT_GAP=skip)",
            ["topic", "partition"], registry=r)
        self.held_back = Counter(
            "mutagg_fair_share_deferrals",
            "Times an edge node's fair share pushed its mutations behind other nodes' (a flood)",
            registry=r,
        )
        self.lag = Gauge(
            "mutagg_consumer_lag_messages", "High watermark minus committed position", ["topic", "partition"],
            registry=r)
        self.end_offset = Gauge(
            "mutagg_input_end_offset", "The input partition's high watermark (the offset its next message gets): "
            "its rate is the input rate", ["topic", "partition"], registry=r)
        self.retention = Gauge(
            "mutagg_input_retention_seconds", "The input topic's retention.ms in seconds, as the broker reports "
            "it (+Inf: kept forever): a lag in time beyond it loses input", ["topic"], registry=r)
        self.lag_seconds = Gauge(
            "mutagg_consumer_lag_seconds", "Age of the oldest input message not committed yet (now minus its "
            "Kafka timestamp; at the committed position); 0 without lag", ["topic", "partition"], registry=r)
        self.open_conflicts = Gauge(
            "mutagg_open_manual_conflicts", "Conflicts held for a person (status OPEN)", ["entity_type"], registry=r)
        self.prepared = Counter(
            "mutagg_prepared_batches",
            "Batches decided ahead of their transaction (prepared), and how each was taken: used; stale "
            "(a row or ledger entry changed meanwhile, e.g. a foreign writer or a second instance: decided "
            "again inside the transaction); not_prepared; paused (not decided ahead: too many went stale); "
            "shares_ids; failed",
            ["result"], registry=r)
        self.refresh_errors = Counter(
            "mutagg_metrics_errors", "Failed metric lookups (database or broker)", ["source"], registry=r)
        self.verify_problems = Gauge(
            "mutagg_verify_problems", "Problems the latest `mutagg verify` found (or left after --repair), by check "
            "(gaps, acks, audit, versions); read from verify_runs", ["check"], registry=r)
        self.verify_last_run = Gauge(
            "mutagg_verify_last_run_timestamp_seconds", "When the latest `mutagg verify` finished", registry=r)
        self.verify_last_success = Gauge(
            "mutagg_verify_last_success_timestamp_seconds",
            "When the latest `mutagg verify` that found no problem (or repaired all) finished", registry=r)
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
        self.throttled = Gauge(
            "mutagg_throttled", "1 while the throttle holds or slows the job's writes for this reason: manual "
            "(`mutagg throttle on`), replication_lag, active_backends, commit_latency (README \"Throttle\")",
            ["reason"], registry=r)
        self.batch_size_limit = Gauge(
            "mutagg_batch_size_limit", "The throttle's cap on a batch's size now (batch_size when not throttled)",
            registry=r)
        for reason in THROTTLE_REASONS:
            self.throttled.labels(reason).set(0)
        self._last_commit_at = 0.0
        self._last_commit_lock = threading.Lock()
        self._zero_counters()
        self._latency_children: dict[tuple[str, str], Histogram] = {}

    def _zero_counters(self) -> None:
        """Every label value a counter can take with a status, kind, reason, result or source,
        at 0: a series born at its first increment is invisible to `increase()` (no sample before)."""
        for entity in sorted(self.entity_types | {OTHER}):
            for status in Status:
                self.mutations.labels(entity, status.value)
        for kind in MESSAGE_KINDS:
            self.messages.labels(kind)
        for reason in REASONS:
            self.dlq.labels(reason)
        for result in PREPARED_RESULTS:
            self.prepared.labels(result)
        for source in LOOKUP_SOURCES:
            self.refresh_errors.labels(source)

    def expect_partitions(self, topic: str, partitions: Iterable[int]) -> None:
        """The input's partitions are known: their gap counters start at 0 (see `_zero_counters`)."""
        for partition in partitions:
            self.input_gaps.labels(topic, str(partition))

    def note_commit(self, committed_at: float) -> None:
        """A commit at `committed_at` (this process's, or the database's latest): the gauge keeps the latest."""
        with self._last_commit_lock:  # the after-commit thread and the refresher both report
            if committed_at > self._last_commit_at:
                self._last_commit_at = committed_at
                self.last_commit.set(committed_at)

    def _latency_child(self, since: str, entity: str) -> Histogram:
        child = self._latency_children.get((since, entity))
        if child is None:
            child = self._latency_children[(since, entity)] = self.latency.labels(since, entity)
        return child

    def entity_label(self, entity_type: str | None) -> str:
        return entity_type if entity_type in self.entity_types else OTHER

    def count_prepared(self, result: str) -> None:
        """One batch decided ahead, or taken by its transaction (see `PrepareAheadOn.count`)."""
        self.prepared.labels(result).inc()

    def count_input_gap(self, topic: str, partition: int, messages: int) -> None:
        """Offsets of one partition lost to retention (`sinks/gaps.py`)."""
        self.input_gaps.labels(topic, str(partition)).inc(messages)

    def count_unsigned(self, messages: int) -> None:
        """Messages read without a signature (`DecodedChunk.unsigned`)."""
        if messages:
            self.unsigned.inc(messages)

    def count_misrouted(self, by_type: dict[str, int]) -> None:
        """Messages read from the input topic their type is not routed to (schemas/routing.py)."""
        for entity_type, count in by_type.items():
            self.misrouted.labels(self.entity_label(entity_type)).inc(count)

    def record_deferrals(self, deferred: dict[str, int]) -> None:
        """Fair-share reordering of one release (not labelled by node: node ids are unbounded)."""
        total = sum(deferred.values())
        if total:
            self.held_back.inc(total)

    def record_batch(
        self,
        outcomes: Sequence[Outcome],
        batch_seconds: float,
        connection: psycopg.Connection | None = None,
        committed_at: float | None = None,
    ) -> None:
        """Count one committed batch: the `Outcome`s `PostgresCommitter.commit` returned.

        With `connection` (e.g. the committer's), the new conflicts are counted by
        strategy and winner (one primary-key lookup); metrics never fail the batch.
        """
        committed_at = time.time() if committed_at is None else committed_at
        self.batch_size.observe(len(outcomes))
        self.batch_duration.observe(batch_seconds)
        self.note_commit(committed_at)
        # Counted per batch, then added once per label set: per-outcome `labels()` calls cost
        # as much as a tenth of the job's time; one lean pass, no call per outcome.
        by_kind: Tally = Tally(map(_KIND, outcomes))  # counted in C
        by_reason: Tally = Tally()
        statuses: list[tuple[str, str]] = []
        reused = 0
        new_conflicts: list[str] = []
        latencies: dict[tuple[str, str], list[float]] = defaultdict(list)  # (since, entity) -> seconds
        known = self.entity_types
        for outcome in outcomes:
            kind = outcome.kind
            if kind == "replayed":
                continue  # decided (and counted) by an earlier run: its DLQ record is a repeat
            source = outcome.source
            rejected = isinstance(source, Rejection)
            if rejected:
                by_reason[source.code] += 1
                if source.code == Reason.UNAUTHENTICATED:
                    continue  # a forgery is no mutation (DESIGN section 2): only the DLQ counts it
            if outcome.reused:
                reused += 1
            entity = outcome.entity_type
            if entity not in known:
                entity = OTHER
            statuses.append((entity, "DUPLICATE" if kind == "duplicate" else outcome.status))
            if kind != "decided":
                continue
            if outcome.conflict_ids:
                new_conflicts.extend(outcome.conflict_ids)
            if rejected:
                kafka_ms = source.raw.timestamp_ms
            else:
                seconds = committed_at - source.timestamp.timestamp()
                latencies[("edge", entity)].append(seconds if seconds > 0.0 else 0.0)  # clocks disagree: 0
                kafka_ms = source.kafka_timestamp_ms
            if kafka_ms is not None and kafka_ms >= 0:
                seconds = committed_at - kafka_ms / 1000
                latencies[("kafka", entity)].append(seconds if seconds > 0.0 else 0.0)
        by_status: Tally = Tally(statuses)  # counted in C
        breakdown: list[tuple[str, str, str, int]] = []
        if new_conflicts and connection is not None:
            try:
                breakdown = conflict_breakdown(connection, new_conflicts)
            except psycopg.Error as exc:
                self.refresh_errors.labels("database").inc()
                log.warning("conflict metrics skipped", extra={"error": str(exc)[:300]})
        # Everything read first, then added: a scrape that sees this batch's mutations in
        # `mutagg_mutations_total` (added last) sees the rest of the batch too. The database
        # query between two increments let a scrape see the mutations without their conflicts.
        for (since, entity), values in latencies.items():
            observe_many(self._latency_child(since, entity), values)
        if reused:
            self.reused_ids.inc(reused)
        for kind, count in by_kind.items():
            self.messages.labels(kind).inc(count)
        for reason, count in by_reason.items():
            self.dlq.labels(reason).inc(count)
        for entity_type, strategy, winner, count in breakdown:
            self.conflicts.labels(self.entity_label(entity_type), strategy, winner).inc(count)
        for (entity, status), count in by_status.items():
            self.mutations.labels(entity, status).inc(count)

    def set_consumer_lag(self, topic: str, partition: int, high_watermark: int, position: int) -> None:
        """Lag of one partition: messages the job has not committed yet; and its end offset."""
        self.end_offset.labels(topic, str(partition)).set(high_watermark)
        self.lag.labels(topic, str(partition)).set(max(0, high_watermark - position))

    def set_input_retention(self, topic: str, seconds: float) -> None:
        self.retention.labels(topic).set(seconds)

    def set_lag_seconds(self, topic: str, partition: int, seconds: float) -> None:
        self.lag_seconds.labels(topic, str(partition)).set(max(0.0, seconds))

    def set_verification(self, counts: dict[str, dict[str, int]], last_run: float, last_success: float | None) -> None:
        """The latest `mutagg verify` result (`verify_runs`): problems per check and its times."""
        for check, problems in counts.items():
            self.verify_problems.labels(check).set(sum(problems.values()))
        self.verify_last_run.set(last_run)
        if last_success is not None:
            self.verify_last_success.set(last_success)

    def set_open_conflicts(self, counts: dict[str, int]) -> None:
        for entity_type in self.entity_types | set(counts):
            self.open_conflicts.labels(self.entity_label(entity_type)).set(counts.get(entity_type, 0))


def observe_many(child: Histogram, values: list[float]) -> None:
    """`child.observe(v)` for every v, with one increment per bucket instead of per value.
    Uses prometheus_client's histogram internals (0.2x); a unit test compares the result
    with observing one value at a time."""
    bounds = child._upper_bounds
    for index, count in Tally(bisect_left(bounds, v) for v in values).items():
        child._buckets[index].inc(count)
    child._sum.inc(sum(values))


_KIND = attrgetter("kind")


def conflict_breakdown(connection: psycopg.Connection, conflict_ids: list[str]) -> list[tuple[str, str, str, int]]:
    """(entity type, strategy, winner or "open", count) of these conflicts."""
    with connection.transaction(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT entity_type, strategy, COALESCE(winner, 'open'), count(*) FROM conflicts "
            "WHERE conflict_id = ANY(%s) GROUP BY 1, 2, 3",
            (sorted(set(conflict_ids)),),
        )
        return cursor.fetchall()


@dataclass
class MetricsService:
    """The HTTP endpoint (/metrics, /healthz, /readyz) and the refresher thread; `close()` stops both."""

    server: WSGIServer
    thread: threading.Thread
    refresher: StateRefresher | None

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def close(self) -> None:
        if self.refresher is not None:
            self.refresher.close()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)


def start_metrics(
    metrics: JobMetrics,
    settings: Settings | None,
    port: int,
    address: str = "0.0.0.0",
    refresh_interval_s: float = 15.0,
) -> MetricsService:
    """Serve /metrics, /healthz and /readyz on `port` (0: any free port) and, given settings,
    refresh the gauges (readiness then also needs the database and the broker to answer)."""
    known = settings or Settings()
    # A wait on a dependency is the job's own business until its service deadline (it exits 3 then).
    probes = Probes(HEARTBEAT, known.heartbeat_timeout_s, known.service_deadline_s + known.heartbeat_timeout_s)
    server = serve_endpoint(metrics.registry, probes, port, address)
    thread = threading.Thread(target=server.serve_forever, name="mutagg-endpoint", daemon=True)
    thread.start()
    refresher = None
    if settings is not None:
        HEARTBEAT.expect(*LOOKUP_SOURCES)
        refresher = StateRefresher(metrics, settings, refresh_interval_s).start()
    log.info("metrics endpoint listening", extra={"port": server.server_address[1]})
    return MetricsService(server, thread, refresher)


def serve_job_metrics(
    metrics: JobMetrics, settings: Settings, port: int, process_id: int | None = None
) -> MetricsService | None:
    """The job's endpoint: `port` (+ the process index, so a cluster on one host does not
    collide); 0 disables it. A port already taken is logged, not fatal: metrics must
    never stop the job."""
    if not port:
        return None
    try:
        # The central state (mutagg/central_state.py) publishes the lag this refresher looks up.
        refresh_s = min(15.0, settings.central_state_interval_s or 15.0)
        return start_metrics(metrics, settings, port + (process_id or 0), refresh_interval_s=refresh_s)
    except OSError as exc:
        log.warning("metrics endpoint not started", extra={"port": port, "error": str(exc)})
        return None
