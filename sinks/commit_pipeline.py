"""The commit path: a part of the input, from the hand-over to its acks, over four threads.

The dataflow's apply step (dataflows/apply.py) windows and sequences; what it releases goes
through `CommitPipeline`, one per apply step, in these steps:

1. Hand over (the dataflow worker thread), `CommitPipeline.hand_over`: the part is announced
   to the prepare-ahead strategy, in commit order, and queued on the commit thread; from now
   on it counts as decided for the sequencer. At most IN_FLIGHT_LIMIT parts are in flight (one
   commits, one waits), so the worker reads and sequences on meanwhile. Priority-lane items may
   board the newest standard part until its transaction begins (`board`, sinks/riders.py).
2. Prepare ahead (the prepare thread, `mutagg-prepare`), sinks/prepare_ahead.py: once the part
   before has decided in its transaction, this part is decided from unlocked reads and that
   part's decided states (paused while parts keep going stale). With `MUTAGG_PREPARE_AHEAD=false`
   (`PrepareAheadOff`) it is not.
3. Transaction (the commit thread, `mutagg-commit`, one per shard), `CommitPipeline._transaction`
   and `PostgresCommitter.commit` (sinks/postgres.py): take the decision made ahead if every
   assumption holds (the rows it only reads share-locked and compared, the rows it writes checked
   by the write itself), else lock the rows and decide now; write entity rows, ledger, conflicts
   and the resume offsets, COMMIT. Never after a part that failed (`CommitAborted`) or lost a claim
   (`SKIPPED`).
4. Collect (the dataflow worker thread), `CommitPipeline.collect`: oldest first. A failed commit
   raises here and stops the job; a part that lost a claim is taken back with every part after it.
5. After commit (the after-commit thread, `mutagg-after-commit`), `acknowledge` on the thread of
   sinks/after_commit.py: export the audit rows, then send the acks and DLQ records and confirm
   their delivery, then metrics; batch by batch, in commit order. A snapshot waits for it
   (`settle`), and offsets recorded meanwhile stay before every batch it has not handled.

Resume offsets: each transaction (3) records where a restart without recovery data resumes,
before every part not yet acknowledged; a settle (4 and 5 for everything, then the exact
offsets: dataflows/hand_over.py) records them again once all is acknowledged. Crash tests kill the
job at sinks/faults.py's points: `mid_copy`, `before_commit` (3), `after_commit` (3, after the
COMMIT), `after_riders` (3, after the COMMIT of a part that priority-lane items boarded: `board`),
`after_acks` (5).

Steps 1 and 4 run on the worker, the others each on a thread of their own; the hand-offs are a
one-thread executor (3), the prepare-ahead strategy (2) and a bounded queue (5).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

from mutagg.heartbeat import HEARTBEAT
from schemas.errors import ClaimLost, MutaggError
from sinks.after_commit import AfterCommit, Committed, Offsets, lowest_offsets
from sinks.outcomes import Batch, SharedWrite
from sinks.riders import Boarding

if TYPE_CHECKING:
    from operators.shard_view import Publication
    from sinks.acks import AckProducer
    from sinks.audit import AuditExporter
    from sinks.faults import FaultInjector
    from sinks.postgres import PostgresCommitter

log = logging.getLogger(__name__)
T = TypeVar("T")

IN_FLIGHT_LIMIT = 2  # batches handed to the commit thread and not yet collected: one commits, one waits
# What the worker waits on while it blocks on another thread (the liveness probe's named dependencies).
COMMITTING = "PostgreSQL (a batch committing)"
AFTER_COMMIT = "the after-commit thread (audit export, acks to Kafka)"


def commit_thread(shard: str | None = None) -> ThreadPoolExecutor:
    """The commit thread of the job (or of one shard): one transaction at a time, in order."""
    return ThreadPoolExecutor(max_workers=1, thread_name_prefix="mutagg-commit" if shard is None
                              else f"mutagg-commit-{shard}")


class CommitAborted(MutaggError):
    """A batch was not committed because an earlier one failed (its error stops the job)."""


@dataclass(frozen=True, slots=True)
class InFlight:
    """A batch handed to the commit thread."""

    batch_id: str
    part: list
    offsets: Offsets  # its lowest input offsets: uncommitted, or unacknowledged, until collected
    future: Future
    lane: bool = False  # a part of the priority lane's items only
    firsts: list = ()  # a shard's part: its first copies (mutations, as released) ...
    copies: list = ()  # ... and later copies: taken back if another partition claimed one first
    boarding: Boarding | None = None  # a standard part's lane riders (`CommitPipeline.board`)

    @property
    def size(self) -> int:
        return len(self.part) + (len(self.boarding.riders) if self.boarding is not None else 0)


class _Skipped:
    """A shard's part not committed because an earlier part lost a claim (taken back with it)."""


SKIPPED = _Skipped()


@dataclass(frozen=True)
class BatchReport:
    batch_id: str
    size: int
    seconds: float


TakeBack = Callable[[set[str], list, list], None]
"""Told the claimed ids, the first copies and the later copies of the parts taken back."""


class CommitPipeline:
    """Steps 1, 3 and 4 of the commit path (see the module), for one apply step's parts.

    `committer` and `commits` (its thread) are the apply step's place; `after_commit` is the
    process's after-commit thread; `committed_in` learns each commit's seconds (the throttle);
    `take_back` gets the items of parts taken back. `seconds_per_item` is the last standard
    parts' commit time per item (a moving average over parts of `timed_from` items or more).
    """

    def __init__(self, committer: PostgresCommitter, commits: ThreadPoolExecutor, after_commit: AfterCommit,
                 committed_in: Callable[[float], None], take_back: TakeBack, timed_from: int):
        self.committer = committer
        self.commits = commits
        self.after_commit = after_commit
        self.committed_in = committed_in
        self.take_back = take_back
        self.timed_from = timed_from
        self.in_flight: deque[InFlight] = deque()
        self.seconds_per_item = 0.0
        self.take_backs = 0  # how many times parts in flight were taken back
        self._commit_failed = False
        self._lost = False  # a part lost a claim: the parts after it skip their commit

    # Step 1: the dataflow worker thread.
    def hand_over(self, part: list, resume: Offsets, batch_id: str, lane: bool = False,
                  firsts: list = (), copies: list = (), shared: SharedWrite | None = None,
                  boardable: bool = False) -> None:
        """Queue `part` for its transaction, which records the resume offsets `resume` (and, for a
        shard, `shared`). The caller keeps at most IN_FLIGHT_LIMIT in flight and counts the part as
        decided from now on; `lane`, `firsts` and `copies` are kept for collecting and taking back.
        Lane items may board a `boardable` part (`board`) until its transaction begins."""
        self.committer.ahead.announce(batch_id, part)  # step 2 decides it while the one before writes
        boarding = Boarding() if boardable else None
        future = self.commits.submit(self._transaction, part, resume, batch_id, shared, boarding)
        self.in_flight.append(InFlight(batch_id, part, lowest_offsets(part), future, lane, firsts, copies, boarding))

    def boardable(self) -> bool:
        """The newest part in flight takes lane riders (its transaction has not begun yet)."""
        return bool(self.in_flight) and self.in_flight[-1].boarding is not None and self.in_flight[-1].boarding.open

    def board(self, items: list) -> bool:
        """Step 1 for lane items (the worker): let them ride the newest part in flight, after its
        items in its transaction; False (nothing taken) if its transaction has begun. They count as
        decided from now on, like a part handed over. The part's transaction records the resume
        offsets computed at its hand-over: they are before these items (held or unread then), so a
        restart re-reads them (the ledger knows them); its offsets held until acknowledged take
        them in (the next parts' resume offsets stay before them until then)."""
        if not self.in_flight or self.in_flight[-1].boarding is None:
            return False
        tail = self.in_flight[-1]
        if not tail.boarding.board(items):
            return False
        for key, offset in lowest_offsets(items).items():
            tail.offsets[key] = min(tail.offsets.get(key, offset), offset)
        return True

    def on_commit_thread(self, action: Callable[..., T], *args: object) -> T:
        """Run `action` on the commit thread (the committer's connection is its own), after the
        batches in flight, and wait for it."""
        with HEARTBEAT.waiting_on(COMMITTING):
            return self.commits.submit(action, *args).result()

    def publish(self, publication: Publication) -> bool:
        """A shard with nothing to commit publishes its state, after the parts in flight; False if one
        of them lost a claim (the publication leaves its items out: they are taken back, uncommitted).
        Raises `ClaimLost` if another partition claimed one of the held ids."""
        return self.on_commit_thread(self._publish_unless_lost, publication)

    def _publish_unless_lost(self, publication: Publication) -> bool:
        if self._lost:
            return False
        self.committer.publish(publication)
        return True

    # Steps 2 and 3: the commit thread (step 2's decision is taken inside the transaction).
    def _transaction(self, part: list, resume: Offsets, batch_id: str, shared: SharedWrite | None = None,
                     boarding: Boarding | None = None):
        """(outcomes, seconds, committed at, what its transactions wrote); for a shard's part that
        commits nothing, `ClaimLost` (this part) or SKIPPED (a later one)."""
        riders = boarding.close() if boarding is not None else []
        if self._commit_failed:
            raise CommitAborted(f"batch {batch_id} not committed: an earlier batch failed")
        if self._lost:
            self.committer.ahead.take(batch_id, part)  # forget it was announced
            return SKIPPED
        began = time.perf_counter()
        written: list = []
        try:
            outcomes = self.committer.commit(Batch(part, resume, shared, riders), batch_id, written)
        except ClaimLost as lost:
            self._lost = True  # the parts after it were sequenced after it: none of them may commit
            return lost
        except BaseException:
            self._commit_failed = True  # its dependants, in later batches, must not commit
            raise
        return outcomes, time.perf_counter() - began, time.time(), written

    # Step 4: the dataflow worker thread.
    def collect(self, wait: bool = True) -> list[BatchReport]:
        """Collect the batches in flight, oldest first: all of them (`wait`), or those done."""
        reports: list[BatchReport] = []
        while self.in_flight and (wait or self.in_flight[0].future.done()):
            reports += self.collect_one()
        return reports

    def collect_one(self) -> list[BatchReport]:
        """Wait for the oldest batch in flight; hand its outcomes to the after-commit thread."""
        batch = self.in_flight[0]
        with HEARTBEAT.waiting_on(COMMITTING):
            result = batch.future.result()  # a failed commit stops the job here
        if isinstance(result, ClaimLost | _Skipped):
            self._take_back()
            return []
        outcomes, seconds, committed_at, written = result
        self.in_flight.popleft()
        self.committed_in(seconds)
        if not batch.lane and len(batch.part) >= self.timed_from:
            per_item = seconds / batch.size  # its riders took part of its time
            self.seconds_per_item = per_item if not self.seconds_per_item else \
                0.7 * self.seconds_per_item + 0.3 * per_item
        # Step 5 follows in order on the after-commit thread, overlapping the next transaction;
        # the offsets recorded meanwhile keep this batch re-readable.
        with HEARTBEAT.waiting_on(AFTER_COMMIT):  # blocks only while two batches wait for it
            self.after_commit.submit(
                Committed(batch.batch_id, outcomes, batch.offsets, seconds, committed_at, written))
        log.info("batch committed", extra={"batch_id": batch.batch_id, "size": batch.size,
                                           "seconds": round(seconds, 4)})
        return [BatchReport(batch.batch_id, batch.size, seconds)]

    def _take_back(self) -> None:
        """A shard's part lost a claim: it and every part after it committed nothing. All of them
        go back to the apply step (`take_back`), with the ids another partition claimed."""
        lost: set[str] = set()
        firsts: list = []
        copies: list = []
        with HEARTBEAT.waiting_on(COMMITTING):
            for batch in self.in_flight:
                result = batch.future.result()
                if isinstance(result, ClaimLost):
                    lost |= result.mutation_ids
                firsts += batch.firsts
                copies += batch.copies
        self.in_flight.clear()
        self._lost = False
        self.take_backs += 1
        self.take_back(lost, firsts, copies)

    def settle(self) -> list[BatchReport]:
        """Steps 4 and 5 for everything handed over: collected, exported and acknowledged."""
        reports = self.collect()
        with HEARTBEAT.waiting_on(AFTER_COMMIT):
            self.after_commit.drain()
        return reports

    def pending_offsets(self) -> Offsets:
        """The lowest read positions of the batches committed but not yet acknowledged (step 5)."""
        return self.after_commit.pending_offsets()


class AfterCommitServices(Protocol):
    """What step 5 uses (the runtime's, built on first use)."""

    @property
    def audit(self) -> AuditExporter: ...

    @property
    def acks(self) -> AckProducer: ...

    faults: FaultInjector

    def recorded(self, committed: Committed) -> None:
        """Count the batch (the run's stats, and the metrics: on this thread, the audit's connection)."""


# Step 5: the after-commit thread.
def acknowledge(services: AfterCommitServices, committed: Committed) -> None:
    """One committed batch: audit rows, then acks and DLQ records, then its counts."""
    outcomes = committed.outcomes
    services.audit.export_committed(outcomes, committed.written)  # before the acks: an ack never precedes its audit row
    services.acks.send(outcomes)
    services.faults.hit("after_acks")
    services.recorded(committed)
