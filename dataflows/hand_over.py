"""The apply step's hand-over of a flush to the commit path (sinks/commit_pipeline.py), and the
resume offsets it records: the parts (operators/parts.py) go to the commit thread in order, at
most IN_FLIGHT_LIMIT in flight (the slots: operators/lane_schedule.py), each recording where a
restart without recovery data resumes.

`HandOver` is a base of `ApplyLogic` (dataflows/apply.py) and works on its state (named in the
class body).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from operators.lane_schedule import LaneSchedule, no_standard_slot, slot_taken, standard_cap
from operators.parts import Offsets, merge_lowest, offsets_ahead, plan_parts
from sinks.after_commit import lowest_offsets
from sinks.commit_pipeline import IN_FLIGHT_LIMIT, BatchReport, CommitPipeline
from sinks.offsets import record_offsets
from sinks.outcomes import Unmet, item_id

if TYPE_CHECKING:
    from dataflows.apply_shard import ShardFlush
    from dataflows.runtime import Place, Runtime
    from operators.sequencer import Sequencer
    from operators.window import Window
    from sinks.postgres import PostgresCommitter


class HandOver:
    """The hand-over steps of the apply step, on the apply step's state."""

    runtime: Runtime
    place: Place | None
    committer: PostgresCommitter
    pipeline: CommitPipeline
    sequencer: Sequencer
    window: Window
    lane_schedule: LaneSchedule
    batch_size: int
    next_offsets: dict[tuple[str, int], int]
    recorded_offsets: Offsets  # the resume offsets last recorded (a settle records them only if changed)
    _sequenced_at: int
    # and ShardSteps' `_flush_publication` and `_shared_write` (dataflows/apply_shard.py)

    def _in_flight_lanes(self) -> list[bool]:
        return [f.lane for f in self.pipeline.in_flight]

    def _standard_cap(self) -> int:
        settings, busy = self.runtime.settings, self.lane_schedule.busy(time.monotonic())
        return standard_cap(self.batch_size, settings.lane_batch_size, settings.lane_commit_target_s,
                            self.pipeline.seconds_per_item, busy)

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
                shard: ShardFlush | None = None, whole: int = 0) -> list[BatchReport]:
        """Hand `items` to the commit thread in parts (operators/parts.py), one transaction at a
        time, in order. Up to IN_FLIGHT_LIMIT parts are left in flight: the dataflow reads, decodes
        and sequences on while they commit, and a later flush (or settle) collects them.

        What is handed over counts as decided for the sequencer at once: its dependants go
        in a later batch, which the commit thread runs only after this one has committed
        (if this one fails, no later batch commits and the job stops).

        The first `whole` items (a release's verdicts) go in the first part, whatever its size.
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
        parts = plan_parts(len(items), first, cap, min(cap, self._standard_cap()) if patient else cap,
                           None if shard is None else self.batch_size, whole)
        ahead = offsets_ahead([lowest_offsets(items[p.start:p.end]) for p in parts])
        held = self._held_offsets()  # the parts' own offsets are in `ahead`; nothing here changes below
        publication = None if shard is None else self._flush_publication(items, parts, shard)
        take_backs = self._sequenced_at  # any take-back since the release: its items go back too
        pipeline = self.pipeline
        for index, part in enumerate(parts):
            if index and (self.runtime.stopping.is_set() or limiter.admit(collect) is None):
                self._hold(items[part.start:])  # SIGTERM: what is in flight ends; the rest waits
                break
            if no_standard_slot(self._in_flight_lanes(), IN_FLIGHT_LIMIT, patient, part.lane):
                self._hold(items[part.start:])  # no slot: the worker reads the lane on meanwhile
                self.window.fresh += len(items) - part.start
                break
            while slot_taken(self._in_flight_lanes(), IN_FLIGHT_LIMIT, patient, part.lane):
                reports += pipeline.collect_one()
            if pipeline.take_backs != take_backs:  # a part in flight lost a claim: these were sequenced after it
                self._hold(items[part.start:])
                break
            in_flight = merge_lowest(*(f.offsets for f in pipeline.in_flight))  # committed before this, acked maybe not
            resume = self._resume_offsets(held, merge_lowest(ahead[index], in_flight))
            batch_id = self.runtime.next_batch_id(self.place.name)
            firsts, copies, shared = ([], [], None) if shard is None else \
                self._shared_write(items, part, shard, publication)
            handed = items[part.start:part.end]
            # Lane items read later may board a standard part until it begins (not a shard's: the lane is
            # a single committer's).
            boardable = patient and shard is None and not part.lane
            pipeline.hand_over(handed, resume, batch_id, part.lane, firsts, copies, shared, boardable)
            self.lane_schedule.handed_over(part.lane)
            self.sequencer.mark_decided(filter(None, map(item_id, handed)))
            self.recorded_offsets = resume
        return reports
