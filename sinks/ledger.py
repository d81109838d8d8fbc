"""The ledger (`mutation_log`), the conflict records and the duplicate log, as frames."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import polars as pl
import psycopg
from psycopg import sql

from operators.conflicts import ConflictRecord, Decision
from operators.priority import adjusted_priority
from schemas.ddl import CONFLICT_COLUMNS, LEDGER_COLUMNS
from schemas.mutation import KAFKA_TIME_LIMIT_MS, Mutation, Rejection, Status
from schemas.registry import Registry
from schemas.values import to_json_value
from sinks.entity_rows import copy_frame, copy_statement, text_array


@dataclass(slots=True)
class LedgerEntry:
    """What the ledger holds for a decided mutation id (also re-acknowledged on replay)."""

    mutation_id: str
    status: str
    reason: str | None
    entity_type: str | None
    entity_id: str | None
    version: int | None
    edge_node_id: str | None
    batch_id: str | None
    conflict_ids: tuple[str, ...]
    decided_at: datetime
    kafka_topic: str | None
    kafka_partition: int | None
    kafka_offset: int | None


def lookup(cursor: psycopg.Cursor, mutation_ids: list[str]) -> dict[str, LedgerEntry]:
    if not mutation_ids:
        return {}
    cursor.execute(
        "SELECT mutation_id, status, reason, entity_type, entity_id, version, edge_node_id, "
        "batch_id, conflict_ids, decided_at, kafka_topic, kafka_partition, kafka_offset "
        "FROM mutation_log WHERE mutation_id = ANY(%s::text[])",
        (text_array(mutation_ids),),
    )
    return {
        row[0]: LedgerEntry(*row[:8], tuple(row[8] or ()), *row[9:]) for row in cursor.fetchall()
    }


def read_times(cursor: psycopg.Cursor, mutation_ids: list[str]) -> dict[str, int]:
    """Of these ids, those the ledger holds, with the Kafka timestamp (ms) of the message that
    decided each (0 where none was recorded: it satisfies any dependency in time)."""
    if not mutation_ids:
        return {}
    cursor.execute(
        "SELECT mutation_id, COALESCE(floor(extract(epoch FROM kafka_timestamp) * 1000)::bigint, 0) "
        "FROM mutation_log WHERE mutation_id = ANY(%s::text[])",
        (text_array(mutation_ids),),
    )
    return dict(cursor.fetchall())


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _ms(timestamp_ms: int | None) -> int | None:
    """A Kafka timestamp the ledger can hold (none, negative or past year 9999: NULL)."""
    if timestamp_ms is None or not 0 <= timestamp_ms < KAFKA_TIME_LIMIT_MS:
        return None
    return timestamp_ms


_array = text_array


def ledger_row(
    decision: Decision,
    source: Mutation | Rejection,
    registry: Registry,
    batch_id: str,
    decided_at: str | None,
) -> tuple[Any, ...]:
    """One `mutation_log` row, its values in `LEDGER_COLUMNS` order (enum values read as
    `_value_`: `.value` is a descriptor call, and this runs for every mutation)."""
    if isinstance(source, Mutation):
        topic, partition, offset = source.topic, source.partition, source.offset
        kafka_ts, edge_ts = _ms(source.kafka_timestamp_ms), (source.timestamp - _EPOCH) // _MICROSECOND
        operation, base_version = source.operation._value_, source.base_version
        priority = decision.priority
        if priority is None:  # not decided against its entity (rejected before, or failed)
            priority = adjusted_priority(source, registry.entity_types[source.entity_type])
        detail = decision.detail
        held = _json(
            {k: to_json_value(v) for k, v in source.attributes.items()}
        ) if decision.status is Status.CONFLICT else None
    else:
        raw = source.raw
        topic, partition, offset, kafka_ts = raw.topic, raw.partition, raw.offset, _ms(raw.timestamp_ms)
        edge_ts = operation = base_version = priority = held = None
        detail = source.message
    conflicts = decision.conflicts
    return (
        decision.mutation_id, decision.status._value_, decision.reason, decision.entity_type,
        decision.entity_id, decision.version, decision.edge_node_id, operation, base_version, priority,
        batch_id, topic, partition, offset, kafka_ts, edge_ts, decided_at,
        _array([c.conflict_id for c in conflicts]) if conflicts else "{}", detail, held,
    )


_LEDGER_SCHEMA = {
    "mutation_id": pl.String, "status": pl.String, "reason": pl.String, "entity_type": pl.String,
    "entity_id": pl.String, "version": pl.Int64, "edge_node_id": pl.String, "operation": pl.String,
    "base_version": pl.Int64, "adjusted_priority": pl.Int64, "batch_id": pl.String,
    "kafka_topic": pl.String, "kafka_partition": pl.Int64, "kafka_offset": pl.Int64,
    "kafka_timestamp": pl.Int64, "edge_timestamp": pl.Int64, "decided_at": pl.String,
    "conflict_ids": pl.String, "detail": pl.String, "held_attributes": pl.String,
}

_CONFLICT_SCHEMA = {
    "conflict_id": pl.String, "entity_type": pl.String, "entity_id": pl.String,
    "attributes": pl.String, "mutation_id": pl.String, "other_mutation_id": pl.String,
    "incoming_edge_node_id": pl.String, "other_edge_node_id": pl.String, "strategy": pl.String,
    "winner": pl.String, "status": pl.String, "incoming_values": pl.String,
    "server_values": pl.String, "result_values": pl.String, "base_version": pl.Int64,
    "entity_version": pl.Int64, "batch_id": pl.String, "detected_at": pl.String,
}


assert tuple(_LEDGER_SCHEMA) == LEDGER_COLUMNS and tuple(_CONFLICT_SCHEMA) == CONFLICT_COLUMNS
_COPY_LEDGER = copy_statement(sql.Identifier("mutation_log"), LEDGER_COLUMNS).as_bytes(None)
_COPY_CONFLICTS = copy_statement(sql.Identifier("conflicts"), CONFLICT_COLUMNS).as_bytes(None)


def _json(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def conflict_row(record: ConflictRecord, batch_id: str, detected_at: str | None) -> tuple[Any, ...]:
    """One `conflicts` row, its values in `CONFLICT_COLUMNS` order."""
    return (
        record.conflict_id, record.entity_type, record.entity_id, _array(record.attributes),
        record.mutation_id, record.other_mutation_id, record.incoming_edge_node_id,
        record.other_edge_node_id, record.strategy, record.winner, record.status,
        _json(record.incoming_values), _json(record.server_values), _json(record.result_values),
        record.base_version, record.entity_version, batch_id, detected_at,
    )


def _frame(rows: list[tuple[Any, ...]], schema: dict[str, Any]) -> pl.DataFrame:
    """Row tuples as a frame, built column-wise (transposed in C, not dict by dict)."""
    return pl.DataFrame(dict(zip(schema, map(list, zip(*rows)))), schema=schema)


def ledger_frame(ledger_rows: list[tuple[Any, ...]]) -> pl.DataFrame | None:
    """The new ledger rows as the frame to COPY (their `decided_at` as the rows hold it)."""
    if not ledger_rows:
        return None
    return (
        _frame(ledger_rows, _LEDGER_SCHEMA)
        .with_columns(  # epoch numbers become timestamptz text in one vectorised step
            pl.from_epoch("kafka_timestamp", time_unit="ms").dt.replace_time_zone("UTC"),
            pl.from_epoch("edge_timestamp", time_unit="us").dt.replace_time_zone("UTC"),
        )
        .select(LEDGER_COLUMNS)
    )


def conflict_frame(conflict_rows: list[tuple[Any, ...]]) -> pl.DataFrame | None:
    return _frame(conflict_rows, _CONFLICT_SCHEMA) if conflict_rows else None


def write_frames(
    cursor: psycopg.Cursor, ledger: pl.DataFrame | None, conflicts: pl.DataFrame | None, now: str | None = None
) -> None:
    """COPY new ledger and conflict rows (ids are new: checked in this transaction), their
    decision and detection times set to `now` if given."""
    if ledger is not None:
        if now is not None:
            ledger = ledger.with_columns(pl.lit(now, pl.String).alias("decided_at"))
        copy_frame(cursor, _COPY_LEDGER, ledger)
    if conflicts is not None:
        if now is not None:
            conflicts = conflicts.with_columns(pl.lit(now, pl.String).alias("detected_at"))
        copy_frame(cursor, _COPY_CONFLICTS, conflicts)


def write(
    cursor: psycopg.Cursor,
    ledger_rows: list[tuple[Any, ...]],
    conflict_rows: list[tuple[Any, ...]],
) -> None:
    """COPY the new ledger and conflict rows as they are."""
    write_frames(cursor, ledger_frame(ledger_rows), conflict_frame(conflict_rows))


def record_duplicates(
    cursor: psycopg.Cursor, duplicates: list[tuple[Mutation | Rejection, bool]], batch_id: str
) -> None:
    """Note every duplicate delivery once (idempotent on its Kafka coordinates); `content_differs`
    marks an id reused in another partition, so for another entity (a client error). Its Kafka
    timestamp is kept: the id's earliest committed copy may be this one (sinks/shard_tables.py)."""
    if not duplicates:
        return
    deliveries = [
        (d.id, *coordinates(d), reused, _ms(d.kafka_timestamp_ms)) if isinstance(d, Mutation)
        else (d.mutation_id, *coordinates(d), reused, _ms(d.raw.timestamp_ms))
        for d, reused in duplicates
    ]
    cursor.execute(
        "INSERT INTO mutation_duplicates (mutation_id, kafka_topic, kafka_partition, kafka_offset, content_differs, "
        "kafka_timestamp, batch_id) SELECT m, t, p, o, r, to_timestamp(k / 1000.0), %s FROM unnest(%s::text[], "
        "%s::text[], %s::int[], %s::bigint[], %s::boolean[], %s::bigint[]) AS u(m, t, p, o, r, k) "
        "ON CONFLICT DO NOTHING",
        (batch_id, *map(list, zip(*deliveries))),
    )


def coordinates(source: Mutation | Rejection) -> tuple[str, int, int]:
    """Where a message was read: (topic, partition, offset)."""
    if isinstance(source, Mutation):
        return source.topic, source.partition, source.offset
    return source.raw.topic, source.raw.partition, source.raw.offset


def close_resolved(cursor: psycopg.Cursor, resolutions: list[tuple[str, str]]) -> list[tuple[str, str, str]]:
    """Mark OPEN conflicts MANUALLY_RESOLVED by the mutation that carries the resolution; those
    closed, as (conflict id, resolving mutation id, the conflict's batch id)."""
    if not resolutions:
        return []
    cursor.execute(
        "UPDATE conflicts c SET status = 'MANUALLY_RESOLVED', resolved_at = clock_timestamp(), "
        "resolved_by_mutation_id = u.m FROM unnest(%s::text[], %s::text[]) AS u(c, m) "
        "WHERE c.conflict_id = u.c AND c.status = 'OPEN' "
        "RETURNING c.conflict_id, c.resolved_by_mutation_id, c.batch_id",
        tuple(map(list, zip(*resolutions))),
    )
    return cursor.fetchall()


def revise(cursor: psycopg.Cursor, mutation_ids: list[str], batch_id: str) -> None:
    """Move superseded ledger rows to `mutation_log_history` before their ids are decided anew."""
    if not mutation_ids:
        return
    cursor.execute(
        "WITH gone AS (DELETE FROM mutation_log WHERE mutation_id = ANY(%s) RETURNING *) "
        "INSERT INTO mutation_log_history SELECT gone.*, clock_timestamp(), %s FROM gone",
        (mutation_ids, batch_id),
    )


def record_offsets(
    cursor: psycopg.Cursor, offsets: dict[tuple[str, int], int], batch_id: str
) -> None:
    """Remember, per partition, the offset from which a restart without recovery data resumes."""
    if not offsets:
        return
    topics, partitions, next_offsets = map(list, zip(*((t, p, o) for (t, p), o in sorted(offsets.items()))))
    cursor.execute(
        "INSERT INTO source_offsets (kafka_topic, kafka_partition, next_offset, batch_id) "
        "SELECT t, p, o, %s FROM unnest(%s::text[], %s::int[], %s::bigint[]) AS u(t, p, o) "
        "ON CONFLICT (kafka_topic, kafka_partition) DO UPDATE SET "
        "next_offset = GREATEST(source_offsets.next_offset, EXCLUDED.next_offset), "
        "batch_id = EXCLUDED.batch_id, updated_at = clock_timestamp()",
        (batch_id, topics, partitions, next_offsets),
    )
