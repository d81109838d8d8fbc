"""The stateful step that windows decoded mutations, sequences them, and hands
micro-batches to the commit path (sinks/commit_pipeline.py: hand-over, prepare
ahead, transaction, collect, audit and acks, and the thread each runs on).

Batches go to the commit thread in order, up to two at a time, so this step reads
and sequences on while they commit; a batch handed over counts as decided for the
sequencer (its dependants go in a later batch, and a batch never commits after one
that failed).

Exactly-once effect: the commit happens inside this step and its acks follow on
the after-commit thread, which a snapshot waits for; so when Bytewax snapshots an
epoch, everything the epoch read is either committed and acknowledged or still
held in the snapshot. Offsets recorded with each commit stay before anything not
yet acknowledged. A replay of anything later is recognised by the ledger and only
re-acknowledged.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bytewax.operators import StatefulBatchLogic

from dataflows.apply_shard import ShardSteps
from dataflows.hand_over import HandOver
from dataflows.runtime import Runtime
from dataflows.shards import shard_of
from operators.decode import DecodedChunk
from operators.lane import lane_first, misrouted
from operators.lane_schedule import LANE_MIN_PART, LaneSchedule, lane_blocked, standard_in_flight
from operators.sequencer import Release, Sequencer
from operators.window import Window
from schemas.errors import ConfigError
from schemas.mutation import Mutation, Rejection
from sinks.after_commit import Offsets
from sinks.commit_pipeline import IN_FLIGHT_LIMIT, BatchReport, CommitPipeline
from sinks.fence import CommitMark
from sinks.outcomes import Unmet, item_id

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ApplyState:
    """What survives a crash: held mutations, unsent rejections, read positions."""

    waiting: tuple[list[Mutation], dict[tuple[str, int], int]]
    rejections: list[Rejection]
    next_offsets: dict[tuple[str, int], int]
    committed: CommitMark | None = None
    """The job's count of its commits when the snapshot was taken: a database holding fewer lost
    them, and this snapshot is ahead of it (sinks/fence.py). None in snapshots older than it."""
    shard: int = 0
    shards: int = 1
    """Which shard of how many this step committed (settings.shards; older snapshots: the whole input)."""


class ApplyLogic(ShardSteps, HandOver, StatefulBatchLogic[DecodedChunk, BatchReport, ApplyState]):
    """Bytewax's apply step: windows, sequences and hands parts over. The rules: operators/window.py,
    operators/lane_schedule.py, operators/parts.py; the hand-over and the resume offsets:
    dataflows/hand_over.py; a shard's steps: dataflows/apply_shard.py."""

    def __init__(self, runtime: Runtime, state: ApplyState | None):
        settings = runtime.settings
        self.runtime = runtime
        runtime.limiter  # noqa: B018 - its sampler starts now: an idle job reports a pause too
        self.batch_size = settings.batch_size
        self.window = Window(timedelta(milliseconds=settings.window_ms))
        self.lane: str | None = runtime.lane  # the priority lane's topic, if the job reads it
        self.routing = runtime.routing
        self.lane_schedule = LaneSchedule()
        self._misrouted_seen: set[str] = set()  # entity types warned about once
        self.place = None
        self.shard = 0
        self.shard_ended = False
        self._published = None
        self._sequenced_at = 0
        self.restored_mark: CommitMark | None = None
        if state is not None:
            self._bind(state.shard, state)
        elif settings.shards == 1:
            self._bind(0, None)
        # else a shard's step learns its shard from its first chunk (bytewax does not pass the key)
        self.recorded_offsets: Offsets = {}
        share = settings.node_share
        self.node_budget = max(1, int(share * self.batch_size)) if 0 < share < 1 else None

    def _bind(self, shard: int, state: ApplyState | None) -> None:
        """Take up shard `shard`'s place (settings.shards), restoring `state` if any."""
        runtime = self.runtime
        shards = runtime.settings.shards
        if state is not None and state.shards != shards:
            raise ConfigError(
                f"the recovery snapshots were taken with {state.shards} shard(s) of the input and the job now "
                f"has {shards} (MUTAGG_SHARDS): the held mutations of one would be lost to the other. Set it "
                f"back to {state.shards}, or let a run with it drain the input (mutagg run --until-idle), "
                "empty the recovery directory, and start with the new count")
        self.shard = shard
        self.place = place = runtime.place(shard)
        self.committer = place.committer
        self.pipeline = CommitPipeline(place.committer, place.commits, runtime.after_commit,
                                       runtime.limiter.committed, self._take_back, timed_from=LANE_MIN_PART)
        timeout_ms = int(runtime.settings.dependency_timeout_s * 1000)
        if state is None:
            self.sequencer = Sequencer(dependency_timeout_ms=timeout_ms, partitions=place.partitions)
            self.next_offsets: dict[tuple[str, int], int] = {}
        else:
            self.sequencer = Sequencer.restore(state.waiting, timeout_ms, state.rejections, place.partitions)
            self.next_offsets = dict(state.next_offsets)
            self.restored_mark = state.committed
        if self.restored_mark is not None:  # raises DatabaseBehind
            self.pipeline.on_commit_thread(
                self.committer.verify_held, self.restored_mark, "resuming from a recovery snapshot")
        if place.name is not None:
            runtime.worker_steps.setdefault(threading.get_ident(), []).append(self)

    def on_batch(self, values: list[DecodedChunk]) -> tuple[list[BatchReport], bool]:
        if self.place is None:
            self._bind(shard_of(values[0].partition, self.runtime.settings.shards), None)
        for chunk in values:
            # The chunk's event time, not each record's (capped by the read time when
            # MUTAGG_EVENT_TIME_LEAD_S is set; otherwise the same value: the chunk's maximum).
            self.sequencer.admit(chunk.mutations, chunk.rejections)
            self.sequencer.observe(chunk.topic, chunk.partition, chunk.event_time_ms)
            if chunk.next_offset is not None:
                self.next_offsets[(chunk.topic, chunk.partition)] = chunk.next_offset
            read = len(chunk.mutations) + len(chunk.rejections)
            self.window.fresh += read
            if chunk.unsigned:
                self.runtime.metrics.count_unsigned(chunk.unsigned)
            if self.routing.enabled:
                self._count_misrouted(chunk)
            if read and chunk.topic == self.lane:
                self.lane_schedule.read(read, time.monotonic())
        if self.lane is not None:
            return self._lane_step(), self.RETAIN
        if self.window.full(self.batch_size):
            return self.flush(at_end=False), self.RETAIN
        self.window.open(datetime.now(UTC))
        return self.pipeline.collect(wait=False), self.RETAIN

    def on_notify(self) -> tuple[list[BatchReport], bool]:
        if self.lane is not None:
            return self._lane_step(), self.RETAIN
        if self.window.due(datetime.now(UTC)):
            return self.flush(at_end=False), self.RETAIN
        return self.pipeline.collect(wait=False), self.RETAIN  # only looking in on the batch in flight

    def _count_misrouted(self, chunk: DecodedChunk) -> None:
        """Count what was read from the input topic its type is not routed to (decided as usual)."""
        counts = misrouted(self.routing, chunk.topic, [m.entity_type for m in chunk.mutations])
        if counts:
            self.runtime.metrics.count_misrouted(counts)
            self.runtime.stats.misrouted.update(counts)
            for entity_type in counts.keys() - self._misrouted_seen:
                self._misrouted_seen.add(entity_type)
                log.warning(f"misrouted input: {entity_type} read from {chunk.topic}, accepted and decided in that "
                            "topic's order; an entity written to both input topics has no order between them "
                            "(README \"Priority lane\")",
                            extra={"topic": chunk.topic, "entity_type": entity_type,
                                   "routed_to": self.routing.topic_for(entity_type)})

    def _lane_may_go(self) -> bool:
        return self.lane_schedule.may_go(self.window.fresh, self._in_flight_lanes(), self.pipeline.boardable(),
                                         time.monotonic())

    def _lane_step(self) -> list[BatchReport]:
        """With the priority lane read: never block the worker on a full commit queue (it would
        stop reading the lane too). Lane items go as soon as they are read: riding the newest
        standard part in flight while its transaction has not begun, else in their own part; a
        standard batch waits for a free slot, and while one is held the standard topic pauses."""
        reports = self.pipeline.collect(wait=False)
        now = datetime.now(UTC)
        # A backlog goes in full parts as soon as a slot is free (its window would only let lane parts
        # take the commit thread meanwhile); less than a part waits for its window. First: its release
        # takes the lane's free items too, and its newest part takes the lane's riders next.
        due = self.window.full(self._standard_cap()) or self.window.due(now)
        if self.window.fresh:
            self.window.open(now)
        if due and standard_in_flight(self._in_flight_lanes()) < IN_FLIGHT_LIMIT:
            reports += self.flush(at_end=False)
        # Otherwise one lane part at the tail of the commit queue at most: lane items read meanwhile
        # join the next one (each part is a transaction: many small ones would slow the backlog's drain).
        if self._lane_may_go():
            reports += self.flush(at_end=False, lane_only=True)
        # Hold off the standard topic while a batch of it waits for a slot (the lane reads on): the
        # backpressure that a worker blocked on the commit queue gives without the lane.
        if self.window.full(self.batch_size):
            self.runtime.standard_paused.set()
        else:
            self.runtime.standard_paused.clear()
        return reports

    def on_eof(self) -> tuple[list[BatchReport], bool]:
        if self.runtime.stopping.is_set():
            # A stop request (SIGTERM) also ends the input, but not the log. The batch in
            # flight has committed; what is held is left uncommitted, and the restart re-reads
            # it from the offsets recorded here (or from the recovery snapshot). Stopping
            # stays fast whatever was read ahead.
            return self._settle(), self.RETAIN
        if self.place.name is not None:
            return self._shard_end(), self.RETAIN
        reports = self.flush(at_end=True)
        return reports + self._settle(), self.RETAIN

    def notify_at(self) -> datetime | None:
        now = datetime.now(UTC)
        may_go = self._lane_may_go()
        waiting = self.sequencer.holding or self._marks_unpublished()
        self.window.schedule(now, may_go, bool(self.sequencer.rejections), waiting)
        in_flight = self._in_flight_lanes()
        blocked = self.lane is not None and lane_blocked(in_flight, IN_FLIGHT_LIMIT, may_go)
        return self.window.wake_at(now, bool(in_flight), blocked)

    def snapshot(self) -> ApplyState:
        # What the snapshot no longer holds must be acknowledged before it is taken.
        self._settle()
        mark = self.committer.committed
        if mark is None or mark.batches == 0:
            mark = self.restored_mark  # this run has committed nothing yet: the positions are still those
        return ApplyState(self.sequencer.snapshot(), list(self.sequencer.rejections), dict(self.next_offsets), mark,
                          self.shard, self.runtime.settings.shards)

    def flush(self, at_end: bool, lane_only: bool = False) -> list[BatchReport]:
        """Commit everything that may go now, in batches, and acknowledge it: the priority lane's
        items first, in a part of their own (`lane_only`: only them; the rest waits on)."""
        self.runtime.faults.hit("hang_worker")  # liveness tests: a worker stuck in a step
        self.lane_schedule.flushed()
        if lane_only:  # the lane's items that may go now, and nothing else (operators/sequencer.py)
            reports = self.pipeline.collect(wait=False)  # what is in flight counts as decided already
            ready = list(self.sequencer.release(only_topic=self.lane).order)
            if ready and self.pipeline.board(ready):  # riding the newest part in flight (sinks/commit_pipeline.py)
                self.lane_schedule.boarded_at(time.monotonic())
                self.sequencer.mark_decided(filter(None, map(item_id, ready)))
                return reports
            return reports + self._commit(ready, len(ready), patient=True)
        self.window.flushed()
        reports = self.pipeline.collect(wait=False)  # what is in flight counts as decided already
        release = self._release(at_end)
        self.runtime.stats.deferred.update(release.deferred)
        self.runtime.metrics.record_deferrals(release.deferred)
        verdicts, decided = verdicts_first(release)
        free = 0
        if self.lane is not None:  # without a lane the release's order stands (no copy of it)
            decided, free = lane_first(decided, self.lane)
        # Lane items of a full release lead its first part (after the verdicts); a part of their own
        # only when the lane is not read patiently (at the end of input): a transaction more per flush
        # costs the drain.
        first = len(verdicts) + len(release.invalid) + free if at_end else 0
        items = [*verdicts, *release.invalid, *decided, *release.copies]
        if self.place.name is not None:  # a shard: every part writes the shard's state too
            return reports + self._shard_flush(items, release, whole=len(verdicts))
        return reports + self._commit(items, first, patient=self.lane is not None and not at_end,
                                      whole=len(verdicts))

    def _release(self, at_end: bool) -> Release:
        if self.place.name is not None:  # a shard: one read of the others' state, then the single sequencer's rules
            return self._shard_release()
        sequencer = self.sequencer
        unknown = sequencer.unknown_dependencies()
        if unknown:  # this waits for the batches in flight
            sequencer.learn_decided(self.pipeline.on_commit_thread(self.committer.decided, unknown))
        return sequencer.release(at_end_of_input=at_end, node_budget=self.node_budget)


def verdicts_first(release: Release) -> tuple[list[Unmet], list[Mutation]]:
    """(the release's verdicts, `Unmet`: a dependency cycle or one missing; the rest of its order).
    The verdicts lead the flush and commit together in its first transaction, whatever the size of
    its parts (`plan_parts`' `whole`), ahead of the invalid copies and the priority lane's items.

    A verdict may rest on another: the members of a cycle are rejected together, and a part held
    back after an earlier one committed (a stop between parts, the throttle, a crash) returns its
    items as plain mutations, judged again later. A cycle member judged again after its partner's
    rejection committed would find its dependency decided and apply. (A shard's verdict on another
    shard's member rests on the cycle rows every part of the flush carries, and they stay until the
    member commits.) A rejection changes no entity, so its place among the items decides nothing
    else. (`release.order` is `ready` and `rejected` merged, each kept in its order: the two
    groups are those lists.)"""
    return [Unmet(m, reason) for m, reason in release.rejected], release.ready
