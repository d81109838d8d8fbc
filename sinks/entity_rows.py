"""Read entity rows for update, and write the coalesced rows back with COPY.

Rows are rendered by the compiled core straight to the CSV a COPY into a temporary staging
table reads (`rows`, `EntityRows`), then one set-based upsert (or checked write) per entity type.
The SQL of each entity type is composed once (`TablePlan`), not per batch. `rows_frame` builds
the same rows as a Polars frame (`copy_frame` writes it as CSV): the oracle of the core's
rendering in tests, and the form bench/ code reads.

A staging table is emptied by the transaction that uses it, before its COPY (`Staging`), not
by `ON COMMIT DELETE ROWS`: that truncates every such table at every commit that touched any
temporary table, used or not, and a truncation is file work per relation (the table, its TOAST
table and index), a fixed cost per batch that small batches paid in full (BENCHMARKS.md,
"Staging tables emptied by the transaction that uses them").
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import orjson
import polars as pl
import psycopg
from psycopg import sql

from operators.compiled import row_writer
from operators.entity_state import EntityState
from schemas.registry import EntityType
from schemas.values import POLARS_TYPES, to_copy_text

_dumps, _loads = orjson.dumps, orjson.loads


def _json_text(value: Any) -> str:
    return _dumps(value).decode()


def text_array(values: list[str] | tuple[str, ...]) -> str:
    """A `text[]` literal (also COPY's array form): for thousands of ids as one parameter this
    is several times cheaper than psycopg's list adaptation."""
    if not values:
        return "{}"
    joined = '","'.join(values)
    if "\\" in joined or joined.count('"') != 2 * (len(values) - 1):
        joined = '","'.join(v.replace("\\", "\\\\").replace('"', '\\"') for v in values)
    return '{"' + joined + '"}'


_PLAIN = {"string": str, "integer": int, "decimal": Decimal, "date": date, "timestamp": datetime}
_RENDER = {"integer": str, "decimal": Decimal.__str__, "date": date.isoformat, "timestamp": datetime.isoformat}


class ColumnText:
    """`to_copy_text` for a whole column of one attribute type.

    Values of a type have one Python class (coerced on decode), so the general
    function's type tests are decided once per column (the classes present are
    found in C); a column holding anything else goes the general way, value by value.
    """

    def __init__(self, attr_type: str):
        self.attr_type = attr_type
        self.plain = {_PLAIN.get(attr_type), type(None)}
        self.render = _RENDER.get(attr_type)

    def __call__(self, column: list[Any]) -> list[Any]:
        if self.attr_type == "json":
            return [None if value is None else _json_text(value) for value in column]
        if set(map(type, column)) <= self.plain:  # exact classes: no bool as int, no datetime as date
            render = self.render
            return column if render is None else [None if value is None else render(value) for value in column]
        attr_type = self.attr_type
        return [to_copy_text(attr_type, value) for value in column]


STAGE_DEAD_ROWS = 2000
"""Dead rows a staging table may hold before it is truncated instead of deleted from."""


@dataclass
class Staging:
    """How one connection's staging table of one entity type is emptied before each use, in the
    transaction that fills it: a DELETE while it holds few rows (a cost per row; the rows stay dead
    in the table, and the next upserts scan them), and once more than `limit` rows were copied in
    since the last TRUNCATE (a fixed cost), one TRUNCATE takes them all. Rows a rolled-back
    transaction copied in count too (they are counted when copied in)."""

    delete: bytes
    truncate: bytes
    limit: int = STAGE_DEAD_ROWS
    dead: int = 0

    def filled(self, rows: int) -> None:
        self.dead += rows

    def emptying(self) -> bytes:
        """The statement that empties the table now."""
        if self.dead > self.limit:
            self.dead = 0
            return self.truncate
        return self.delete


EXPECTED = ("mutagg_expected_version", "mutagg_expected_xmin")
"""Staging columns of a checked write: the `(version, xmin)` a row must still have to be replaced."""


@dataclass(frozen=True)
class TablePlan:
    """Everything about one entity type's table that does not change from batch to batch."""

    entity_type: EntityType
    names: tuple[str, ...]
    select: bytes
    read: bytes
    """`select` without the lock, and with each row's `xmin` last (for prepare_ahead.py)."""
    share: bytes
    """Share-lock rows reading only `(key, version, xmin)`: a prepared batch checks the rows it
    reads but does not write with it (sinks/prepare_ahead.py)."""
    stage: bytes
    copy: bytes
    upsert: bytes
    copy_checked: bytes
    """COPY of rows with the `(version, xmin)` each expects to replace (`EXPECTED`; none: absent)."""
    update_checked: bytes
    """Replace the rows staged by `copy_checked` that are still as expected, in the staging order."""
    insert_checked: bytes
    """Insert the rows staged by `copy_checked` expected absent, unless present after all."""
    columns: tuple[tuple[str, Any, ColumnText | None], ...]
    """(attribute, Polars dtype, text rendering or None) in the table's column order."""
    schema: dict[str, Any]
    staging: Staging
    """Mutable: a plan belongs to one connection (its temporary staging table)."""
    writer: Any
    """The compiled core's `RowWriter` of the table (`rows`)."""


def plan(entity_type: EntityType, context: psycopg.Connection | None = None) -> TablePlan:
    names = tuple(entity_type.attributes)
    key, table = sql.Identifier(entity_type.key), sql.Identifier(entity_type.table)
    stage = sql.Identifier(f"_stage_{entity_type.table}")
    attrs = sql.SQL("").join(sql.SQL("{}, ").format(sql.Identifier(n)) for n in names)
    rows = "SELECT {key}, {attrs}version, deleted, mutagg_provenance::text{xmin} FROM {table} "
    where = "WHERE {key} = ANY(%s::text[]) ORDER BY {key}"
    select = sql.SQL(rows + where + " FOR UPDATE").format(key=key, attrs=attrs, table=table, xmin=sql.SQL(""))
    read = sql.SQL(rows + where).format(key=key, attrs=attrs, table=table, xmin=sql.SQL(", xmin::text"))
    share = sql.SQL("SELECT {key}, version, xmin::text FROM {table} " + where + " FOR SHARE").format(
        key=key, table=table
    )
    columns: list[tuple[str, Any, ColumnText | None]] = []
    for name, attribute in entity_type.attributes.items():
        # Integers travel as text too: PostgreSQL, not the frame builder, judges their range.
        if POLARS_TYPES[attribute.type] in (pl.Float64, pl.Boolean):
            columns.append((name, POLARS_TYPES[attribute.type], None))
        else:
            columns.append((name, pl.String, ColumnText(attribute.type)))
    schema = {entity_type.key: pl.String, **{name: dtype for name, dtype, _ in columns}}
    schema.update(version=pl.Int64, deleted=pl.Boolean, mutagg_provenance=pl.String)
    quoted = [sql.Identifier(c) for c in schema]
    upsert = sql.SQL(
        "INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage} "
        "ON CONFLICT ({key}) DO UPDATE SET {updates}, mutagg_updated_at = now()"
    ).format(
        table=table, cols=sql.SQL(", ").join(quoted), stage=stage, key=key,
        updates=sql.SQL(", ").join(sql.SQL("{c} = EXCLUDED.{c}").format(c=c) for c in quoted[1:]),
    )
    expected_version, expected_xmin = (sql.Identifier(c) for c in EXPECTED)
    # The key = ANY(...) makes the plan a look-up by key per staged row (never a scan of the table).
    update_checked = sql.SQL(
        "UPDATE {table} AS t SET {updates}, mutagg_updated_at = now() FROM {stage} AS s "
        "WHERE t.{key} = s.{key} AND t.{key} = ANY(%s::text[]) "
        "AND t.version = s.{version} AND t.xmin = s.{xmin}"
    ).format(
        table=table, stage=stage, key=key, version=expected_version, xmin=expected_xmin,
        updates=sql.SQL(", ").join(sql.SQL("{c} = s.{c}").format(c=c) for c in quoted[1:]),
    )
    insert_checked = sql.SQL(
        "INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage} WHERE {version} IS NULL "
        "ON CONFLICT ({key}) DO NOTHING"
    ).format(table=table, cols=sql.SQL(", ").join(quoted), stage=stage, key=key, version=expected_version)
    return TablePlan(
        entity_type=entity_type,
        names=names,
        select=select.as_bytes(context),
        read=read.as_bytes(context),
        share=share.as_bytes(context),
        stage=stage_statement(stage, table, checked=True).as_bytes(context),
        copy=copy_statement(stage, tuple(schema)).as_bytes(context),
        upsert=upsert.as_bytes(context),
        copy_checked=copy_statement(stage, (*schema, *EXPECTED)).as_bytes(context),
        update_checked=update_checked.as_bytes(context),
        insert_checked=insert_checked.as_bytes(context),
        columns=tuple(columns),
        schema=schema,
        staging=staging(stage, context),
        writer=row_writer([(name, attribute.type) for name, attribute in entity_type.attributes.items()]),
    )


def stage_statement(stage: sql.Identifier, table: sql.Identifier, checked: bool = False) -> sql.Composed:
    """Create the staging table of `table` (once per connection; its rows outlive a commit), with
    the `EXPECTED` columns of `write_checked` if `checked`."""
    if not checked:
        return sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS)").format(stage, table)
    return sql.SQL("CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS, {} bigint, {} xid)").format(
        stage, table, *(sql.Identifier(c) for c in EXPECTED))


def staging(stage: sql.Identifier, context: psycopg.Connection | None = None) -> Staging:
    return Staging(
        sql.SQL("DELETE FROM {}").format(stage).as_bytes(context),
        sql.SQL("TRUNCATE {}").format(stage).as_bytes(context),
    )


def load_for_update(
    cursor: psycopg.Cursor, entity_type: EntityType | TablePlan, entity_ids: Iterable[str]
) -> dict[str, EntityState]:
    """Lock and read the rows of `entity_ids` (absent ones come back as version 0)."""
    table = entity_type if isinstance(entity_type, TablePlan) else plan(entity_type, cursor.connection)
    ids = sorted(set(entity_ids))
    if not ids:
        return {}
    return _states(table, ids, cursor.execute(table.select, (text_array(ids),)).fetchall())


def read_unlocked(
    cursor: psycopg.Cursor, table: TablePlan, entity_ids: Iterable[str]
) -> tuple[dict[str, EntityState], dict[str, tuple[int, str]]]:
    """Read the rows of `entity_ids` without locking them: their states (absent ones as version
    0) and, per present row, `(version, xmin)` to check later that it is still the same row."""
    ids = sorted(set(entity_ids))
    if not ids:
        return {}, {}
    rows = cursor.execute(table.read, (text_array(ids),)).fetchall()
    stamps = {row[0]: (row[-4], row[-1]) for row in rows}
    return _states(table, ids, [row[:-1] for row in rows]), stamps


def share_stamps(cursor: psycopg.Cursor, table: TablePlan, entity_ids: list[str]) -> dict[str, tuple[int, str]]:
    """Share-lock the rows of `entity_ids` (sorted): nobody else changes them before this transaction
    ends; `(version, xmin)` of each present one."""
    if not entity_ids:
        return {}
    rows = cursor.execute(table.share, (text_array(entity_ids),)).fetchall()
    return {key: (version, xmin) for key, version, xmin in rows}


def _states(table: TablePlan, ids: list[str], rows: list[tuple]) -> dict[str, EntityState]:
    names = table.names
    states: dict[str, EntityState] = {}
    for row in rows:
        # Provenance comes as text (orjson called here directly is cheaper than psycopg's jsonb
        # loader) and stays as read; its entries are parsed when a mutation needs them.
        states[row[0]] = EntityState(
            row[-3], row[-2], {name: value for name, value in zip(names, row[1:]) if value is not None},
            {}, None if row[-1] is None else _loads(row[-1]),
        )
    if len(states) < len(ids):
        for entity_id in ids:
            if entity_id not in states:
                states[entity_id] = EntityState()
    return states


def rows_frame(entity_type: EntityType | TablePlan, states: dict[str, EntityState]) -> pl.DataFrame:
    """The coalesced rows of one entity type as a frame in the table's column order."""
    table = entity_type if isinstance(entity_type, TablePlan) else plan(entity_type)
    ids = sorted(states)
    rows = [states[i] for i in ids]
    names = table.names
    # Row by row in C (map), then transposed (zip): no Python loop per cell.
    cells = list(zip(*[tuple(map(state.values.get, names)) for state in rows])) if names else []
    columns: dict[str, list] = {table.entity_type.key: ids}
    for (name, _, text), column in zip(table.columns, cells):
        columns[name] = list(column) if text is None else text(list(column))
    columns["version"] = [state.version for state in rows]
    columns["deleted"] = [state.deleted for state in rows]
    columns["mutagg_provenance"] = [_dumps(state.provenance_json()).decode() for state in rows]
    return pl.DataFrame(columns, schema=table.schema)


@dataclass(frozen=True)
class EntityRows:
    """The rows of one entity type as the payload of a COPY (FORMAT csv) into its staging table,
    in key order: from `rows`, for `upsert_rows`, or with stamps for `write_checked`."""

    keys: list[str]
    payload: bytes
    present: list[str] | None = None
    """Rows with stamps (`TablePlan.copy_checked`): the keys of the rows expected present, in
    order; None: rows without (`TablePlan.copy`)."""

    def __len__(self) -> int:
        return len(self.keys)


def rows(table: TablePlan, states: dict[str, EntityState],
         stamps: dict[str, tuple[int, str] | None] | None = None) -> EntityRows:
    """The coalesced rows of one entity type in the table's column order (what `rows_frame` holds),
    rendered by the compiled core; with `stamps`, each followed by the `(version, xmin)` it expects
    to replace (None: it expects no row), for `write_checked`."""
    keys = sorted(states)
    payload, present = table.writer.render(keys, states, stamps)
    return EntityRows(keys, payload, present)


def copy_statement(table: sql.Composable, columns: tuple[str, ...]) -> sql.Composed:
    """COPY into `table` (columns by name, CSV: unquoted empty is NULL)."""
    return sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(
        table, sql.SQL(", ").join(sql.Identifier(c) for c in columns)
    )


def copy_frame(
    cursor: psycopg.Cursor, table: sql.Composable | bytes, frame: pl.DataFrame, on_copy=lambda: None
) -> None:
    """COPY a frame into `table` (a table name, or a whole COPY statement from `copy_statement`)."""
    if frame.height == 0:
        return
    buffer = io.BytesIO()
    frame.write_csv(buffer, include_header=False, float_precision=None)
    statement = table if isinstance(table, bytes) else copy_statement(table, tuple(frame.columns))
    copy_payload(cursor, statement, buffer.getbuffer(), on_copy)


def copy_payload(cursor: psycopg.Cursor, statement: bytes | sql.Composable, payload, on_copy=lambda: None) -> None:
    """COPY `payload` (CSV rows) with `statement`."""
    with cursor.copy(statement) as copy:
        copy.write(payload)
        on_copy()  # crash tests stop here: data sent, COPY not finished


class StaleRows(Exception):
    """A checked write found a row other than expected (changed, or present where absent was
    expected): the transaction must roll back; nothing it wrote may commit."""


def write_checked(cursor: psycopg.Cursor, table: TablePlan, rows: EntityRows, on_copy=lambda: None) -> None:
    """Write `rows` (from `rows` with stamps) where each is still the row it expects: an update
    where `(version, xmin)` match, an insert where no row was expected. Raises `StaleRows` if any
    row was not written (the caller rolls back).

    No row is locked beforehand: each statement locks what it writes. Under REPEATABLE READ a
    row another transaction changed (or deleted, or inserted) since this transaction's snapshot
    raises SerializationFailure there; one changed before it fails the match, so is not written.
    (BENCHMARKS "Checked writes instead of row locks".)"""
    if rows.present is None:
        raise ValueError("rows without the stamps they expect")
    height = len(rows.keys)
    if height == 0:
        return
    cursor.execute(table.staging.emptying())  # as `upsert_rows`: this use's rows only
    table.staging.filled(height)
    copy_payload(cursor, table.copy_checked, rows.payload, on_copy)
    written = 0
    present = len(rows.present)
    if present:
        written += cursor.execute(table.update_checked, (text_array(rows.present),)).rowcount
    if present < height:
        written += cursor.execute(table.insert_checked).rowcount
    if written != height:
        raise StaleRows(f"{table.entity_type.name}: {height - written} of {height} rows not as expected")


def upsert_rows(cursor: psycopg.Cursor, table: TablePlan, rows: EntityRows, on_copy=lambda: None) -> None:
    """Write the final state of every touched entity, as rendered by `rows`, in the open
    transaction: the staging table emptied (`table.stage` must have created it on this
    connection), one COPY into it, one upsert."""
    if rows.present is not None:
        raise ValueError("rows with stamps are written by write_checked")
    if not rows.keys:
        return
    _upsert(cursor, table, len(rows.keys), rows.payload, on_copy)


def upsert_frame(cursor: psycopg.Cursor, table: TablePlan, frame: pl.DataFrame, on_copy=lambda: None) -> None:
    """`upsert_rows` of a frame built by `rows_frame` (bench/ code and tests)."""
    if frame.height == 0:
        return
    buffer = io.BytesIO()
    frame.write_csv(buffer, include_header=False, float_precision=None)
    _upsert(cursor, table, frame.height, buffer.getbuffer(), on_copy)


def _upsert(cursor: psycopg.Cursor, table: TablePlan, height: int, payload, on_copy) -> None:
    # Emptied first, in this transaction: the upsert takes exactly what this COPY stages, whatever
    # an earlier use left (rows a use leaves stay until the next one, which deletes them).
    cursor.execute(table.staging.emptying())
    table.staging.filled(height)
    copy_payload(cursor, table.copy, payload, on_copy)
    cursor.execute(table.upsert)
