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

from dataflows.runtime import Place, Runtime
from dataflows.shards import shard_of
from mutagg.heartbeat import HEARTBEAT
from operators.decode import DecodedChunk
from operators.lane import lane_first
from operators.sequencer import Sequencer
from operators.shard_view import Others, Publication, publication_of
from schemas.errors import ClaimLost, ConfigError
from schemas.mutation import Mutation, Rejection
from sinks.after_commit import Offsets, lowest_offsets, merge_lowest
from sinks.commit_pipeline import IN_FLIGHT_LIMIT, BatchReport, CommitPipeline
from sinks.fence import CommitMark
from sinks.offsets import record_offsets
from sinks.outcomes import SharedWrite, Unmet, item_id
from sources.kafka import INPUT_POLLS

log = logging.getLogger(__name__)

WAITING_CHECK = timedelta(milliseconds=500)  # held mutations: dependency timeouts are checked this often
SHARDS_ENDING_POLL_S = 0.05  # a shard at its end of input waits this long between reads of the others'
IN_FLIGHT_POLL = timedelta(milliseconds=10)
LANE_ACTIVE_S = 2.0  # the priority lane counts as busy this long after it last gave mutations
LANE_MIN_PART = 500  # standard parts are never made smaller than this for the lane


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


@dataclass(frozen=True, slots=True)
class _ShardFlush:
    """What every part of a shard's flush writes to the shared tables besides its claims."""

    cycles: frozenset
    copies_from: int  # the flush's items from this index on are later copies


class ApplyLogic(StatefulBatchLogic[DecodedChunk, BatchReport, ApplyState]):
    def __init__(self, runtime: Runtime, state: ApplyState | None):
        settings = runtime.settings
        self.runtime = runtime
        runtime.limiter  # noqa: B018 - its sampler starts now: an idle job reports a pause too
        self.batch_size = settings.batch_size
        self.window = timedelta(milliseconds=settings.window_ms)
        self.lane: str | None = runtime.lane  # the priority lane's topic, if the job reads it
        self.routing = runtime.routing
        self.lane_fresh = 0  # lane items admitted since its last flush
        self.lane_seen = float("-inf")  # monotonic time the lane last gave items
        self.standard_since_lane = True  # a standard part was handed over since the last lane part
        self._misrouted_seen: set[str] = set()  # entity types warned about once
        self.place: Place | None = None
        self.shard = 0
        self.shard_ended = False  # a shard of the input: it has read its whole input (a drain)
        self._published: Publication | None = None  # what this shard's last transaction handed over published
        self._sequenced_at = 0  # the pipeline's `take_backs` when the last release was sequenced
        self.restored_mark: CommitMark | None = None
        if state is not None:
            self._bind(state.shard, state)
        elif settings.shards == 1:
            self._bind(0, None)
        # else a shard's step learns its shard from its first chunk (bytewax does not pass the key)
        self.window_closes: datetime | None = None
        self.recorded_offsets: Offsets = {}
        self._flush_at: datetime | None = None
        self.fresh = 0
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
            self.fresh += read
            if chunk.unsigned:
                self.runtime.metrics.count_unsigned(chunk.unsigned)
            if self.routing.enabled:
                self._count_misrouted(chunk)
            if read and chunk.topic == self.lane:
                self.lane_fresh += read
                self.lane_seen = time.monotonic()
        if self.lane is not None:
            return self._lane_step(), self.RETAIN
        if self.fresh >= self.batch_size:
            return self.flush(at_end=False), self.RETAIN
        if self.window_closes is None:
            self.window_closes = datetime.now(UTC) + self.window
        return self.pipeline.collect(wait=False), self.RETAIN

    def on_notify(self) -> tuple[list[BatchReport], bool]:
        if self.lane is not None:
            return self._lane_step(), self.RETAIN
        if self._flush_at is not None and self._flush_at <= datetime.now(UTC):
            return self.flush(at_end=False), self.RETAIN
        return self.pipeline.collect(wait=False), self.RETAIN  # only looking in on the batch in flight

    def _count_misrouted(self, chunk: DecodedChunk) -> None:
        """Count what was read from the input topic its type is not routed to (decided as usual)."""
        lane_types = self.routing.lane_types
        if chunk.topic == self.routing.standard:
            wrong = [m.entity_type for m in chunk.mutations if m.entity_type in lane_types]
        elif chunk.topic == self.routing.lane:
            wrong = [m.entity_type for m in chunk.mutations if m.entity_type not in lane_types]
        else:
            return
        if wrong:
            counts: dict[str, int] = {}
            for entity_type in wrong:
                counts[entity_type] = counts.get(entity_type, 0) + 1
            self.runtime.metrics.count_misrouted(counts)
            self.runtime.stats.misrouted.update(counts)
            for entity_type in counts.keys() - self._misrouted_seen:
                self._misrouted_seen.add(entity_type)
                log.warning(f"misrouted input: {entity_type} read from {chunk.topic}, accepted and decided in that "
                            "topic's order; an entity written to both input topics has no order between them "
                            "(README \"Priority lane\")",
                            extra={"topic": chunk.topic, "entity_type": entity_type,
                                   "routed_to": self.routing.topic_for(entity_type)})

    @property
    def lane_busy(self) -> bool:
        return time.monotonic() - self.lane_seen < LANE_ACTIVE_S

    def _standard_in_flight(self) -> int:
        """Standard parts in flight: lane parts (small, at most one between two standard ones) take
        no slot of theirs, or a lane part at the head of the queue would hold the backlog back."""
        return sum(not f.lane for f in self.pipeline.in_flight)

    def _standard_cap(self) -> int:
        """The size of standard parts while the lane is busy: what commits in about
        `lane_commit_target_s` at the last standard parts' time per mutation, at most
        `lane_batch_size` and at least LANE_MIN_PART; else the batch size."""
        if not self.lane_busy:
            return self.batch_size
        settings = self.runtime.settings
        cap = min(self.batch_size, settings.lane_batch_size)
        seconds_per_item = self.pipeline.seconds_per_item
        if seconds_per_item:
            cap = min(cap, max(LANE_MIN_PART, int(settings.lane_commit_target_s / seconds_per_item)))
        return cap

    def _lane_may_go(self) -> bool:
        """Lane items wait and, while standard parts commit, one went since the last lane part:
        lane and standard parts alternate, so each lane part (a transaction, an audit export,
        acks: a fixed cost) rides on a standard one's time whatever the load; lane items read
        meanwhile join the next one. With no standard work at all, lane items go at once."""
        in_flight = self.pipeline.in_flight
        if not self.lane_fresh or (in_flight and in_flight[-1].lane):
            return False
        idle = self.fresh <= self.lane_fresh and all(f.lane for f in in_flight)  # no standard work
        return self.standard_since_lane or idle

    def _lane_step(self) -> list[BatchReport]:
        """With the priority lane read: never block the worker on a full commit queue (it would
        stop reading the lane too). Lane items go as soon as they are read, in their own part; a
        standard batch waits for a free slot, and while one is held the standard topic pauses."""
        reports = self.pipeline.collect(wait=False)
        now = datetime.now(UTC)
        # One lane part at the tail of the commit queue at most: lane items read meanwhile join the
        # next one (each part is a transaction: many small ones would slow the backlog's drain).
        if self._lane_may_go():
            reports += self.flush(at_end=False, lane_only=True)
        # A backlog goes in full parts as soon as a slot is free (its window would only let lane parts
        # take the commit thread meanwhile); less than a part waits for its window.
        due = self.fresh >= self._standard_cap() or (self._flush_at is not None and self._flush_at <= now)
        if self.fresh and self.window_closes is None:
            self.window_closes = now + self.window
        if due and self._standard_in_flight() < IN_FLIGHT_LIMIT:
            reports += self.flush(at_end=False)
        # Hold off the standard topic while a batch of it waits for a slot (the lane reads on): the
        # backpressure that a worker blocked on the commit queue gives without the lane.
        if self.fresh >= self.batch_size:
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

    def _shard_end(self) -> list[BatchReport]:
        """A shard at the end of its input (a drain). What it holds may wait for other shards'
        commits or event time; so the last of this worker's shards to end flushes all of them
        (Bytewax calls no step again after its end) until none holds anything: the others,
        elsewhere, flush theirs meanwhile, and the protocol decides everything (shard_view.py)."""
        self.shard_ended = True
        steps = self.runtime.worker_steps.get(threading.get_ident(), [self])
        reports = self.flush(at_end=True)
        if not all(step.shard_ended for step in steps):
            return reports
        while True:
            if self.runtime.stopping.is_set():  # SIGTERM: what is held is read again by the next run
                return reports + [r for step in steps for r in step._settle()]
            for step in steps:
                reports += step.flush(at_end=True)
                reports += step._settle()
            if not any(step.sequencer.holding or step.sequencer.rejections for step in steps):
                HEARTBEAT.retire(INPUT_POLLS)  # drained: alive while the cluster's other processes finish
                return reports
            HEARTBEAT.beat(INPUT_POLLS)  # still draining (the inputs' polls, which beat so far, have ended)
            time.sleep(SHARDS_ENDING_POLL_S)  # the other shards' commits and event time come from the database

    def notify_at(self) -> datetime | None:
        now = datetime.now(UTC)
        if self._lane_may_go():
            self._flush_at = now
        elif self.fresh or self.sequencer.rejections:
            self._flush_at = self.window_closes or now
        elif self.sequencer.holding or self._marks_unpublished():
            self._flush_at = self._flush_at or now + max(self.window, WAITING_CHECK)
        else:
            self._flush_at = None
        if not self.pipeline.in_flight:
            return self._flush_at
        poll = now + IN_FLIGHT_POLL  # its acks should not wait for the next flush
        if self.lane is not None and self._standard_in_flight() >= IN_FLIGHT_LIMIT and not self._lane_may_go():
            return poll  # nothing may go before a slot frees: looking in sooner would only spin
        return poll if self._flush_at is None else min(poll, self._flush_at)

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
        self.lane_fresh = 0
        if lane_only:  # the lane's items that may go now, and nothing else (operators/sequencer.py)
            reports = self.pipeline.collect(wait=False)  # what is in flight counts as decided already
            ready = self.sequencer.release(only_topic=self.lane).order
            return reports + self._commit(list(ready), len(ready), patient=True)
        self.window_closes = None
        self._flush_at = None
        self.fresh = 0
        reports = self.pipeline.collect(wait=False)  # what is in flight counts as decided already
        release = self._release(at_end)
        self.runtime.stats.deferred.update(release.deferred)
        self.runtime.metrics.record_deferrals(release.deferred)
        reasons = {m.id: reason for m, reason in release.rejected}
        decided = [Unmet(m, reasons[m.id]) if m.id in reasons else m for m in release.order] if reasons \
            else release.order
        free = 0
        if self.lane is not None:  # without a lane the release's order stands (no copy of it)
            decided, free = lane_first(decided, self.lane)
        # Lane items of a full release lead its first part; a part of their own only when the lane
        # is not read patiently (at the end of input): a transaction more per flush costs the drain.
        first = len(release.invalid) + free if at_end else 0
        items = [*release.invalid, *decided, *release.copies]
        if self.place.name is None:
            return reports + self._commit(items, first, patient=self.lane is not None and not at_end)
        # A shard: every part of this flush writes the shard's state as of now (operators/shard_view.py).
        if not items:  # what is in flight commits first, on the same thread: it is in the ledger by then
            return reports + self._publish(publication_of(self.sequencer, (), (), self.shard_ended))
        shard = _ShardFlush(frozenset(release.cycles), len(items) - len(release.copies))
        return reports + self._commit(items, shard=shard)

    def _marks_unpublished(self) -> bool:
        """A shard's partitions have shown event time its last transaction did not publish."""
        if self.place is None or self.place.name is None:
            return False
        published = self._published
        return published is None or published.marks != self.sequencer.partition_marks

    def _publish(self, publication: Publication) -> list[BatchReport]:
        """A shard with nothing to commit: publish what it holds and its event time, if changed
        (the others wait for them), in a transaction of its own."""
        if publication == self._published:
            return []
        try:
            published = self.pipeline.publish(publication)
        except ClaimLost as lost:  # a copy held here is another partition's: it waits aside
            self.sequencer.set_aside(lost.mutation_ids)
            self._published = None
            return []
        self._published = publication if published else None
        return self.pipeline.collect(wait=False)  # a part in flight that lost its claim is taken back now

    def _release(self, at_end: bool):
        sequencer = self.sequencer
        place = self.place
        if place.name is not None:  # a shard: one read of the others' state, then the single sequencer's rules
            self._sequenced_at = self.pipeline.take_backs
            view = self.pipeline.on_commit_thread(self.committer.read_shared, sequencer.unknown_dependencies())
            sequencer.learn_decided(view.decided)
            return sequencer.release(at_end_of_input=self.shard_ended, node_budget=self.node_budget,
                                     others=Others(view, place.name, place.assignment))
        unknown = sequencer.unknown_dependencies()
        if unknown:  # this waits for the batches in flight
            sequencer.learn_decided(self.pipeline.on_commit_thread(self.committer.decided, unknown))
        return sequencer.release(at_end_of_input=at_end, node_budget=self.node_budget)

    def _hold(self, items: list) -> None:
        """Put released but uncommitted items back, ahead of what waits (entity order is kept),
        so the snapshot and the recorded resume offsets still cover them."""
        self.sequencer.hold([i.mutation if isinstance(i, Unmet) else i for i in items])

    def _held_offsets(self) -> Offsets:
        """Lowest offsets of what this step holds uncommitted, else the next to read."""
        sequencer = self.sequencer
        return merge_lowest(
            self.next_offsets, lowest_offsets(sequencer.waiting), lowest_offsets(sequencer.rejections),
            lowest_offsets(sequencer.copies),
        )

    def _resume_offsets(self, held: Offsets, uncommitted: Offsets | None = None) -> Offsets:
        """Where a restart without recovery data resumes: before anything uncommitted (held,
        about to be committed) or committed but not yet acknowledged; else after what was read."""
        resume = merge_lowest(held, uncommitted or {}, self.pipeline.pending_offsets())
        if self.place.name is None:
            return resume
        own = self.place.partitions  # the other shards record theirs (pending acks are the process's)
        return {key: offset for key, offset in resume.items() if key in own}

    def _settle(self) -> list[BatchReport]:
        """Wait until every batch is committed, exported and acknowledged, then record the
        exact resume offsets, so that a restart re-reads nothing already acknowledged."""
        reports = self.pipeline.settle()
        resume = self._resume_offsets(self._held_offsets())
        if resume and resume != self.recorded_offsets:
            record_offsets(self.committer, resume, f"{self.runtime.run_id}-settled")
            self.recorded_offsets = resume
        return reports

    def _commit(self, items: list, first: int = 0, patient: bool = False,
                shard: _ShardFlush | None = None) -> list[BatchReport]:
        """Hand `items` to the commit thread in batches, one transaction at a time, in order.
        Up to IN_FLIGHT_LIMIT batches are left in flight: the dataflow reads, decodes and
        sequences on while they commit, and a later flush (or settle) collects them.

        What is handed over counts as decided for the sequencer at once: its dependants go
        in a later batch, which the commit thread runs only after this one has committed
        (if this one fails, no later batch commits and the job stops).

        The first `first` items (the priority lane's) go in a part of their own. While the lane
        is read (`patient`), the worker never waits for a slot: what finds none is held for a later
        flush, and standard parts are at most `lane_batch_size` while the lane is busy.

        For a shard of the input (`shard`), each part also writes its claims and the shard's state
        (sinks/postgres.py); a part whose claim another partition holds commits nothing, nor do the
        parts after it: the pipeline takes them all back (`_take_back`)."""
        reports = self.pipeline.collect(wait=False)
        if not items:
            return reports  # nothing to write: a throttle has nothing to hold
        limiter = self.runtime.limiter

        def collect() -> None:
            reports.extend(self.pipeline.collect(wait=False))

        # The throttle (README "Throttle") waits here, before each part, and sets the parts' size.
        cap = limiter.admit(collect)
        if cap is None:  # stopping while throttled: nothing more is written
            self._hold(items)
            return reports
        standard_cap = min(cap, self._standard_cap()) if patient else cap
        starts = [*range(0, first, cap), *range(first, len(items), standard_cap)]
        if shard is not None and cap == self.batch_size and len(items) <= 2 * cap:
            starts = [0]  # one part: what a shard commits in its flush's first part is never published as held
        lane_parts = -(-first // cap)  # the first parts: the lane's items only
        parts = [items[start:end] for start, end in zip(starts, [*starts[1:], len(items)], strict=True)]
        # Per part, the lowest offsets of it and every part after it (all uncommitted when it commits).
        ahead: list[Offsets] = [{}] * (len(parts) + 1)
        for index in range(len(parts) - 1, -1, -1):
            ahead[index] = merge_lowest(lowest_offsets(parts[index]), ahead[index + 1])
        held = self._held_offsets()  # the parts' own offsets are in `ahead`; nothing here changes below
        publication = None if shard is None else self._flush_publication(items, starts, shard)
        take_backs = self._sequenced_at  # any take-back since the release: its items go back too
        pipeline = self.pipeline
        for index, part in enumerate(parts):
            if index and (self.runtime.stopping.is_set() or limiter.admit(collect) is None):
                self._hold(items[starts[index] :])  # SIGTERM: what is in flight ends; the rest waits
                break
            if patient and index >= lane_parts and self._standard_in_flight() >= IN_FLIGHT_LIMIT:
                self._hold(items[starts[index] :])  # no slot: the worker reads the lane on meanwhile
                self.fresh += len(items) - starts[index]
                break
            # A lane part may take one slot more: it waits behind at most the two batches in flight.
            while (self._standard_in_flight() if patient else len(pipeline.in_flight)) >= \
                    IN_FLIGHT_LIMIT + (1 if index < lane_parts else 0):
                reports += pipeline.collect_one()
            if pipeline.take_backs != take_backs:  # a part in flight lost a claim: these were sequenced after it
                self._hold(items[starts[index] :])
                break
            in_flight = merge_lowest(*(f.offsets for f in pipeline.in_flight))  # committed before this, acked maybe not
            resume = self._resume_offsets(held, merge_lowest(ahead[index], in_flight))
            batch_id = self.runtime.next_batch_id(self.place.name)
            firsts: list = []
            copies: list = []
            shared = None
            if shard is not None:
                start, end = starts[index], starts[index] + len(part)
                firsts = _first_copies(items[start:min(end, shard.copies_from)])
                copies = items[max(start, shard.copies_from):end]
                claims = tuple((i, _partition(item)) for item in firsts if (i := item_id(item)) is not None)
                shared = SharedWrite(claims, publication, shard.cycles)
                self._published = publication
            pipeline.hand_over(part, resume, batch_id, index < lane_parts, firsts, copies, shared)
            self.standard_since_lane = index >= lane_parts
            self.sequencer.mark_decided(filter(None, map(item_id, part)))
            self.recorded_offsets = resume
        return reports

    def _flush_publication(self, items: list, starts: list[int], shard: _ShardFlush) -> Publication:
        """What a shard holds uncommitted while the parts of this flush commit: what the sequencer
        holds and the items of every part but the first, which commits with it (the parts in flight
        before commit before it, on the same thread). One for all the flush's parts: a part after the
        first shows items committed already, which only makes the others wait for one more read."""
        rest = items[starts[1]:] if len(starts) > 1 else []
        split = max(0, shard.copies_from - (starts[1] if len(starts) > 1 else 0))
        return publication_of(self.sequencer, _first_copies(rest[:split]), rest[split:], self.shard_ended)

    def _take_back(self, lost: set[str], firsts: list, copies: list) -> None:
        """Parts in flight were taken back (a shard's part lost a claim: it and every part after it
        committed nothing): back into the sequencer, with the claimed ids' copies set aside
        (operators/shard_view.py), and flush again soon."""
        self.sequencer.retract(firsts, copies)
        self.sequencer.set_aside(lost)
        self._published = None
        self.recorded_offsets = {}
        self._flush_at = datetime.now(UTC)
        log.info("claims lost to another shard: batch taken back",
                 extra={"mutation_ids": sorted(lost)[:20], "size": len(firsts) + len(copies)})


def _first_copies(items: list) -> list:
    """A shard's first copies as released (an unmet dependency's verdict: its mutation)."""
    return [i.mutation if type(i) is Unmet else i for i in items]


def _partition(item: Mutation | Rejection) -> tuple[str, int]:
    if type(item) is Mutation:
        return item.topic, item.partition
    return item.raw.topic, item.raw.partition
