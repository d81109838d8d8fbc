"""The entity rows rendered by the compiled core (sinks/entity_rows.py `rows`) are the rows the
Polars frame (`rows_frame`, written as CSV) gives, as PostgreSQL reads them: both payloads are
COPYed into two temporary tables of the registry's column types and compared row by row as text
(numeric keeps its scale, float8 its exact value, -0 included, jsonb its value)."""

from __future__ import annotations

import io

import polars as pl
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from operators.entity_state import EntityState
from schemas.values import SQL_TYPES
from sinks import entity_rows
from tests.unit.test_entity_rows_core import SAMPLE, TABLE, batches

COLUMNS = (*TABLE.schema, *entity_rows.EXPECTED)
row_stamps = st.none() | st.tuples(st.integers(1, 2**63 - 1), st.integers(0, 2**32 - 1).map(str))


def frame_payload(states: dict[str, EntityState], stamps: dict | None) -> bytes:
    """The oracle: the rows as a Polars frame, written as CSV as `copy_frame` writes it."""
    frame = entity_rows.rows_frame(TABLE, states)
    if stamps is not None:
        expected = [stamps[key] for key in frame.get_column(SAMPLE.key).to_list()]
        frame = frame.with_columns(
            pl.Series(entity_rows.EXPECTED[0], [None if s is None else s[0] for s in expected], pl.Int64),
            pl.Series(entity_rows.EXPECTED[1], [None if s is None else s[1] for s in expected], pl.String))
    buffer = io.BytesIO()
    frame.write_csv(buffer, include_header=False, float_precision=None)
    return buffer.getvalue()


def read_back(connection: psycopg.Connection, table: str, payload: bytes, checked: bool) -> list[str]:
    """Each row as PostgreSQL reads `payload` into `table`, as text, in key order."""
    columns = COLUMNS if checked else tuple(TABLE.schema)
    connection.execute(sql.SQL("TRUNCATE {}").format(sql.Identifier(table)))
    with connection.cursor() as cursor:
        with cursor.copy(entity_rows.copy_statement(sql.Identifier(table), columns)) as copy:
            copy.write(payload)
        return [row[0] for row in cursor.execute(
            sql.SQL("SELECT t::text FROM {} AS t ORDER BY {} COLLATE \"C\"").format(
                sql.Identifier(table), sql.Identifier(SAMPLE.key))).fetchall()]


def create_tables(connection: psycopg.Connection) -> None:
    """`from_frame` and `from_core`: the columns of a staging table of `SAMPLE` (the registry's
    SQL types) with the `EXPECTED` ones."""
    definition = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(kind)) for name, kind in (
            (SAMPLE.key, "text"),
            *((name, SQL_TYPES[a.type]) for name, a in SAMPLE.attributes.items()),
            ("version", "bigint"), ("deleted", "boolean"), ("mutagg_provenance", "jsonb"),
            (entity_rows.EXPECTED[0], "bigint"), (entity_rows.EXPECTED[1], "xid")))
    connection.execute("SET TimeZone = 'UTC'")
    for table in ("from_frame", "from_core"):
        connection.execute(sql.SQL("CREATE TEMP TABLE {} ({})").format(sql.Identifier(table), definition))


def test_the_core_renders_the_rows_postgresql_reads_from_the_frame(base_settings):
    with psycopg.connect(base_settings.database_url, autocommit=True) as connection:
        create_tables(connection)

        @settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
        @given(batches, st.booleans(), st.data())
        def agree(states: dict[str, EntityState], checked: bool, data) -> None:
            stamps = {key: data.draw(row_stamps) for key in states} if checked else None
            rows = entity_rows.rows(TABLE, states, stamps)
            assert rows.keys == sorted(states)
            assert rows.present == (None if stamps is None else [k for k in rows.keys if stamps[k] is not None])
            expected = read_back(connection, "from_frame", frame_payload(states, stamps), checked)
            assert read_back(connection, "from_core", rows.payload, checked) == expected

        agree()



def test_a_nul_in_a_text_is_refused_by_postgresql_as_from_the_frame(base_settings):
    """Strings are coerced without NUL (schemas/values.py); one that got here anyway fails the COPY
    either way, as an invalid byte sequence."""
    states = {"k": EntityState(1, False, {"a_string": "x\x00y"})}
    with psycopg.connect(base_settings.database_url, autocommit=True) as connection:
        create_tables(connection)
        for table, payload in (("from_frame", frame_payload(states, None)),
                               ("from_core", entity_rows.rows(TABLE, states).payload)):
            with pytest.raises(psycopg.errors.CharacterNotInRepertoire):
                read_back(connection, table, payload, checked=False)
