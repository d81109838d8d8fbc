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
import pyarrow.compute as pc

from schemas.audit import (
    CLAIMED_ENTITY_TYPE,
    CONFLICTS,
    CONFLICTS_SCHEMA,
    INVALID_ENTITY_TYPE,
    MUTATIONS,
    MUTATIONS_SCHEMA,
)
from sinks.audit_copy import ORDINAL, CsvQuery

_ENTITY_TYPE = pa.field("entity_type", pa.string())
"""Read after the schema's columns: a partition column, in the path and not in the files."""


def _partition_type(column: str) -> str:
    """The ``entity_type`` partition of a row whose type is `column`: the one place that
    maps a type the registry does not declare (``%(entity_types)s``; NULL too) to
    ``_invalid``, so no string a node sends becomes a directory (issue 20 item 7).
    The rows, the files expected of a window and hence `catch_up` all go through it."""
    return f"CASE WHEN {column} = ANY(%(entity_types)s::text[]) THEN {column} ELSE '{INVALID_ENTITY_TYPE}' END"


_MUTATION_EXPRESSIONS = {
    "kafka_latency_s": "extract(epoch FROM m.decided_at - m.kafka_timestamp)::float8",
    "edge_latency_s": "extract(epoch FROM m.decided_at - m.edge_timestamp)::float8",
    "resolved_conflict_ids": "COALESCE(r.ids, '{}'::text[])",
    "held_attributes": "m.held_attributes::text",
    CLAIMED_ENTITY_TYPE: "m.entity_type",
}
_MUTATIONS = CsvQuery(
    [
        *((field, _MUTATION_EXPRESSIONS.get(field.name, f"m.{field.name}")) for field in MUTATIONS_SCHEMA),
        (_ENTITY_TYPE, _partition_type("m.entity_type")),
    ],
    """
FROM mutation_log m
LEFT JOIN (
    SELECT resolved_by_mutation_id AS mutation_id, array_agg(conflict_id ORDER BY conflict_id) AS ids
    FROM conflicts
    WHERE resolved_by_mutation_id IN (SELECT mutation_id FROM mutation_log WHERE batch_id = ANY(%(batches)s))
    GROUP BY 1
) r ON r.mutation_id = m.mutation_id
WHERE m.batch_id = ANY(%(batches)s)
""",
)
# Sorted in Arrow (`table_parts`), not by the server: its sort of these wide rows cost more than the query.
LEDGER_ORDER = ("batch_id", "kafka_topic", "kafka_partition", "kafka_offset", "mutation_id")

_CONFLICT_EXPRESSIONS = {
    "incoming_values": "c.incoming_values::text", "server_values": "c.server_values::text",
    "result_values": "c.result_values::text", "kafka_topic": "m.kafka_topic", "kafka_partition": "m.kafka_partition",
    "kafka_offset": "m.kafka_offset", "kafka_timestamp": "m.kafka_timestamp", "edge_timestamp": "m.edge_timestamp",
    "other_edge_timestamp": "o.edge_timestamp", CLAIMED_ENTITY_TYPE: "c.entity_type",
}
_CONFLICTS = CsvQuery(
    [
        *((field, _CONFLICT_EXPRESSIONS.get(field.name, f"c.{field.name}")) for field in CONFLICTS_SCHEMA),
        (_ENTITY_TYPE, _partition_type("c.entity_type")),
    ],
    """
FROM conflicts c
LEFT JOIN mutation_log m ON m.mutation_id = c.mutation_id
LEFT JOIN mutation_log o ON o.mutation_id = c.other_mutation_id
WHERE c.batch_id = ANY(%(batches)s)
""",
    order_by="c.batch_id, c.conflict_id",
)

# Batches whose conflict rows changed because a mutation of these batches closed one of them.
_RESOLVED_BATCHES = """
SELECT DISTINCT batch_id FROM conflicts
WHERE conflict_id = ANY(%(conflict_ids)s) AND batch_id IS NOT NULL
"""


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


def _part_order(group: tuple[tuple[date, str | None, str], object]) -> tuple:
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


def table_parts(
    dataset: str, table: pa.Table, schema: pa.Schema, time_column: str, order: Sequence[str]
) -> list[AuditPart]:
    """The parts `to_parts` makes of these rows (schema columns, entity_type and the `order`
    columns) once sorted by `order` (NULLs last, strings in code-point order). Pure; the
    rows are grouped and taken in Arrow, not one by one."""
    if table.num_rows == 0:
        return []
    group = [pc.cast(table[time_column], pa.date32()), table["entity_type"], table["batch_id"]]
    keys = pa.Table.from_arrays([*group, *(table[name] for name in order)],
                                names=[f"k{i}" for i in range(len(group) + len(order))])
    # NULLs last: Arrow's default (`null_placement` moved into the sort keys in pyarrow 25).
    indices = pc.sort_indices(keys, sort_keys=[(name, "ascending") for name in keys.column_names])
    groups = _runs(keys.select(range(len(group))).take(indices))
    rows = pa.Table.from_arrays(table.select(schema.names).take(indices).combine_chunks().columns, schema=schema)
    return [AuditPart(dataset, day, entity_type, batch_id, rows.slice(start, count))
            for (day, entity_type, batch_id), (start, count) in sorted(groups, key=_part_order)]


def _runs(keys: pa.Table) -> list[tuple[tuple, tuple[int, int]]]:
    """((key values), (start, length)) of each run of equal rows in `keys`; NULL equals NULL."""
    change = None
    for column in keys.columns:
        after, before = column[1:], column[:-1]
        differs = pc.fill_null(pc.not_equal(after, before), pc.not_equal(pc.is_null(after), pc.is_null(before)))
        change = differs if change is None else pc.or_(change, differs)
    starts = [0, *(i + 1 for i in pc.indices_nonzero(change).to_pylist())]
    lengths = [end - start for start, end in zip(starts, [*starts[1:], keys.num_rows])]
    firsts = keys.take(pa.array(starts, pa.int64())).to_pylist()
    return [(tuple(first.values()), (start, length)) for first, start, length in zip(firsts, starts, lengths)]


def read_parts(
    connection: psycopg.Connection, batch_ids: Iterable[str], *, entity_types: Iterable[str]
) -> list[AuditPart]:
    """Every audit file the given committed batches make, plus the conflict files of
    earlier batches whose conflicts a mutation of these batches resolved. `entity_types`:
    the registry's type names; rows of any other type go to the ``_invalid`` partition."""
    batches = sorted(set(batch_ids))
    if not batches:
        return []
    types = sorted(set(entity_types))
    with connection.transaction(), connection.cursor() as cursor:
        mutations = _MUTATIONS.read(cursor, {"batches": batches, "entity_types": types})
        resolved = sorted(pc.unique(pc.list_flatten(mutations["resolved_conflict_ids"])).to_pylist())
        conflict_batches = set(batches)
        if resolved:
            cursor.execute(_RESOLVED_BATCHES, {"conflict_ids": resolved})
            conflict_batches.update(row[0] for row in cursor.fetchall())
        conflicts = _CONFLICTS.read(cursor, {"batches": sorted(conflict_batches), "entity_types": types})
    return [*ledger_parts(mutations), *conflict_parts(conflicts)]


def read_conflict_parts(
    connection: psycopg.Connection, batch_ids: Iterable[str], *, entity_types: Iterable[str]
) -> list[AuditPart]:
    """The ``conflicts`` files of the given batches alone, as the database holds them now."""
    batches = sorted(set(batch_ids))
    if not batches:
        return []
    with connection.transaction(), connection.cursor() as cursor:
        conflicts = _CONFLICTS.read(cursor, {"batches": batches, "entity_types": sorted(set(entity_types))})
    return conflict_parts(conflicts)


def ledger_parts(mutations: pa.Table) -> list[AuditPart]:
    """The ``mutations`` files of these rows (the schema's columns, then ``entity_type``)."""
    return table_parts(MUTATIONS, mutations, MUTATIONS_SCHEMA, "decided_at", LEDGER_ORDER)


def conflict_parts(conflicts: pa.Table, order: Sequence[str] = (ORDINAL.name,)) -> list[AuditPart]:
    """The ``conflicts`` files of these rows (the schema's columns, ``entity_type`` and the
    `order` columns), each file's rows in `order` (the server's: by conflict id)."""
    return table_parts(CONFLICTS, conflicts, CONFLICTS_SCHEMA, "detected_at", order)


_EXPECTED = f"""
SELECT 'mutations', batch_id, (decided_at AT TIME ZONE 'UTC')::date, {_partition_type("entity_type")}
FROM mutation_log WHERE decided_at >= %(since)s AND decided_at < %(until)s AND batch_id IS NOT NULL
GROUP BY 2, 3, 4
UNION ALL
SELECT 'conflicts', batch_id, (detected_at AT TIME ZONE 'UTC')::date, {_partition_type("entity_type")}
FROM conflicts WHERE detected_at >= %(since)s AND detected_at < %(until)s AND batch_id IS NOT NULL
GROUP BY 2, 3, 4
"""

_RESOLVED_SINCE = """
SELECT DISTINCT batch_id FROM conflicts
WHERE resolved_at >= %(since)s AND resolved_at < %(until)s AND batch_id IS NOT NULL
"""


def expected_files(
    connection: psycopg.Connection, since: datetime, until: datetime, *, entity_types: Iterable[str]
) -> tuple[list[tuple[str, str, date, str]], set[str]]:
    """(data set, batch, day, entity type partition) of every file the window's batches make,
    and the batches whose conflicts were resolved in the window (their files changed since)."""
    with connection.transaction(), connection.cursor() as cursor:
        cursor.execute(_EXPECTED, {"since": since, "until": until, "entity_types": sorted(set(entity_types))})
        expected = [(d, b, day, e) for d, b, day, e in cursor.fetchall()]
        cursor.execute(_RESOLVED_SINCE, {"since": since, "until": until})
        resolved = {row[0] for row in cursor.fetchall()}
    return expected, resolved


def batches_between(connection: psycopg.Connection, since: datetime, until: datetime) -> list[str]:
    """Every batch that decided a mutation or detected a conflict in [since, until)."""
    expected, resolved = expected_files(connection, since, until, entity_types=())  # partitions unused
    return sorted({batch for _d, batch, _day, _e in expected} | resolved)
