"""What follows a commit, off the commit path: audit export, then acknowledgements
and DLQ records, then metrics; one committed batch at a time, in commit order.

Contract: `submit` hands over the outcomes of a committed batch and returns at
once (it blocks only while `depth` batches are already waiting); `drain` returns
when everything submitted is exported and acknowledged, and raises the first
failure. After a failure every further call raises it too: the job stops, and
the restart re-reads the unacknowledged batches (`pending_offsets` says which
read positions they hold, so the offsets recorded with the next commit keep them)
and acknowledges them again from the ledger.

The worker thread overlaps its waits (Parquet files, broker deliveries) and its
Python work with the next batch's transaction, which waits on PostgreSQL.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from operators.parts import Offsets
from schemas.mutation import Rejection
from sinks.decisions import Written
from sinks.outcomes import Item, Outcome, Unmet

log = logging.getLogger(__name__)



@dataclass(slots=True)
class Committed:
    """One committed batch: its outcomes, the read positions it holds, when it committed, and
    what its transactions wrote (several if it was split on a data error)."""

    batch_id: str
    outcomes: list[Outcome]
    offsets: Offsets
    seconds: float
    committed_at: float
    written: list[Written] = field(default_factory=list)


class AfterCommitFailed(RuntimeError):
    """Exporting or acknowledging a committed batch failed; the job must stop and restart."""


class AfterCommit:
    """A single worker thread running `handle(committed)` for each batch in order."""

    def __init__(self, handle: Callable[[Committed], None], depth: int = 2):
        self._handle = handle
        self._depth = depth
        self._queue: deque[Committed] = deque()
        self._changed = threading.Condition()
        self._failure: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="mutagg-after-commit", daemon=True)
        self._thread.start()

    def submit(self, committed: Committed) -> None:
        with self._changed:
            while len(self._queue) >= self._depth and self._failure is None:
                self._changed.wait()
            self._raise_if_failed()
            self._queue.append(committed)
            self._changed.notify_all()

    def drain(self) -> None:
        """Wait until every submitted batch is handled; raise if one failed."""
        with self._changed:
            while self._queue and self._failure is None:
                self._changed.wait()
            self._raise_if_failed()

    def pending_offsets(self) -> Offsets:
        """Per partition, the lowest read position a batch not yet handled holds."""
        lowest: Offsets = {}
        with self._changed:
            for committed in self._queue:
                for key, offset in committed.offsets.items():
                    lowest[key] = min(lowest.get(key, offset), offset)
        return lowest

    def close(self) -> None:
        """Handle what is queued (unless a batch failed), then stop the thread."""
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self._thread.join()

    def _raise_if_failed(self) -> None:
        if self._failure is not None:
            raise AfterCommitFailed(f"after-commit work failed: {self._failure}") from self._failure

    def _run(self) -> None:
        while True:
            with self._changed:
                while not self._queue and not self._closed:
                    self._changed.wait()
                if not self._queue:
                    return
                committed = self._queue[0]  # stays queued (and its offsets held) until handled
            try:
                self._handle(committed)
            except BaseException as exc:  # any failure must reach the dataflow thread
                log.error(
                    "after-commit work failed", extra={"batch_id": committed.batch_id, "error": str(exc)[:500]}
                )
                with self._changed:
                    self._failure = exc
                    self._changed.notify_all()
                return
            with self._changed:
                self._queue.popleft()
                self._changed.notify_all()


def lowest_offsets(items: Iterable[Item]) -> Offsets:
    """Per partition, the lowest offset among these mutations, rejections or unmet mutations."""
    lowest: Offsets = {}
    for item in items:
        if isinstance(item, Rejection):
            key, offset = (item.raw.topic, item.raw.partition), item.raw.offset
        else:
            mutation = item.mutation if isinstance(item, Unmet) else item
            key, offset = (mutation.topic, mutation.partition), mutation.offset
        if offset < lowest.get(key, offset + 1):
            lowest[key] = offset
    return lowest

