"""The audit files of a committed batch built from what its transaction wrote: the
ledger and conflict frames it COPYed and the time it stamped them with (sinks/decisions.py
`Written`), instead of reading its rows back (sinks/audit_rows.py `read_parts`).

The parts are those `read_parts` makes of the same batch right after its commit: same
files, rows, order and schema. What the frames lack comes from the transaction or a
small look-up:

- ``decided_at``/``detected_at``: the time the transaction stamped (`Written.now`);
- ``resolved_conflict_ids``: the conflicts the transaction closed (its UPDATE's RETURNING);
- the JSON columns: the text the job sent, printed as ``jsonb`` prints it (sinks/jsonb_text.py);
- a conflict's incoming Kafka coordinates and times: its mutation's row in the same frame;
- ``other_edge_timestamp``: the other mutation's ledger row, looked up by primary key;
- a conflict closed by the batch changes a file of the batch that detected it: that
  file is read back as the database holds it (as `read_parts` does).

Only batches whose transactions the job saw commit are built here; anything else
(replayed messages' batches, `catch_up`) is read back.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import datetime

import polars as pl
import psycopg
import pyarrow as pa
import pyarrow.compute as pc

from schemas.audit import CLAIMED_ENTITY_TYPE, CONFLICTS_SCHEMA, INVALID_ENTITY_TYPE, MUTATIONS_SCHEMA
from sinks.audit_rows import AuditPart, conflict_parts, ledger_parts, read_conflict_parts
from sinks.decisions import Written
from sinks.jsonb_text import jsonb_text

_TIMESTAMP = pa.timestamp("us", tz="UTC")
_EXACT = 2**53  # microseconds a float64 holds exactly: beyond, the seconds are divided in Python
_INCOMING = ("kafka_topic", "kafka_partition", "kafka_offset", "kafka_timestamp", "edge_timestamp")
_OTHER_EDGE_TIMES = (
    "SELECT mutation_id, (extract(epoch FROM edge_timestamp) * 1000000)::int8 FROM mutation_log "
    "WHERE mutation_id = ANY(%s::text[])"
)


def written_parts(
    connection: psycopg.Connection, written: Sequence[Written], *, entity_types: Iterable[str]
) -> list[AuditPart]:
    """Every audit file of these committed transactions (as `read_parts` of their batch ids
    makes them). `connection` is used only for conflicts (see the module docstring)."""
    types = pa.array(sorted(set(entity_types)), pa.string())
    closed = [row for w in written for row in w.closed]
    resolved_by: dict[str, list[str]] = defaultdict(list)
    for conflict_id, mutation_id, _batch in closed:
        resolved_by[mutation_id].append(conflict_id)
    ledgers = [_ledger_table(w, resolved_by, types) for w in written if w.ledger is not None and w.ledger.height]
    reread = sorted({batch for _c, _m, batch in closed if batch is not None})
    conflicts = [w for w in written if w.conflicts is not None and w.conflicts.height and w.batch_id not in reread]
    files: list[AuditPart] = []
    if conflicts:
        others = _other_edge_times(connection, conflicts)
        tables = [_conflict_table(w, others, types) for w in conflicts]
        files += conflict_parts(pa.concat_tables(tables), ("conflict_id",))
    if reread:
        files += read_conflict_parts(connection, reread, entity_types=types.to_pylist())
    files.sort(key=lambda p: (p.day, p.entity_type is None, p.entity_type or "", p.batch_id))  # as `table_parts`
    return [*(ledger_parts(pa.concat_tables(ledgers)) if ledgers else []), *files]


def _micros(now: str) -> int:
    moment = datetime.fromisoformat(now)
    return pa.scalar(moment, _TIMESTAMP).value


class _Columns:
    """A frame's columns as Arrow arrays, the frame converted once."""

    def __init__(self, frame: pl.DataFrame):
        self.frame = frame
        self.table = frame.to_arrow()

    def __call__(self, name: str, kind: pa.DataType) -> pa.Array:
        return self.table[name].combine_chunks().cast(kind)

    def times(self, name: str) -> pa.Array:
        return self(name, _TIMESTAMP)


def _seconds_before(decided: int, stamps: pa.Array) -> pa.Array:
    """(decided - stamp) in seconds, rounded once as PostgreSQL's ``extract(epoch ...)::float8`` is."""
    micros = pc.subtract(pa.scalar(decided, pa.int64()), stamps.cast(pa.int64()))
    if (pc.max(pc.abs(micros)).as_py() or 0) >= _EXACT:
        return pa.array([None if m is None else m / 1_000_000 for m in micros.to_pylist()], pa.float64())
    return pc.divide(micros.cast(pa.float64()), 1e6)


_TEXTS = pa.list_(pa.string())


def _text_arrays(frame: _Columns, name: str) -> pa.Array:
    """A column of ``text[]`` literals as `sinks.entity_rows.text_array` writes them (every element
    quoted), as lists: split in Arrow, element by element in Python only where one is escaped."""
    literals = frame(name, pa.string())
    if pc.any(pc.match_substring(literals, "\\")).as_py():
        return pa.array([_elements(text) for text in literals.to_pylist()], _TEXTS)
    split = pc.split_pattern(pc.utf8_slice_codeunits(literals, 2, -2), '","')
    return pc.if_else(pc.equal(literals, "{}"), pa.scalar([], _TEXTS), split)


def _elements(literal: str) -> list[str]:
    if literal == "{}":
        return []
    inner = literal[2:-2]
    if "\\" not in inner:
        return inner.split('","')
    elements, current, index = [], [], 0
    while index < len(inner):
        char = inner[index]
        if char == "\\":
            current.append(inner[index + 1])
            index += 2
        elif inner.startswith('","', index):
            elements.append("".join(current))
            current, index = [], index + 3
        else:
            current.append(char)
            index += 1
    elements.append("".join(current))
    return elements


def _jsonb(frame: _Columns, name: str) -> pa.Array:
    """A column of JSON texts as ``jsonb`` prints them (nulls, most rows of the ledger, skipped)."""
    column = frame.frame.get_column(name)
    if column.null_count() == len(column):
        return pa.nulls(len(column), pa.string())
    return column.map_elements(jsonb_text, return_dtype=pl.String, skip_nulls=True).to_arrow().cast(pa.string())


def _moment(now: str, rows: int) -> pa.Array:
    return pa.repeat(pa.scalar(_micros(now), pa.int64()), rows).cast(_TIMESTAMP)


def _empty_lists(rows: int) -> pa.Array:
    return pa.ListArray.from_arrays(pa.repeat(pa.scalar(0, pa.int32()), rows + 1), pa.array([], pa.string()))


def _partition(claimed: pa.Array, types: pa.Array) -> pa.Array:
    return pc.if_else(pc.is_in(claimed, value_set=types), claimed, pa.scalar(INVALID_ENTITY_TYPE))


def _ledger_table(written: Written, resolved_by: dict[str, list[str]], types: pa.Array) -> pa.Table:
    frame = _Columns(written.ledger)
    decided = _micros(written.now)
    rows = written.ledger.height
    kafka_times, edge_times = frame.times("kafka_timestamp"), frame.times("edge_timestamp")
    if resolved_by:  # a person's resolution: rare
        ids = frame("mutation_id", pa.string()).to_pylist()
        resolved = pa.array([sorted(resolved_by.get(i, ())) for i in ids], _TEXTS)
    else:
        resolved = _empty_lists(rows)
    claimed = frame("entity_type", pa.string())
    computed = {
        "decided_at": _moment(written.now, rows),
        "kafka_timestamp": kafka_times,
        "edge_timestamp": edge_times,
        "kafka_latency_s": _seconds_before(decided, kafka_times),
        "edge_latency_s": _seconds_before(decided, edge_times),
        "conflict_ids": _text_arrays(frame, "conflict_ids"),
        "resolved_conflict_ids": resolved,
        "held_attributes": _jsonb(frame, "held_attributes"),
        CLAIMED_ENTITY_TYPE: claimed,
    }
    columns = [computed[f.name] if f.name in computed else frame(f.name, f.type) for f in MUTATIONS_SCHEMA]
    return pa.Table.from_arrays(
        [*columns, _partition(claimed, types)], schema=MUTATIONS_SCHEMA.append(pa.field("entity_type", pa.string()))
    )


def _other_edge_times(connection: psycopg.Connection, written: Sequence[Written]) -> dict[str, int]:
    ids = sorted({i for w in written for i in w.conflicts.get_column("other_mutation_id").drop_nulls().to_list()})
    if not ids:
        return {}
    with connection.transaction(), connection.cursor() as cursor:
        cursor.execute(_OTHER_EDGE_TIMES, (ids,))
        return {mutation_id: micros for mutation_id, micros in cursor.fetchall() if micros is not None}


def _conflict_table(written: Written, others: dict[str, int], types: pa.Array) -> pa.Table:
    frame = _Columns(written.conflicts)
    rows = written.conflicts.height
    nothing = pa.nulls(rows, pa.string())
    claimed = frame("entity_type", pa.string())
    other_ids = frame("other_mutation_id", pa.string()).to_pylist()
    computed = {
        "attributes": _text_arrays(frame, "attributes"),
        "incoming_values": _jsonb(frame, "incoming_values"),
        "server_values": _jsonb(frame, "server_values"),
        "result_values": _jsonb(frame, "result_values"),
        "detected_at": _moment(written.now, rows),
        "resolved_at": pa.nulls(rows, _TIMESTAMP),
        "resolved_by_mutation_id": nothing,
        "resolution": nothing,
        "other_edge_timestamp": pa.array([others.get(i) for i in other_ids], pa.int64()).cast(_TIMESTAMP),
        CLAIMED_ENTITY_TYPE: claimed,
    }
    if written.ledger is None:
        computed.update({name: pa.nulls(rows, CONFLICTS_SCHEMA.field(name).type) for name in _INCOMING})
    else:  # the incoming mutation's ledger row, written in the same transaction
        ledger = _Columns(written.ledger.select("mutation_id", *_INCOMING))
        at = pc.index_in(frame("mutation_id", pa.string()), value_set=ledger("mutation_id", pa.string()))
        for name in _INCOMING:
            computed[name] = ledger(name, CONFLICTS_SCHEMA.field(name).type).take(at)
    columns = [computed[f.name] if f.name in computed else frame(f.name, f.type) for f in CONFLICTS_SCHEMA]
    return pa.Table.from_arrays(
        [*columns, _partition(claimed, types)], schema=CONFLICTS_SCHEMA.append(pa.field("entity_type", pa.string()))
    )
