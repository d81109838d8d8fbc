"""The gauges of a running job that come from outside the flow, refreshed on their own thread:
consumer lag per partition (broker high watermark minus the committed position in
`source_offsets`) in messages and in time (the age of the oldest message not committed), the
input's end offsets and its retention (re-read every few minutes), open manual conflicts, the
latest `mutagg verify` result, and the last commit the database recorded (`job_commits`: a job
that restarts in a loop does not look fresh). Each refresh tells the heartbeat whether the
database and the broker answered (readiness, mutagg/heartbeat.py).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psycopg
from confluent_kafka import TIMESTAMP_NOT_AVAILABLE, Consumer, KafkaException, TopicPartition

from mutagg.heartbeat import HEARTBEAT
from mutagg.periodic import Periodic
from mutagg.settings import Settings
from mutagg.topics import input_retention_s

if TYPE_CHECKING:
    from mutagg.metrics import JobMetrics

log = logging.getLogger(__name__)

RETENTION_REREAD_S = 300.0
"""How often the input topic's retention.ms is read again (an operator may change it; one DescribeConfigs)."""


PartitionLabel = int | str


@dataclass(frozen=True, slots=True)
class LagSnapshot:
    """The input partitions as the last broker lookup found them (`measured_at`: Unix seconds):
    `oldest_ms` holds the Kafka timestamp of the oldest uncommitted message of each lagging
    partition; a partition in `partitions` but not in `oldest_ms` or `unknown` has no lag."""

    measured_at: float
    partitions: tuple[PartitionLabel, ...]
    """The standard input topic's partitions by number, the priority lane's as `topic:number`."""
    oldest_ms: dict[PartitionLabel, int] = field(default_factory=dict)
    unknown: frozenset[PartitionLabel] = frozenset()  # lagging, but its oldest message could not be read

    def delays(self, now: float) -> dict[PartitionLabel, float | None]:
        """Seconds each partition is behind at `now` (None: lagging by an unknown time)."""
        return {p: None if p in self.unknown else max(0.0, now - self.oldest_ms[p] / 1000) if p in self.oldest_ms
                else 0.0 for p in self.partitions}


class StateRefresher(Periodic):
    """Refreshes the gauges that come from the database and the broker every `interval_s` in a
    daemon thread, and tells the heartbeat whether each answered (readiness)."""

    def __init__(self, metrics: JobMetrics, settings: Settings, interval_s: float = 15.0):
        super().__init__("mutagg-metrics", interval_s)
        self.metrics = metrics
        self.settings = settings
        self._connection: psycopg.Connection | None = None
        self._consumer: Consumer | None = None
        # (topic, partition) -> (committed position, Kafka timestamp in ms of the message there):
        # refetched only when the position moves
        self._oldest: dict[tuple[str, int], tuple[int, int]] = {}
        self._retention_read_at: float | None = None
        self._snapshot: LagSnapshot | None = None
        self._snapshot_lock = threading.Lock()

    def lag_snapshot(self) -> LagSnapshot | None:
        """The latest lag lookup (any thread); None before the first one succeeded."""
        with self._snapshot_lock:
            return self._snapshot

    def tick(self) -> None:
        self.refresh_once()

    def finish(self) -> None:
        if self._connection is not None:
            self._connection.close()
        if self._consumer is not None:
            self._consumer.close()

    def refresh_once(self) -> None:
        """One refresh; a failure is logged and counted, and tried again next time."""
        try:
            positions = self._database()
        except psycopg.Error as exc:
            self.metrics.refresh_errors.labels("database").inc()
            HEARTBEAT.looked_up("database", False, str(exc))
            log.warning("metrics: database lookup failed", extra={"error": str(exc)[:300]})
            if self._connection is not None:
                self._connection.close()
            self._connection = None
            return
        HEARTBEAT.looked_up("database", True)
        try:
            self._lag(positions)
        except KafkaException as exc:
            self.metrics.refresh_errors.labels("kafka").inc()
            HEARTBEAT.looked_up("kafka", False, str(exc))
            log.warning("metrics: broker lookup failed", extra={"error": str(exc)[:300]})
            return
        HEARTBEAT.looked_up("kafka", True)
        self._retention()

    def _retention(self) -> None:
        """The input topic's retention, at the first refresh the broker answered and every few minutes;
        a failed read (logged) leaves the gauge as it was and does not touch readiness."""
        now = time.monotonic()
        if self._retention_read_at is not None and now - self._retention_read_at < RETENTION_REREAD_S:
            return
        self._retention_read_at = now
        seconds = input_retention_s(self.settings)
        if seconds is not None:
            self.metrics.set_input_retention(self.settings.topic_mutations, seconds)

    def _database(self) -> dict[tuple[str, int], int]:
        if self._connection is None or self._connection.closed:
            self._connection = psycopg.connect(
                self.settings.database_url, autocommit=True, connect_timeout=10, application_name="mutagg-metrics")
        connection = self._connection
        counts = dict(connection.execute(
            "SELECT entity_type, count(*) FROM conflicts WHERE status = 'OPEN' GROUP BY 1").fetchall())
        self.metrics.set_open_conflicts(counts)
        self._verification(connection)
        self._last_commit(connection)
        rows = connection.execute(
            "SELECT kafka_topic, kafka_partition, next_offset FROM source_offsets WHERE kafka_topic = ANY(%s)",
            (list(self.settings.input_topics()),)).fetchall()
        return {(topic, partition): offset for topic, partition, offset in rows}

    def _verification(self, connection: psycopg.Connection) -> None:
        """Export the latest `mutagg verify` run, if any (a schema migrated before verify_runs has none)."""
        try:
            latest = connection.execute(
                "SELECT counts, extract(epoch FROM finished_at)::float8, (SELECT extract(epoch FROM max(finished_at))"
                "::float8 FROM verify_runs WHERE problems = 0) FROM verify_runs ORDER BY finished_at DESC LIMIT 1"
            ).fetchone()
        except psycopg.errors.UndefinedTable:
            return
        if latest is not None:
            self.metrics.set_verification(*latest)

    def _last_commit(self, connection: psycopg.Connection) -> None:
        """The last batch any run committed, as the database recorded it: at start too, so a job
        that restarts in a loop without committing does not look fresh."""
        try:
            latest = connection.execute(
                "SELECT extract(epoch FROM max(updated_at))::float8 FROM job_commits").fetchone()
        except psycopg.errors.UndefinedTable:  # a schema before job_commits
            return
        if latest is not None and latest[0] is not None:
            self.metrics.note_commit(latest[0])

    def _lag(self, positions: dict[tuple[str, int], int]) -> None:
        if self._consumer is None:
            self._consumer = Consumer({
                **self.settings.kafka_client_config(), "group.id": "mutagg-metrics", "enable.auto.commit": False,
                # The oldest message not committed: when retention deleted the committed position, the earliest left.
                "auto.offset.reset": "earliest",
                # It reads one message per lagging partition: no 64 MiB read-ahead per partition (the default).
                "max.partition.fetch.bytes": 65536,
                "fetch.max.bytes": 1 << 20,
                "queued.max.messages.kbytes": 1024,
            })
        now_ms = time.time() * 1000
        labels: list[PartitionLabel] = []
        oldest: dict[PartitionLabel, int] = {}
        unknown: set[PartitionLabel] = set()
        for topic in self.settings.input_topics():  # the priority lane's (if it exists) and the standard one
            described = self._consumer.list_topics(topic, timeout=10).topics.get(topic)
            if described is None or described.error is not None:
                if topic == self.settings.topic_mutations:
                    return
                continue
            self.metrics.expect_partitions(topic, described.partitions)
            behind: dict[int, int] = {}
            for partition in sorted(described.partitions):
                low, high = self._consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
                position = positions.get((topic, partition), low)
                self.metrics.set_consumer_lag(topic, partition, high, position)
                if position < high:
                    behind[partition] = max(position, low)
            self._lag_in_time(topic, described.partitions, behind, now_ms)
            for partition in sorted(described.partitions):
                label = partition if topic == self.settings.topic_mutations else f"{topic}:{partition}"
                labels.append(label)
                if partition in behind:
                    if (topic, partition) in self._oldest:
                        oldest[label] = self._oldest[(topic, partition)][1]
                    else:
                        unknown.add(label)
        snapshot = LagSnapshot(now_ms / 1000, tuple(labels), oldest, frozenset(unknown))
        with self._snapshot_lock:
            self._snapshot = snapshot

    def _lag_in_time(self, topic: str, partitions: Iterable[int], behind: dict[int, int], now_ms: float) -> None:
        """Age of the message at each lagging partition's committed position (its Kafka timestamp)."""
        for partition in partitions:
            if partition not in behind:
                self._oldest.pop((topic, partition), None)
                self.metrics.set_lag_seconds(topic, partition, 0.0)
        fetch = {p: offset for p, offset in behind.items() if self._oldest.get((topic, p), (None,))[0] != offset}
        if fetch:
            self._oldest.update({(topic, p): (behind[p], ms) for p, ms in self._timestamps(topic, fetch).items()})
        for partition in behind:
            if (topic, partition) in self._oldest:
                self.metrics.set_lag_seconds(
                    topic, partition, (now_ms - self._oldest[(topic, partition)][1]) / 1000)

    def _timestamps(self, topic: str, offsets: dict[int, int], timeout_s: float = 5.0) -> dict[int, int]:
        """Kafka timestamp (ms) of the message at each partition's offset (or the first after it)."""
        consumer = self._consumer
        assert consumer is not None
        found: dict[int, int] = {}
        consumer.assign([TopicPartition(topic, p, offset) for p, offset in offsets.items()])
        try:
            give_up_at = time.monotonic() + timeout_s
            while len(found) < len(offsets) and time.monotonic() < give_up_at:
                for record in consumer.consume(len(offsets), 0.5):
                    kind, ms = record.timestamp()
                    if record.error() is None and record.partition() not in found and kind != TIMESTAMP_NOT_AVAILABLE:
                        found[record.partition()] = ms
        finally:
            consumer.unassign()
        return found
