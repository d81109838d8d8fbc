"""The job's own record of what it committed, to notice a database that lost commits.

An asynchronous standby promoted after the primary died may lack the last transactions
the primary acknowledged (issue 18). A job that carried on would build later batches on
a database missing earlier ones: mutations lost, versions rejected as from the future.
So every batch transaction counts itself in `job_commits` under the run's id, and the
job remembers the count it saw commit (in memory, and in its recovery snapshot). When
the committer opens a new connection, and when a run resumes from a snapshot, the
count the database holds is compared with the job's: fewer is `DatabaseBehind`. The job
stops (exit 7), its recovery snapshots are discarded (they are ahead of the database),
and the restart resumes from the offsets the database holds: the lost transactions are
decided again, with the same outcomes (DESIGN section 4, determinism), so acks already
sent for them are not contradicted.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import psycopg

from schemas.errors import DatabaseBehind

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CommitMark:
    """`batches` transactions of run `run_id` committed, the last one batch `batch_id`."""

    run_id: str
    batches: int
    batch_id: str

    def next(self, batch_id: str) -> CommitMark:
        return CommitMark(self.run_id, self.batches + 1, batch_id)


def first_mark(run_id: str) -> CommitMark:
    return CommitMark(run_id, 0, "")


def record(cursor: psycopg.Cursor, mark: CommitMark) -> None:
    """Count a batch transaction, inside it (it commits with the batch or not at all)."""
    cursor.execute(
        "INSERT INTO job_commits (run_id, batches, last_batch_id) VALUES (%s, %s, %s) "
        "ON CONFLICT (run_id) DO UPDATE SET batches = EXCLUDED.batches, "
        "last_batch_id = EXCLUDED.last_batch_id, updated_at = clock_timestamp()",
        (mark.run_id, mark.batches, mark.batch_id),
    )


def check(connection: psycopg.Connection, mark: CommitMark | None, where: str) -> None:
    """Raise `DatabaseBehind` unless the database holds at least `mark`'s commits."""
    if mark is None or mark.batches == 0:
        return
    with connection.cursor() as cursor:
        row = cursor.execute("SELECT batches, last_batch_id FROM job_commits WHERE run_id = %s",
                             (mark.run_id,)).fetchone()
    connection.rollback()
    held = 0 if row is None else row[0]
    if held >= mark.batches:
        return
    error = DatabaseBehind(
        f"{where}: the database holds {held} of the {mark.batches} batches run {mark.run_id} committed "
        f"(last {mark.batch_id}; the database's last {row[1] if row else 'none'}): it lost commits "
        "(a promoted asynchronous standby?). Stopping; the recovery snapshots are discarded and the "
        "restart resumes from the offsets the database holds, deciding the lost batches again"
    )
    log.error(str(error), extra={"batch_id": mark.batch_id, "run_id": mark.run_id,
                                 "held": held, "committed": mark.batches})
    raise error


def discard_snapshots(recovery_dir: str) -> None:
    """Empty the recovery partitions (same count): they hold positions past what the database
    kept, so a restart must resume from the database's offsets instead."""
    directory = Path(recovery_dir)
    parts = sorted(directory.glob("part-*.sqlite3"))
    if not parts:
        return
    from bytewax.recovery import init_db_dir

    # A new set is made aside and each file swapped in by rename, so a kill half-way leaves each
    # partition old or new: an old one still holds the snapshot, which the restart finds ahead of
    # the database again (ApplyState.committed), and it comes back here.
    fresh = directory / ".fresh"
    shutil.rmtree(fresh, ignore_errors=True)
    fresh.mkdir()
    init_db_dir(fresh, len(parts))
    for part in parts:
        for journal in (Path(f"{part}-wal"), Path(f"{part}-shm"), Path(f"{part}-journal")):
            journal.unlink(missing_ok=True)  # the job has stopped: nothing of it is still open
        (fresh / part.name).replace(part)
    shutil.rmtree(fresh, ignore_errors=True)
    log.warning("recovery snapshots discarded: the restart resumes from the database's offsets",
                extra={"recovery_dir": recovery_dir, "partitions": len(parts)})
