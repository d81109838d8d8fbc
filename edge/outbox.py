"""The local outbox: an SQLite file that holds every local change from the moment
it is recorded until the central job has decided it.

Guarantees. `record` returns only after the change is durably committed
(WAL, synchronous=FULL), so a crash or power loss right after it loses nothing.
Reopening the file after a crash puts every entry whose delivery was unknown
back to PENDING. Acks and the status-topic offsets they were read at commit in
one transaction, so each ack is applied exactly once. One file belongs to one
edge node.
"""

from __future__ import annotations

import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path

from edge import store, transitions
from edge.errors import InvalidMutation, OutboxError
from edge.records import Ack, EdgeMutation, EntryState, OutboxEntry, encode
from edge.store import COLUMNS, entry_from_row
from edge.transitions import Event


@dataclass(frozen=True, slots=True)
class AckReport:
    """What one batch of acks did to the outbox."""

    applied: int = 0
    removed: int = 0
    unknown: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    lost: int = 0              # status-topic offsets found deleted (retention) before they were read
    requeued: int = 0          # unanswered entries put back to be sent again
    caught_up: bool = False    # the listener has read its partition to the end


class Outbox:
    """The SQLite outbox of one edge node. Not thread-safe: one owner thread."""

    def __init__(self, path: str | Path, edge_node_id: str, clock: Callable[[], float] = time.time):
        self.path = Path(path)
        self.edge_node_id = edge_node_id
        self._clock = clock
        self._db = store.connect(self.path)
        self._bind()
        self.recovered = self._recover()

    # -- lifecycle -----------------------------------------------------------------

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return store.transaction(self._db)

    def _bind(self) -> None:
        with self._transaction() as db:
            rows = dict(db.execute("SELECT key, value FROM meta").fetchall())
            if "edge_node_id" not in rows:
                db.execute("INSERT INTO meta VALUES ('edge_node_id', ?), ('schema_version', ?)",
                           (self.edge_node_id, str(store.SCHEMA_VERSION)))
                return
        if rows["edge_node_id"] != self.edge_node_id:
            raise OutboxError(f"{self.path} is the outbox of node {rows['edge_node_id']!r}, not {self.edge_node_id!r}")
        if int(rows.get("schema_version", "0")) > store.SCHEMA_VERSION:
            raise OutboxError(f"{self.path} has outbox schema {rows['schema_version']}, newer than this client")
        if int(rows.get("schema_version", "0")) < store.SCHEMA_VERSION:  # `store.connect` added what it lacked
            with self._transaction() as db:
                db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(store.SCHEMA_VERSION),))

    def _recover(self) -> int:
        """After a restart, a delivery that was in flight is unknown: send it again."""
        with self._transaction() as db:
            cursor = db.execute(
                "UPDATE outbox SET state = ?, updated_at = ? WHERE state = ?",
                (transitions.after_event(EntryState.IN_FLIGHT, Event.RESTART), self._clock(), EntryState.IN_FLIGHT),
            )
            return cursor.rowcount

    # -- recording -----------------------------------------------------------------

    def record(self, mutation: EdgeMutation, max_bytes: int = 1 << 20) -> OutboxEntry:
        """Persist `mutation` (committed when this returns) and return its entry.
        Recording the same mutation again is a no-op; a different one under a used id raises."""
        if mutation.edge_node_id != self.edge_node_id:
            raise InvalidMutation("WRONG_NODE", f"this outbox belongs to {self.edge_node_id}", mutation.id)
        payload = encode(mutation, max_bytes)
        now = self._clock()
        with self._transaction() as db:
            existing = db.execute(f"SELECT {COLUMNS} FROM outbox WHERE mutation_id = ?", (mutation.id,)).fetchone()
            if existing is not None:
                if bytes(existing[4]) != payload:
                    raise InvalidMutation("DUPLICATE_ID", "another mutation was recorded under this id", mutation.id)
                return entry_from_row(existing)
            cursor = db.execute(
                "INSERT INTO outbox (mutation_id, entity_type, entity_id, payload, state, recorded_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (mutation.id, mutation.entity_type, mutation.entity_id, payload, EntryState.PENDING, now, now),
            )
            seq = cursor.lastrowid
        return OutboxEntry(seq, mutation.id, mutation.entity_type, mutation.entity_id, payload, EntryState.PENDING)

    # -- sending -------------------------------------------------------------------

    def sendable(self, limit: int) -> list[OutboxEntry]:
        """Up to `limit` entries that may be handed to the producer now (see `transitions.sendable`)."""
        rows = self._db.execute(
            f"SELECT {COLUMNS} FROM outbox WHERE state IN (?, ?) ORDER BY seq",
            (EntryState.PENDING, EntryState.IN_FLIGHT),
        ).fetchall()
        return transitions.sendable(entry_from_row(row) for row in rows)[:limit]

    def undelivered(self) -> list[OutboxEntry]:
        """Every PENDING and IN_FLIGHT entry, in record order (what `deferral.plan_round` chooses from)."""
        rows = self._db.execute(
            f"SELECT {COLUMNS} FROM outbox WHERE state IN (?, ?) ORDER BY seq",
            (EntryState.PENDING, EntryState.IN_FLIGHT),
        ).fetchall()
        return [entry_from_row(row) for row in rows]

    def mark_sent(self, seqs: Sequence[int]) -> None:
        self._apply_event(seqs, Event.SEND, count_attempt=True)
        if seqs:
            with self._transaction() as db:
                db.execute("INSERT OR IGNORE INTO meta VALUES ('sent_any', '1')")

    def mark_delivered(self, deliveries: Iterable[tuple[int, int, int]]) -> None:
        """`(seq, partition, offset)` for each delivery the broker confirmed."""
        deliveries = list(deliveries)
        with self._transaction() as db:
            for seq, partition, offset in deliveries:
                state = self._state(db, seq)
                if state is None:
                    continue  # decided and removed before its delivery report was read
                db.execute(
                    "UPDATE outbox SET state = ?, kafka_partition = coalesce(kafka_partition, ?), "
                    "kafka_offset = coalesce(kafka_offset, ?), updated_at = ? WHERE seq = ?",
                    (transitions.after_event(state, Event.DELIVERED), partition, offset, self._clock(), seq),
                )

    def mark_failed(self, seqs: Sequence[int]) -> None:
        self._apply_event(seqs, Event.DELIVERY_FAILED)

    def requeue_overdue(self, after_s: float, max_wait_s: float) -> int:
        """Send again each DELIVERED entry unanswered for longer than its wait: `after_s`,
        doubled with every requeue of that entry, at most `max_wait_s` (`transitions.requeue_wait`).
        A lost or unread ack is answered again from the job's ledger; a job that is down for a
        day sees a few copies of an entry, not one per poll. Returns how many were requeued."""
        now = self._clock()
        with self._transaction() as db:
            rows = db.execute(
                "SELECT seq, updated_at, requeues FROM outbox WHERE state = ? AND updated_at <= ?",
                (EntryState.DELIVERED, now - after_s),
            ).fetchall()
            return self._requeue(db, [
                seq for seq, updated_at, requeues in rows
                if now - updated_at >= transitions.requeue_wait(requeues, after_s, max_wait_s)
            ])

    def _requeue(self, db: sqlite3.Connection, seqs: Sequence[int]) -> int:
        for seq in seqs:
            db.execute(
                "UPDATE outbox SET state = ?, requeues = requeues + 1, updated_at = ? WHERE seq = ?",
                (transitions.after_event(self._state(db, seq), Event.REQUEUE), self._clock(), seq),
            )
        return len(seqs)

    def _apply_event(self, seqs: Sequence[int], event: Event, count_attempt: bool = False) -> None:
        with self._transaction() as db:
            for seq in seqs:
                state = self._state(db, seq)
                if state is None:
                    continue
                db.execute(
                    "UPDATE outbox SET state = ?, attempts = attempts + ?, updated_at = ? WHERE seq = ?",
                    (transitions.after_event(state, event), int(count_attempt), self._clock(), seq),
                )

    @staticmethod
    def _state(db: sqlite3.Connection, seq: int) -> EntryState | None:
        row = db.execute("SELECT state FROM outbox WHERE seq = ?", (seq,)).fetchone()
        return None if row is None else EntryState(row[0])

    def ever_sent(self) -> bool:
        """Has anything of this node ever been handed to a producer (so acks may exist)?"""
        return self._db.execute("SELECT 1 FROM meta WHERE key = 'sent_any'").fetchone() is not None

    # -- acknowledgements ----------------------------------------------------------

    def apply_acks(self, acks: Sequence[Ack], topic: str, next_offsets: dict[int, int]) -> AckReport:
        """Apply the job's decisions and remember where the status topic was read up to,
        in one transaction. Removes APPLIED entries and the conflicts their resolution closed."""
        applied = removed = unknown = 0
        by_status: Counter[str] = Counter()
        now = self._clock()
        with self._transaction() as db:
            for ack in acks:
                by_status[ack.status] += 1
                if ack.entity_type is not None and ack.entity_id is not None:
                    store.learn_version(db, ack.entity_type, ack.entity_id, ack.entity_version)
                row = db.execute("SELECT seq, state FROM outbox WHERE mutation_id = ?", (ack.mutation_id,)).fetchone()
                if row is None:
                    unknown += 1
                    held = transitions.resolved_mutation_id(ack.mutation_id)
                    if held is not None and ack.status == "APPLIED":
                        removed += db.execute(
                            "DELETE FROM outbox WHERE mutation_id = ? AND state = ?", (held, EntryState.CONFLICT)
                        ).rowcount
                    continue
                seq, state = row[0], EntryState(row[1])
                new_state = transitions.after_ack(state, ack.status)
                if new_state == state:
                    continue
                applied += 1
                if new_state in transitions.REMOVABLE:
                    db.execute("DELETE FROM outbox WHERE seq = ?", (seq,))
                    removed += 1
                    continue
                db.execute(
                    "UPDATE outbox SET state = ?, reason = ?, entity_version = ?, conflict_ids = ?, updated_at = ? "
                    "WHERE seq = ?",
                    (new_state, ack.reason, ack.entity_version, ",".join(ack.conflict_ids), now, seq),
                )
            for partition, offset in next_offsets.items():
                db.execute(
                    "INSERT INTO ack_offsets VALUES (?, ?, ?) ON CONFLICT (topic, kafka_partition) "
                    "DO UPDATE SET next_offset = max(next_offset, excluded.next_offset)",
                    (topic, partition, offset),
                )
        return AckReport(applied, removed, unknown, dict(by_status))

    def note_ack_gap(self, topic: str, partition: int, lost_from: int, resume_at: int, read_to: int) -> None:
        """Acks from `lost_from` on were deleted (the status topic's retention passed while this
        node was away, or the topic was made anew): read on from `resume_at`, the earliest offset
        still there. Once the stored position reaches `read_to` (the partition's end when the gap
        was seen), `requeue_after_gaps` sends again whatever was delivered before now and is still
        unanswered. Durable, so a restart in between forgets neither."""
        with self._transaction() as db:
            store.record_ack_gap(db, topic, partition, lost_from, resume_at, read_to, self._clock())

    def requeue_after_gaps(self, topic: str, partition: int) -> int:
        """For each open gap the stored position has passed, requeue every entry delivered
        before the gap was seen and still DELIVERED (its ack was among those lost)."""
        position = self.ack_offsets(topic).get(partition)
        requeued = 0
        for from_offset, detected_at in store.passed_ack_gaps(self._db, topic, partition, position):
            with self._transaction() as db:
                seqs = [row[0] for row in db.execute(
                    "SELECT seq FROM outbox WHERE state = ? AND updated_at <= ?", (EntryState.DELIVERED, detected_at))]
                count = self._requeue(db, seqs)
                store.close_ack_gap(db, topic, partition, from_offset, count)
            requeued += count
        return requeued

    def ack_gaps(self, topic: str) -> list[tuple[int, int, int, int | None]]:
        """`(partition, from_offset, to_offset, requeued or None while open)` of every gap seen."""
        return store.ack_gaps(self._db, topic)

    def ack_offsets(self, topic: str) -> dict[int, int]:
        rows = self._db.execute("SELECT kafka_partition, next_offset FROM ack_offsets WHERE topic = ?", (topic,))
        return dict(rows.fetchall())

    # -- entity versions -----------------------------------------------------------

    def known_version(self, entity_type: str, entity_id: str) -> int:
        """The latest version of the entity this node has seen (0 = never seen)."""
        return store.known_version(self._db, entity_type, entity_id)

    def known_versions(self) -> dict[tuple[str, str], int]:
        return store.known_versions(self._db)

    def observe(self, versions: Mapping[tuple[str, str], int]) -> None:
        """Learn versions from elsewhere (a snapshot of the central ERP synced down); never lowers one."""
        with self._transaction() as db:
            for (entity_type, entity_id), version in versions.items():
                store.learn_version(db, entity_type, entity_id, version)

    # -- inspection ----------------------------------------------------------------

    def entries(self, states: Iterable[EntryState] | None = None) -> list[OutboxEntry]:
        if states is None:
            rows = self._db.execute(f"SELECT {COLUMNS} FROM outbox ORDER BY seq").fetchall()
        else:
            wanted = [EntryState(s).value for s in states]
            marks = ",".join("?" * len(wanted))
            rows = self._db.execute(
                f"SELECT {COLUMNS} FROM outbox WHERE state IN ({marks}) ORDER BY seq", wanted
            ).fetchall()
        return [entry_from_row(row) for row in rows]

    def entry(self, mutation_id: str) -> OutboxEntry | None:
        """The entry of `mutation_id`, or None once it was confirmed and removed (or never recorded)."""
        row = self._db.execute(f"SELECT {COLUMNS} FROM outbox WHERE mutation_id = ?", (mutation_id,)).fetchone()
        return None if row is None else entry_from_row(row)

    def counts(self) -> dict[EntryState, int]:
        rows = self._db.execute("SELECT state, count(*) FROM outbox GROUP BY state").fetchall()
        return {EntryState(state): n for state, n in rows}

    def needing_attention(self, unreported_only: bool = False) -> list[OutboxEntry]:
        """REJECTED, CONFLICT and FAILED entries (what a person must see), in record order;
        with `unreported_only`, those not yet passed to `mark_reported`."""
        attention = (EntryState.REJECTED, EntryState.CONFLICT, EntryState.FAILED)
        unreported = " AND reported_at IS NULL" if unreported_only else ""
        rows = self._db.execute(
            f"SELECT {COLUMNS} FROM outbox WHERE state IN (?, ?, ?){unreported} ORDER BY seq", attention
        ).fetchall()
        return [entry_from_row(row) for row in rows]

    def mark_reported(self, mutation_ids: Iterable[str]) -> None:
        """Note that these decisions reached the ERP (they stay until `dismiss`)."""
        now = self._clock()
        with self._transaction() as db:
            db.executemany("UPDATE outbox SET reported_at = ? WHERE mutation_id = ? AND reported_at IS NULL",
                           [(now, mutation_id) for mutation_id in mutation_ids])

    def dismiss(self, mutation_ids: Iterable[str]) -> int:
        """Drop decided entries the user has seen (REJECTED, FAILED, CONFLICT); never undecided ones."""
        ids = list(mutation_ids)
        final = [s.value for s in transitions.FINAL]
        with self._transaction() as db:
            return sum(
                db.execute(
                    f"DELETE FROM outbox WHERE mutation_id = ? AND state IN ({','.join('?' * len(final))})",
                    (mutation_id, *final),
                ).rowcount
                for mutation_id in ids
            )
