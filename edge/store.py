"""The outbox's SQLite file: schema, row mapping, transactions, and the entity
versions a node has learnt. No policy here; `outbox.Outbox` decides what to write."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edge import transitions
from edge.records import EntryState, OutboxEntry

SCHEMA_VERSION = 2  # 2: outbox.requeues, outbox.reported_at, ack_gaps, the erp_outcomes view

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    mutation_id TEXT NOT NULL UNIQUE,
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    payload BLOB NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    kafka_partition INTEGER,
    kafka_offset INTEGER,
    reason TEXT,
    entity_version INTEGER,
    conflict_ids TEXT NOT NULL DEFAULT '',
    recorded_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    requeues INTEGER NOT NULL DEFAULT 0,
    reported_at REAL
);
CREATE INDEX IF NOT EXISTS outbox_by_state ON outbox (state, seq);
CREATE TABLE IF NOT EXISTS entity_versions (
    entity_type TEXT NOT NULL,
    entity_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (entity_type, entity_id)
);
CREATE TABLE IF NOT EXISTS ack_offsets (
    topic TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    next_offset INTEGER NOT NULL,
    PRIMARY KEY (topic, kafka_partition)
);
CREATE TABLE IF NOT EXISTS ack_gaps (
    topic TEXT NOT NULL,
    kafka_partition INTEGER NOT NULL,
    from_offset INTEGER NOT NULL,
    to_offset INTEGER NOT NULL,
    read_to_offset INTEGER NOT NULL,
    detected_at REAL NOT NULL,
    requeued INTEGER,
    PRIMARY KEY (topic, kafka_partition, from_offset)
);
"""

ADDED_COLUMNS = {
    "requeues": "INTEGER NOT NULL DEFAULT 0",
    "reported_at": "REAL",
}
"""Columns a schema-1 file lacks, added on open."""

VIEWS = """
CREATE VIEW IF NOT EXISTS erp_outcomes AS
    SELECT mutation_id, entity_type, entity_id, state AS status, reason, conflict_ids,
           updated_at AS decided_at, reported_at
    FROM outbox WHERE state IN ('REJECTED', 'CONFLICT', 'FAILED');
"""

COLUMNS = (
    "seq, mutation_id, entity_type, entity_id, payload, state, attempts, kafka_partition, kafka_offset, "
    "reason, entity_version, conflict_ids"
)


def entry_from_row(row: tuple) -> OutboxEntry:
    return OutboxEntry(
        seq=row[0], mutation_id=row[1], entity_type=row[2], entity_id=row[3], payload=bytes(row[4]),
        state=EntryState(row[5]), attempts=row[6], partition=row[7], offset=row[8], reason=row[9],
        entity_version=row[10], conflict_ids=tuple(c for c in row[11].split(",") if c),
    )


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) the file in autocommit mode; transactions are explicit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, timeout=30.0)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")  # a committed change survives power loss
    db.executescript(SCHEMA)  # idempotent; executescript commits on its own
    present = {row[1] for row in db.execute("PRAGMA table_info(outbox)")}
    for name, declaration in ADDED_COLUMNS.items():
        if name not in present:
            db.execute(f"ALTER TABLE outbox ADD COLUMN {name} {declaration}")
    db.executescript(VIEWS)
    return db


@contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def known_version(db: sqlite3.Connection, entity_type: str, entity_id: str) -> int:
    row = db.execute(
        "SELECT version FROM entity_versions WHERE entity_type = ? AND entity_id = ?", (entity_type, entity_id)
    ).fetchone()
    return 0 if row is None else row[0]


def known_versions(db: sqlite3.Connection) -> dict[tuple[str, str], int]:
    rows = db.execute("SELECT entity_type, entity_id, version FROM entity_versions").fetchall()
    return {(entity_type, entity_id): version for entity_type, entity_id, version in rows}


def learn_version(db: sqlite3.Connection, entity_type: str, entity_id: str, version: int | None) -> None:
    """Remember `version` unless a newer one is known (inside the caller's transaction)."""
    if version is None:
        return
    row = db.execute(
        "SELECT version FROM entity_versions WHERE entity_type = ? AND entity_id = ?", (entity_type, entity_id)
    ).fetchone()
    merged = transitions.known_version(None if row is None else row[0], version)
    db.execute(
        "INSERT INTO entity_versions VALUES (?, ?, ?) ON CONFLICT (entity_type, entity_id) "
        "DO UPDATE SET version = excluded.version",
        (entity_type, entity_id, merged),
    )


def record_ack_gap(
    db: sqlite3.Connection, topic: str, partition: int, lost_from: int, resume_at: int, read_to: int, now: float
) -> None:
    """Note a lost range of the status topic and move the read position to `resume_at`
    (inside the caller's transaction). `resume_at < lost_from`: the topic was made anew."""
    db.execute(
        "INSERT OR IGNORE INTO ack_gaps (topic, kafka_partition, from_offset, to_offset, read_to_offset, "
        "detected_at) VALUES (?, ?, ?, ?, ?, ?)",
        (topic, partition, lost_from, resume_at, read_to, now),
    )
    db.execute(
        "INSERT INTO ack_offsets VALUES (?, ?, ?) ON CONFLICT (topic, kafka_partition) "
        "DO UPDATE SET next_offset = excluded.next_offset",  # may go back: a topic made anew
        (topic, partition, resume_at),
    )


def passed_ack_gaps(db: sqlite3.Connection, topic: str, partition: int, position: int | None) -> list[tuple]:
    """`(from_offset, detected_at)` of the open gaps whose end-when-seen `position` has reached."""
    if position is None:
        return []
    return db.execute(
        "SELECT from_offset, detected_at FROM ack_gaps WHERE topic = ? AND kafka_partition = ? "
        "AND requeued IS NULL AND read_to_offset <= ? ORDER BY from_offset", (topic, partition, position),
    ).fetchall()


def close_ack_gap(db: sqlite3.Connection, topic: str, partition: int, from_offset: int, requeued: int) -> None:
    db.execute("UPDATE ack_gaps SET requeued = ? WHERE topic = ? AND kafka_partition = ? AND from_offset = ?",
               (requeued, topic, partition, from_offset))


def ack_gaps(db: sqlite3.Connection, topic: str) -> list[tuple[int, int, int, int | None]]:
    return db.execute(
        "SELECT kafka_partition, from_offset, to_offset, requeued FROM ack_gaps WHERE topic = ? "
        "ORDER BY detected_at, from_offset", (topic,)).fetchall()
