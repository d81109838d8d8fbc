"""Committed ledger and conflict rows of given batches, read back from PostgreSQL
and cut into audit files: one Arrow table per (data set, day, entity type, batch).

Reading what the database committed (rather than what the job meant to commit)
is what makes the export idempotent: a replay reads the same rows again.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

import psycopg
import pyarrow as pa

from schemas.audit import CONFLICTS, CONFLICTS_SCHEMA, MUTATIONS, MUTATIONS_SCHEMA

_MUTATIONS = """
SELECT m.mutation_id, m.status, m.reason, m.entity_id, m.version, m.edge_node_id, m.operation,
       m.base_version, m.adjusted_priority, m.batch_id, m.kafka_topic, m.kafka_partition,
       m.kafka_offset, m.kafka_timestamp, m.edge_timestamp, m.decided_at,
       extract(epoch FROM m.decided_at - m.kafka_timestamp)::float8,
       extract(epoch FROM m.decided_at - m.edge_timestamp)::float8,
       m.conflict_ids, COALESCE(r.ids, '{}'::text[]), m.detail, m.held_attributes::text,
       m.entity_type
FROM mutation_log m
LEFT JOIN (
    SELECT resolved_by_mutation_id AS mutation_id, array_agg(conflict_id ORDER BY conflict_id) AS ids
    FROM conflicts
    WHERE resolved_by_mutation_id IN (SELECT mutation_id FROM mutation_log WHERE batch_id = ANY(%(batches)s))
    GROUP BY 1
) r ON r.mutation_id = m.mutation_id
WHERE m.batch_id = ANY(%(batches)s)
"""
# Sorted in Python (`_ledger_order`): the server's sort of these wide rows cost more than the query.
_LEDGER_ORDER = tuple(
    MUTATIONS_SCHEMA.get_field_index(name)
    for name in ("batch_id", "kafka_topic", "kafka_partition", "kafka_offset", "mutation_id")
)

_CONFLICTS = """
SELECT c.conflict_id, c.entity_id, c.attributes, c.mutation_id, c.other_mutation_id,
       c.incoming_edge_node_id, c.other_edge_node_id, c.strategy, c.winner, c.status,
       c.incoming_values::text, c.server_values::text, c.result_values::text, c.base_version,
       c.entity_version, c.batch_id, c.detected_at, c.resolved_at, c.resolved_by_mutation_id,
       c.resolution, m.kafka_topic, m.kafka_partition, m.kafka_offset, m.kafka_timestamp,
       m.edge_timestamp, o.edge_timestamp,
       c.entity_type
FROM conflicts c
LEFT JOIN mutation_log m ON m.mutation_id = c.mutation_id
LEFT JOIN mutation_log o ON o.mutation_id = c.other_mutation_id
WHERE c.batch_id = ANY(%(batches)s)
ORDER BY c.batch_id, c.conflict_id
"""

# Batches whose conflict rows changed because a mutation of these batches closed one of them.
_RESOLVED_BATCHES = """
SELECT DISTINCT batch_id FROM conflicts
WHERE conflict_id = ANY(%(conflict_ids)s) AND batch_id IS NOT NULL
"""


_RESOLVED_INDEX = MUTATIONS_SCHEMA.get_field_index("resolved_conflict_ids")


@dataclass(frozen=True, slots=True)
class AuditPart:
    """The rows of one batch in one partition of one data set."""

    dataset: str
    day: date
    entity_type: str | None
    batch_id: str
    table: pa.Table


def utc_day(moment: datetime) -> date:
    return moment.astimezone(UTC).date()


def _part_order(group: tuple[tuple[date, str | None, str], list]) -> tuple:
    day, entity_type, batch_id = group[0]
    return (day, entity_type is None, entity_type or "", batch_id)


def to_parts(dataset: str, rows: Sequence[tuple], schema: pa.Schema, time_column: str) -> list[AuditPart]:
    """Group rows (schema columns, then entity_type) into one `AuditPart` per file. Pure."""
    time_index = schema.get_field_index(time_column)
    batch_index = schema.get_field_index("batch_id")
    groups: dict[tuple[date, str | None, str], list[tuple]] = defaultdict(list)
    for row in rows:
        groups[(utc_day(row[time_index]), row[-1], row[batch_index])].append(row)
    parts = []
    for (day, entity_type, batch_id), members in sorted(groups.items(), key=_part_order):
        columns = list(zip(*members))
        arrays = [pa.array(columns[i], type=field.type) for i, field in enumerate(schema)]
        parts.append(AuditPart(dataset, day, entity_type, batch_id, pa.Table.from_arrays(arrays, schema=schema)))
    return parts


def _ledger_order(row: tuple) -> tuple:
    return tuple((row[i] is None, row[i]) for i in _LEDGER_ORDER)  # NULLs last, as the server sorted


def read_parts(connection: psycopg.Connection, batch_ids: Iterable[str]) -> list[AuditPart]:
    """Every audit file the given committed batches make, plus the conflict files of
    earlier batches whose conflicts a mutation of these batches resolved."""
    batches = sorted(set(batch_ids))
    if not batches:
        return []
    with connection.transaction(), connection.cursor() as cursor:
        cursor.execute(_MUTATIONS, {"batches": batches})
        mutation_rows = sorted(cursor.fetchall(), key=_ledger_order)
        resolved = sorted({cid for row in mutation_rows for cid in row[_RESOLVED_INDEX]})
        conflict_batches = set(batches)
        if resolved:
            cursor.execute(_RESOLVED_BATCHES, {"conflict_ids": resolved})
            conflict_batches.update(row[0] for row in cursor.fetchall())
        cursor.execute(_CONFLICTS, {"batches": sorted(conflict_batches)})
        conflict_rows = cursor.fetchall()
    return [
        *to_parts(MUTATIONS, mutation_rows, MUTATIONS_SCHEMA, "decided_at"),
        *to_parts(CONFLICTS, conflict_rows, CONFLICTS_SCHEMA, "detected_at"),
    ]


_EXPECTED = """
SELECT 'mutations', batch_id, (decided_at AT TIME ZONE 'UTC')::date, entity_type
FROM mutation_log WHERE decided_at >= %(since)s AND decided_at < %(until)s AND batch_id IS NOT NULL
GROUP BY 2, 3, 4
UNION ALL
SELECT 'conflicts', batch_id, (detected_at AT TIME ZONE 'UTC')::date, entity_type
FROM conflicts WHERE detected_at >= %(since)s AND detected_at < %(until)s AND batch_id IS NOT NULL
GROUP BY 2, 3, 4
"""

_RESOLVED_SINCE = """
SELECT DISTINCT batch_id FROM conflicts
WHERE resolved_at >= %(since)s AND resolved_at < %(until)s AND batch_id IS NOT NULL
"""


def expected_files(
    connection: psycopg.Connection, since: datetime, until: datetime
) -> tuple[list[tuple[str, str, date, str | None]], set[str]]:
    """(data set, batch, day, entity type) of every file the window's batches make, and the
    batches whose conflicts were resolved in the window (their files changed since)."""
    with connection.transaction(), connection.cursor() as cursor:
        cursor.execute(_EXPECTED, {"since": since, "until": until})
        expected = [(d, b, day, e) for d, b, day, e in cursor.fetchall()]
        cursor.execute(_RESOLVED_SINCE, {"since": since, "until": until})
        resolved = {row[0] for row in cursor.fetchall()}
    return expected, resolved


def batches_between(connection: psycopg.Connection, since: datetime, until: datetime) -> list[str]:
    """Every batch that decided a mutation or detected a conflict in [since, until)."""
    expected, resolved = expected_files(connection, since, until)
    return sorted({batch for _d, batch, _day, _e in expected} | resolved)
