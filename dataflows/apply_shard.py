"""The apply step's part for a shard of the input (settings.shards > 1): what it reads of the
others' state before a release, what each part of its flush writes to the shared tables, what it
publishes when it has nothing to commit, how a part that lost a claim comes back, and how the
shards of a worker end their input together. The protocol itself: operators/shard_view.py.

`ShardSteps` is a base of `ApplyLogic` (dataflows/apply.py) and works on its state (named in the
class body); with the whole input on one committer only `_take_back` and `_marks_unpublished`
are called, and neither acts.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from mutagg.heartbeat import HEARTBEAT
from operators.parts import Part, after_first, split_copies
from operators.shard_view import Others, Publication, publication_of
from schemas.errors import ClaimLost
from schemas.mutation import Mutation, Rejection
from sinks.outcomes import SharedWrite, Unmet, item_id
from sources.kafka import INPUT_POLLS

if TYPE_CHECKING:
    from dataflows.runtime import Place, Runtime
    from operators.sequencer import Release, Sequencer
    from operators.window import Window
    from sinks.after_commit import Offsets
    from sinks.commit_pipeline import BatchReport, CommitPipeline
    from sinks.postgres import PostgresCommitter

log = logging.getLogger("dataflows.apply")  # the apply step's logger: its log lines keep their name

SHARDS_ENDING_POLL_S = 0.05  # a shard at its end of input waits this long between reads of the others'


@dataclass(frozen=True, slots=True)
class ShardFlush:
    """What every part of a shard's flush writes to the shared tables besides its claims."""

    cycles: frozenset
    copies_from: int  # the flush's items from this index on are later copies


class ShardSteps:
    """A shard's steps of the apply step, on the apply step's state."""

    runtime: Runtime
    place: Place | None
    shard: int
    committer: PostgresCommitter
    pipeline: CommitPipeline
    sequencer: Sequencer
    window: Window
    node_budget: int | None
    recorded_offsets: Offsets
    shard_ended: bool  # a shard of the input: it has read its whole input (a drain)
    _published: Publication | None  # what this shard's last transaction handed over published
    _sequenced_at: int  # the pipeline's `take_backs` when the last release was sequenced
    # and ApplyLogic's `flush`, `_settle` and `_commit`

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

    def _shard_release(self) -> Release:
        """One read of the others' state, then the single sequencer's rules."""
        sequencer, place = self.sequencer, self.place
        self._sequenced_at = self.pipeline.take_backs
        view = self.pipeline.on_commit_thread(self.committer.read_shared, sequencer.unknown_dependencies())
        sequencer.learn_decided(view.decided)
        return sequencer.release(at_end_of_input=self.shard_ended, node_budget=self.node_budget,
                                 others=Others(view, place.name, place.assignment))

    def _shard_flush(self, items: list, release: Release, whole: int = 0) -> list[BatchReport]:
        """Every part of this flush writes the shard's state as of now (operators/shard_view.py)."""
        if not items:  # what is in flight commits first, on the same thread: it is in the ledger by then
            return self._publish(publication_of(self.sequencer, (), (), self.shard_ended))
        return self._commit(items, shard=ShardFlush(frozenset(release.cycles), len(items) - len(release.copies)),
                            whole=whole)

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

    def _flush_publication(self, items: list, parts: list[Part], shard: ShardFlush) -> Publication:
        """What a shard holds uncommitted while the parts of this flush commit: what the sequencer
        holds and the items of every part but the first, which commits with it (the parts in flight
        before commit before it, on the same thread). One for all the flush's parts: a part after the
        first shows items committed already, which only makes the others wait for one more read."""
        firsts, copies = split_copies(*after_first(parts, len(items)), shard.copies_from)
        return publication_of(self.sequencer, _first_copies(items[firsts]), items[copies], self.shard_ended)

    def _shared_write(self, items: list, part: Part, shard: ShardFlush,
                      publication: Publication) -> tuple[list, list, SharedWrite]:
        """A shard's part: (its first copies, its later copies, what it writes to the shared tables:
        the first copies' claims, the flush's publication, the release's cycles)."""
        firsts_at, copies_at = split_copies(part.start, part.end, shard.copies_from)
        firsts = _first_copies(items[firsts_at])
        claims = tuple((i, _partition(item)) for item in firsts if (i := item_id(item)) is not None)
        self._published = publication
        return firsts, items[copies_at], SharedWrite(claims, publication, shard.cycles)

    def _take_back(self, lost: set[str], firsts: list, copies: list) -> None:
        """Parts in flight were taken back (a shard's part lost a claim: it and every part after it
        committed nothing): back into the sequencer, with the claimed ids' copies set aside
        (operators/shard_view.py), and flush again soon."""
        self.sequencer.retract(firsts, copies)
        self.sequencer.set_aside(lost)
        self._published = None
        self.recorded_offsets = {}
        self.window.flush_at = datetime.now(UTC)
        log.info("claims lost to another shard: batch taken back",
                 extra={"mutation_ids": sorted(lost)[:20], "size": len(firsts) + len(copies)})


def _first_copies(items: list) -> list:
    """A shard's first copies as released (an unmet dependency's verdict: its mutation)."""
    return [i.mutation if type(i) is Unmet else i for i in items]


def _partition(item: Mutation | Rejection) -> tuple[str, int]:
    if type(item) is Mutation:
        return item.topic, item.partition
    return item.raw.topic, item.raw.partition
