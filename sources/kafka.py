"""A Kafka source for Bytewax that reads whole polls as chunks, never blocks
forever on an unreachable broker, resumes from recovery snapshots or, without
them, from the offsets recorded in the database, and can stop once drained.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from dataflows.shards import worker_of_partition
from mutagg.heartbeat import HEARTBEAT
from mutagg.retry import Backoff, Retry
from mutagg.security import KafkaErrorWatch, kafka_denied
from schemas.errors import ConfigError, InputGap, ServiceUnavailable
from schemas.mutation import RawMessage
from sources.worker_mark import WorkerMark

log = logging.getLogger(__name__)

INPUT_POLLS = -1
"""The heartbeat key of this process's input polls (workers beat under their index)."""
PAUSE = timedelta(milliseconds=20)  # a partition that gave fewer than TRICKLE records is polled again after this
# A standard partition held back while the priority lane is read (the apply step holds a batch of it)
# is asked again after this: it reads on only after a flush, which waits for a commit slot.
HELD_PAUSE = timedelta(milliseconds=100)
TRICKLE = 500
_WATERMARK_BACKOFF = Backoff(initial_s=1.0, factor=1.0, cap_s=1.0)


@dataclass(frozen=True, slots=True)
class LostRange:
    """Offsets [from_offset, to_offset) of a partition that were gone from the broker when read."""

    topic: str
    partition: int
    from_offset: int
    to_offset: int

    @property
    def messages(self) -> int:
        return self.to_offset - self.from_offset


GapHandler = Callable[[LostRange], None]
"""Told of every lost range before the partition reads on: it records it and raises to stop
the job; when it returns, the partition continues from `to_offset`, the earliest offset left."""


@dataclass(slots=True)
class Chunk:
    """Consecutive records of one partition, in offset order."""

    topic: str
    partition: int
    messages: list[RawMessage]
    caught_up_ms: int | None = None
    """Set on an empty chunk: the partition is at its end at this wall-clock time (a heartbeat)."""
    read_ms: int | None = None
    """Wall-clock time the records were read (for `Settings.event_time_lead_s`)."""


def list_partitions(config: dict, topic: str, deadline_s: float, must_exist: bool = True) -> list[int]:
    """Partition ids of `topic`, retrying an unreachable broker until `deadline_s`.

    A missing topic is a `ConfigError` at once, unless `must_exist` is False (a topic
    just created may take a moment to appear in the metadata): then it is waited for.
    """
    watch = KafkaErrorWatch.for_config(config)  # rejected credentials/certificates: no retry fixes them
    consumer = Consumer({**config, "group.id": "mutagg-metadata", "enable.auto.commit": False, "error_cb": watch})

    def describe() -> list[int]:
        try:
            metadata = consumer.list_topics(topic, timeout=min(10.0, max(1.0, deadline_s)))
        except KafkaException:
            consumer.poll(0)  # serves error_cb
            watch.raise_if_failed()
            raise
        described = metadata.topics.get(topic)
        if described is None:
            raise _NotListed("missing")
        if described.error is None:
            return sorted(described.partitions)
        # an ACL that is missing will not appear by waiting
        denied = kafka_denied(described.error, config.get("bootstrap.servers", ""), config.get("sasl.username"), topic)
        if denied is not None:
            raise denied
        if must_exist and described.error.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise ConfigError(f"Kafka topic {topic!r} does not exist (create it with `mutagg topics create`)")
        raise _NotListed(described.error)

    def give_up(_what: str, _attempts: int, _deadline_s: float, error: BaseException) -> ServiceUnavailable:
        return ServiceUnavailable(f"Kafka unreachable for topic {topic!r} after {deadline_s:.0f}s: {error}")

    try:
        return Retry("Kafka", deadline_s, (KafkaException, _NotListed), Backoff(initial_s=0.5),
                     give_up=give_up, extra={"topic": topic})(describe)
    finally:
        consumer.close()


class _NotListed(Exception):
    """The broker answered without the topic's partitions (yet): tried again until the deadline."""


_GROUP = "mutagg-unused"
"""Never joined and never committed to (manual assignment); its ACL is `Describe` (mutagg/acls.py)."""


class _Partition(StatefulSourcePartition[Chunk, int]):
    def __init__(
        self, config: dict, topic: str, partition: int, offset: int, batch_size: int,
        stop_at_end: bool, deadline_s: float, should_stop: Callable[[], bool], on_gap: GapHandler,
        paused: Callable[[], bool] = lambda: False,
    ):
        self._should_stop = should_stop
        self._paused = paused
        self._watch = KafkaErrorWatch.for_config(config)
        self._consumer = Consumer({
            **config,
            "error_cb": self._watch,
            "group.id": _GROUP,  # offsets live in recovery snapshots and the database
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "fetch.wait.max.ms": 50,
            # librdkafka prefetches up to 64 MiB per partition by default: bound it, the job reads ahead enough.
            "queued.max.messages.kbytes": 8192,
            # An offset no longer on the broker (retention) is an error to handle, never a silent
            # jump to the end (librdkafka's default) that skips everything after it too.
            "auto.offset.reset": "error",
        })
        self._consumer.assign([TopicPartition(topic, partition, offset)])
        self._topic = topic
        self._partition = partition
        self._offset = offset
        self._batch_size = batch_size
        self._stop_at_end = stop_at_end
        self._deadline_s = deadline_s
        self._at_end = False
        self._last_heartbeat_ms = 0
        self._last_healthy = time.monotonic()
        self._slow = False
        self._held = False  # paused by the apply step at the last poll
        self._on_gap = on_gap

    def next_batch(self) -> list[Chunk]:
        if self._at_end or self._should_stop():
            HEARTBEAT.retire(INPUT_POLLS)  # a drained process stays alive while its peers drain theirs
            raise StopIteration()
        HEARTBEAT.beat(INPUT_POLLS)  # what a run --until-idle, which has no heartbeat input, is alive by
        self._held = self._paused()
        if self._held:  # the apply step holds a batch of it already: the priority lane reads on
            return []
        polled = self._consumer.consume(self._batch_size, 0)
        self._watch.raise_if_failed()  # e.g. the password was rotated under a running job
        messages: list[RawMessage] = []
        append = messages.append
        topic, partition = self._topic, self._partition  # the only partition assigned to this consumer
        caught_up = False
        resume_at: int | None = None
        for record in polled:
            error = record.error()
            if error is not None:
                if messages:  # the records before this one count as healthy now
                    self._last_healthy = time.monotonic()
                if error.code() == KafkaError._PARTITION_EOF:
                    # Not `break`: records appended since may follow the event in this same batch,
                    # and the consumer's position is already past them (a tailing job lost them).
                    self._at_end = self._stop_at_end
                    self._last_healthy = time.monotonic()
                    caught_up = True
                    continue
                if error.code() == KafkaError._AUTO_OFFSET_RESET:
                    resume_at = self._gap_at(record.offset())
                    break  # the fetcher stopped at the error; it reads on from `resume_at`
                denied = kafka_denied(error, self._watch.bootstrap, self._watch.username, self._topic, _GROUP)
                if denied is not None:
                    raise denied
                if error.fatal() or time.monotonic() - self._last_healthy > self._deadline_s:
                    raise ServiceUnavailable(
                        f"Kafka partition {self._topic}[{self._partition}] failing for "
                        f"{self._deadline_s:.0f}s: {error}"
                    )
                log.warning("Kafka consume error", extra={"partition": self._partition, "error": str(error)})
                continue
            headers = record.headers()
            # Positionally, in field order: this loop runs once per record, and keywords cost more than the rest.
            append(RawMessage(
                topic, partition, record.offset(), record.key(), record.value(), record.timestamp()[1],
                tuple(headers) if headers else (),
            ))
        if messages:
            self._last_healthy = time.monotonic()
        self._slow = len(messages) < TRICKLE
        if resume_at is not None:
            self._offset = resume_at
        if not messages:
            if caught_up and self._stop_at_end:
                # A drain's last word for the partition, even one it read nothing from: the apply
                # step of its shard then exists, and publishes its end (operators/shard_view.py).
                return [Chunk(self._topic, self._partition, [])]
            now_ms = int(time.time() * 1000)
            if caught_up and not self._stop_at_end and now_ms - self._last_heartbeat_ms >= 1000:
                # Caught up: any later message is stamped after now, so event time may advance.
                self._last_heartbeat_ms = now_ms
                return [Chunk(self._topic, self._partition, [], caught_up_ms=now_ms)]
            return []
        if resume_at is None:
            self._offset = messages[-1].offset + 1
        return [Chunk(self._topic, self._partition, messages, read_ms=int(time.time() * 1000))]

    def _gap_at(self, offset: int) -> int:
        """The fetch at `offset` was out of range: hand the lost range to the gap handler (which
        records it, and raises unless the job is to skip it); return where to read on."""
        low, high = self._watermarks()
        if offset > high:  # not retention: the log is shorter than what was read (recreated topic?)
            raise InputGap(
                f"input partition {self._topic}[{self._partition}] ends at offset {high}, before the "
                f"resume offset {offset}: was the topic deleted and created again?",
                self._topic, self._partition, high, offset)
        if low <= offset:  # in range again by now (a transient error): read on where we were
            low = offset
        else:
            self._on_gap(LostRange(self._topic, self._partition, offset, low))
        self._consumer.assign([TopicPartition(self._topic, self._partition, low)])
        return low

    def _watermarks(self) -> tuple[int, int]:
        def give_up(_what: str, _attempts: int, deadline_s: float, error: BaseException) -> ServiceUnavailable:
            return ServiceUnavailable(f"Kafka partition {self._topic}[{self._partition}]: no watermarks "
                                      f"for {deadline_s:.0f}s: {error}")

        return Retry("Kafka", self._deadline_s, (KafkaException,), _WATERMARK_BACKOFF, give_up=give_up)(
            lambda: self._consumer.get_watermark_offsets(
                TopicPartition(self._topic, self._partition), timeout=10, cached=False))

    def next_awake(self) -> datetime | None:
        # The poll never blocks: a blocking poll (50 ms until `batch_size` records came) held up
        # the other partitions and the apply step's window, ~170 ms of p50 latency at 2,000/s.
        # A partition that is idle or only trickles is asked again after PAUSE instead, so
        # light load does not spin the worker; a backlog is read without a pause. A partition
        # held back (`paused`) waits longer: each poll of it wakes the worker for nothing.
        if self._held:
            return datetime.now(UTC) + HELD_PAUSE
        return datetime.now(UTC) + PAUSE if self._slow else None

    def snapshot(self) -> int:
        return self._offset

    def close(self) -> None:
        self._consumer.close()


class MutationSource(FixedPartitionedSource[Chunk, int]):
    """One Bytewax partition per Kafka partition of the input topics (the standard one and,
    when it exists, the priority lane's: README "Priority lane").

    With `shards` > 1 each worker lists only the partitions whose shard's apply step it runs
    (dataflows/shards.py `worker_of_partition`), so Bytewax makes it their only reader and a
    decoded chunk never crosses to another process. The flow must then add `worker_mark` as an
    input step just before this source's (sources/worker_mark.py). One shard: every worker
    lists every partition and Bytewax spreads them over the workers."""

    def __init__(
        self,
        config: dict,
        topics: Callable[[], list[PartitionKey]],
        batch_size: int,
        stop_at_end: bool,
        deadline_s: float,
        stored_offsets: Callable[[str], dict[int, int]],
        on_gap: GapHandler,
        should_stop: Callable[[], bool] = lambda: False,
        standard: str | None = None,
        paused: Callable[[str], bool] = lambda topic: False,
        read_size: Callable[[str], int] | None = None,
        shards: int = 1,
    ):
        self._shards = shards
        self.worker_mark = WorkerMark()
        self._paused = paused
        self._read_size = read_size
        self._on_gap = on_gap
        self._should_stop = should_stop
        self._config = config
        self._partitions = topics
        self._standard = standard
        self._batch_size = batch_size
        self._stop_at_end = stop_at_end
        self._deadline_s = deadline_s
        self._stored_offsets = stored_offsets

    def list_parts(self) -> list[str]:
        partitions = self._partitions()
        if self._shards > 1:
            # Resume states follow: Bytewax routes a part's snapshot to the one worker that
            # lists it, whatever the worker count of the run that took it (src/inputs.rs).
            worker = self.worker_mark.take()
            partitions = [(topic, p) for topic, p in partitions
                          if worker_of_partition(p, self._shards, worker.count) == worker.index]
            if not partitions:
                log.warning("this worker reads no input partition: it owns no shard (fewer shards than workers, "
                            "README \"Scale\")", extra={"worker": worker.index, "workers": worker.count,
                                                          "shards": self._shards})
                if self._stop_at_end:
                    HEARTBEAT.retire(INPUT_POLLS)  # a drain with nothing to read: alive while the others drain
        return [part_name(topic, p, self._standard) for topic, p in partitions]

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _Partition:
        topic, partition = parse_part(for_part, self._standard)
        if resume_state is None:
            offset = self._stored_offsets(topic).get(partition, OFFSET_BEGINNING)
        else:
            offset = resume_state
        log.info("reading partition", extra={"topic": topic, "partition": partition, "offset": offset})
        size = self._batch_size if self._read_size is None else self._read_size(topic)
        return _Partition(
            self._config, topic, partition, offset, size,
            self._stop_at_end, self._deadline_s, self._should_stop, self._on_gap,
            lambda: self._paused(topic),
        )


PartitionKey = tuple[str, int]
_LANE_PART = "@"


def part_name(topic: str, partition: int, standard: str | None) -> str:
    """The Bytewax part of a Kafka partition: its number for the standard input topic (the names
    recovery snapshots taken before the lane hold), `topic@number` for any other."""
    return str(partition) if topic == standard or standard is None else f"{topic}{_LANE_PART}{partition}"


def parse_part(name: str, standard: str | None) -> PartitionKey:
    topic, _, number = name.rpartition(_LANE_PART)
    if not topic:
        if standard is None:
            raise ValueError(f"part {name!r} names no topic")
        return standard, int(number)
    return topic, int(number)


def input_partitions(config: dict, topics: tuple[str, ...], standard: str, deadline_s: float) -> list[PartitionKey]:
    """Every partition of the input topics. The standard one must exist; another that does not
    (the priority lane before `mutagg topics create` made it) is left out with one warning."""
    found: list[PartitionKey] = []
    for topic in topics:
        try:
            partitions = list_partitions(config, topic, deadline_s)
        except ConfigError:
            if topic == standard:
                raise
            log.warning("the priority lane is off: its topic does not exist (README \"Priority lane\"; "
                        "create it with `mutagg topics create`, then restart the job)", extra={"topic": topic})
            continue
        found += [(topic, p) for p in partitions]
    return found
