"""Staging tables emptied by their own transaction (sinks/entity_rows.py, `Staging`): what one
transaction staged is never written again by a later one on the same connection, whether it
committed or rolled back, whether its rows were deleted or truncated."""

from __future__ import annotations

from decimal import Decimal

import psycopg
import pytest

from operators.entity_state import EntityState
from sinks import entity_rows
from tests.integration.conftest import query
from tests.integration.test_semantics import REGISTRY

pytestmark = pytest.mark.integration

CUSTOMER = REGISTRY.entity_types["customer"]


def _state(name: str, version: int = 1) -> EntityState:
    return EntityState(version, False, {"name": name, "balance": Decimal("1.50")}, {}, None)


def _write(connection: psycopg.Connection, table: entity_rows.TablePlan, states: dict[str, EntityState]) -> None:
    with connection.transaction(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL mutagg.writer = 'job'")
        entity_rows.upsert_frame(cursor, table, entity_rows.rows_frame(table, states))


def _staged(connection: psycopg.Connection) -> int:
    return connection.execute(b"SELECT count(*) FROM _stage_customer").fetchone()[0]


@pytest.mark.parametrize("limit", [0, 3, 10_000], ids=["truncate-always", "both", "delete-only"])
def test_a_later_transaction_never_writes_what_an_earlier_one_staged(settings, limit):
    with psycopg.connect(settings.database_url, autocommit=True) as connection:
        table = entity_rows.plan(CUSTOMER, connection)
        table.staging.limit = limit
        connection.execute(table.stage)
        _write(connection, table, {"c1": _state("first"), "c2": _state("first")})
        # The ERP changes c1 after the job wrote it; a rolled-back batch stages c2 again.
        with psycopg.connect(settings.database_url, autocommit=True) as erp:
            erp.execute("UPDATE customer SET name = 'by the ERP' WHERE id = 'c1'")
        with pytest.raises(RuntimeError), connection.transaction(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL mutagg.writer = 'job'")
            entity_rows.copy_frame(cursor, table.copy, entity_rows.rows_frame(table, {"c2": _state("rolled back")}))
            table.staging.filled(1)
            raise RuntimeError("the batch fails after its COPY")
        for round_ in range(5):  # later batches write other rows only
            _write(connection, table, {f"n{round_}": _state("later")})
            assert _staged(connection) == 1  # this use's row, deleted by the next use
        names = dict(query(settings, "SELECT id, name FROM customer ORDER BY id"))
    assert names == {"c1": "by the ERP", "c2": "first", **{f"n{i}": "later" for i in range(5)}}


def test_small_uses_delete_and_the_dead_rows_are_truncated_at_the_limit():
    staging = entity_rows.Staging(b"DELETE", b"TRUNCATE", limit=5)
    chosen = []
    for rows in (2, 2, 1, 1, 7, 3):
        staging.filled(rows)
        chosen.append(staging.emptying())
    # dead rows: 2, 4, 5, 6 > 5 -> truncate (0), 7 > 5 -> truncate (0), 3
    assert chosen == [b"DELETE", b"DELETE", b"DELETE", b"TRUNCATE", b"TRUNCATE", b"DELETE"]
