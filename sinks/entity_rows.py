"""Read entity rows for update, and write the coalesced rows back with COPY.

Rows travel as Polars frames built from the registry's types, then as CSV into
a temporary staging table, then one set-based upsert per entity type.
"""

from __future__ import annotations

import io
from collections.abc import Iterable

import orjson
import polars as pl
import psycopg
from psycopg import sql

from operators.entity_state import EntityState, Provenance
from schemas.registry import EntityType
from schemas.values import POLARS_TYPES, to_copy_text


def _quoted(entity_type: EntityType) -> dict[str, sql.Identifier]:
    return {name: sql.Identifier(name) for name in (entity_type.key, *entity_type.attributes)}


def load_for_update(
    cursor: psycopg.Cursor, entity_type: EntityType, entity_ids: Iterable[str]
) -> dict[str, EntityState]:
    """Lock and read the rows of `entity_ids` (absent ones come back as version 0)."""
    ids = sorted(set(entity_ids))
    states = {entity_id: EntityState() for entity_id in ids}
    if not ids:
        return states
    names = list(entity_type.attributes)
    query = sql.SQL(
        "SELECT {key}, {attrs}version, deleted, mutagg_provenance FROM {table} "
        "WHERE {key} = ANY(%s) ORDER BY {key} FOR UPDATE"
    ).format(
        key=sql.Identifier(entity_type.key),
        attrs=sql.SQL("").join(sql.SQL("{}, ").format(sql.Identifier(n)) for n in names),
        table=sql.Identifier(entity_type.table),
    )
    cursor.execute(query, (ids,))
    for row in cursor.fetchall():
        entity_id, values, (version, deleted, provenance) = row[0], row[1:-3], row[-3:]
        states[entity_id] = EntityState(
            version=version,
            deleted=deleted,
            values={name: value for name, value in zip(names, values) if value is not None},
            provenance={
                name: Provenance.from_json(entry)
                for name, entry in (provenance or {}).items()
                if isinstance(entry, list)
            },
        )
    return states


def rows_frame(entity_type: EntityType, states: dict[str, EntityState]) -> pl.DataFrame:
    """The coalesced rows of one entity type as a frame in the table's column order."""
    ids = sorted(states)
    columns: dict[str, list] = {entity_type.key: ids}
    schema: dict[str, pl.DataType] = {entity_type.key: pl.String}
    for name, attribute in entity_type.attributes.items():
        # Integers travel as text too: PostgreSQL, not the frame builder, judges their range.
        if POLARS_TYPES[attribute.type] in (pl.Float64, pl.Boolean):
            columns[name] = [states[i].values.get(name) for i in ids]
            schema[name] = POLARS_TYPES[attribute.type]
        else:
            columns[name] = [to_copy_text(attribute.type, states[i].values.get(name)) for i in ids]
            schema[name] = pl.String
    columns["version"] = [states[i].version for i in ids]
    columns["deleted"] = [states[i].deleted for i in ids]
    columns["mutagg_provenance"] = [orjson.dumps(states[i].provenance_json()).decode() for i in ids]
    schema.update(version=pl.Int64, deleted=pl.Boolean, mutagg_provenance=pl.String)
    return pl.DataFrame(columns, schema=schema)


def copy_frame(cursor: psycopg.Cursor, table: sql.Composable, frame: pl.DataFrame, on_copy=lambda: None) -> None:
    """COPY a frame into `table` (columns by name, CSV: unquoted empty is NULL)."""
    if frame.height == 0:
        return
    buffer = io.BytesIO()
    frame.write_csv(buffer, include_header=False, float_precision=None)
    statement = sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(
        table, sql.SQL(", ").join(sql.Identifier(c) for c in frame.columns)
    )
    with cursor.copy(statement) as copy:
        copy.write(buffer.getbuffer())
        on_copy()  # crash tests stop here: data sent, COPY not finished


def upsert(
    cursor: psycopg.Cursor, entity_type: EntityType, states: dict[str, EntityState], on_copy=lambda: None
) -> None:
    """Write the final state of every touched entity: one COPY and one statement."""
    if not states:
        return
    frame = rows_frame(entity_type, states)
    table = sql.Identifier(entity_type.table)
    stage = sql.Identifier(f"_stage_{entity_type.table}")
    cursor.execute(
        sql.SQL(
            "CREATE TEMP TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        ).format(stage, table)
    )
    copy_frame(cursor, stage, frame, on_copy)
    columns = [sql.Identifier(c) for c in frame.columns]
    updates = [
        sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c))
        for c in frame.columns
        if c != entity_type.key
    ]
    cursor.execute(
        sql.SQL(
            "INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage} "
            "ON CONFLICT ({key}) DO UPDATE SET {updates}, mutagg_updated_at = now()"
        ).format(
            table=table,
            cols=sql.SQL(", ").join(columns),
            stage=stage,
            key=sql.Identifier(entity_type.key),
            updates=sql.SQL(", ").join(updates),
        )
    )
