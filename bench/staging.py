"""What emptying the staging tables costs a transaction: `ON COMMIT DELETE ROWS` (every staging
table truncated at every commit that touched a temporary table, as before session 13) against
`sinks.entity_rows.Staging` (the used table emptied by the transaction that uses it), the two
alternating on one connection each, one entity type written per transaction.

Run: .venv/bin/python -m bench.staging [--rows 1 100 5000] [--transactions 200] [--rounds 3]
(connection settings from MUTAGG_* as for `mutagg`). Prints, per size, the median wall time of
a transaction (COPY into the staging table, the upsert, COMMIT) on each side and their ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import psycopg
from psycopg import sql

from bench.workspace import Workspace
from mutagg.settings import DEFAULT_REGISTRY, load_settings
from operators.entity_state import EntityState
from operators.strategies import CUSTOM_STRATEGIES
from schemas.registry import load_registry
from sinks import entity_rows

SIDES = ("on commit delete rows", "emptied by its user")


def _connect(database_url: str, registry, side: str) -> tuple[psycopg.Connection, dict]:
    connection = psycopg.connect(database_url)
    plans = {name: entity_rows.plan(t, connection) for name, t in registry.entity_types.items()}
    with connection.transaction():
        for t in registry.entity_types.values():
            stage = sql.Identifier(f"_stage_{t.table}")
            statement = entity_rows.stage_statement(stage, sql.Identifier(t.table))
            if side == SIDES[0]:
                statement = sql.SQL("{} ON COMMIT DELETE ROWS").format(statement)
            connection.execute(statement)
    return connection, plans


def _transaction(connection: psycopg.Connection, table: entity_rows.TablePlan, frame, side: str) -> float:
    began = time.perf_counter()
    with connection.transaction(), connection.cursor() as cursor:
        cursor.execute("SET LOCAL mutagg.writer = 'job'")
        if side == SIDES[0]:
            entity_rows.copy_frame(cursor, table.copy, frame)
            cursor.execute(table.upsert)
        else:
            entity_rows.upsert_frame(cursor, table, frame)
    return time.perf_counter() - began


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.staging")
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 100, 5000])
    parser.add_argument("--transactions", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    registry = load_registry(DEFAULT_REGISTRY, custom_strategies=CUSTOM_STRATEGIES)
    workspace = Workspace(load_settings(), registry)
    table_type = registry.entity_types["customer"]
    try:
        connections = {side: _connect(workspace.schema(f"s{i}").database_url, registry, side)
                       for i, side in enumerate(SIDES)}
        for rows in args.rows:
            times: dict[str, list[float]] = {side: [] for side in SIDES}
            for round_ in range(args.rounds):
                for side in SIDES if round_ % 2 == 0 else reversed(SIDES):
                    connection, plans = connections[side]
                    table = plans[table_type.name]
                    for n in range(args.transactions):
                        states = {f"c{(n * rows + i) % 50_000:06d}": EntityState(n + 1, False, {"name": f"n{n}"}, {},
                                                                                 None) for i in range(rows)}
                        frame = entity_rows.rows_frame(table, states)
                        times[side].append(_transaction(connection, table, frame, side))
            old, new = (statistics.median(times[side]) * 1000 for side in SIDES)
            print(f"{rows:>6} rows per transaction: {SIDES[0]} {old:8.2f} ms, {SIDES[1]} {new:8.2f} ms "
                  f"({new / old:.2f}x)", flush=True)
        for connection, _ in connections.values():
            connection.close()
    finally:
        workspace.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
