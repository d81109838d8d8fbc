"""What one secondary index of `mutation_log` costs the server: ledger rows COPYed in
batches into a freshly migrated schema, and into one with the index created as well
(default: the `(entity_type, entity_id)` index schema version 5 dropped); the backend's
CPU per row from /proc, the two alternating.

Run: .venv/bin/python -m bench.ledger_index [rows, default 200000] [--rounds 4] [--batch 5000]
        [--index "CREATE INDEX ... ON mutation_log (...)"]
(connection settings from MUTAGG_* as for `mutagg`; the server must run on this machine).
Rows look like the job's: random mutation ids, entity ids spread over 60,000 entities of
five types, one batch id per batch.
"""

from __future__ import annotations

import argparse
import io
import random
import uuid

import psycopg

from bench.audit_batch import backend_cpu_s
from bench.workspace import Workspace
from mutagg.settings import DEFAULT_REGISTRY, load_settings
from operators.strategies import CUSTOM_STRATEGIES
from schemas.ddl import LEDGER_COLUMNS
from schemas.registry import load_registry

OLD_INDEX = "CREATE INDEX mutation_log_entity ON mutation_log (entity_type, entity_id)"
TYPES = ("customer", "article", "stock_level", "sales_order", "order_line")
COPY = f"COPY mutation_log ({', '.join(LEDGER_COLUMNS)}) FROM STDIN WITH (FORMAT csv)"


def batch_csv(rng: random.Random, batch: int, size: int) -> bytes:
    lines = io.StringIO()
    for offset in range(batch * size, (batch + 1) * size):
        kind = rng.choice(TYPES)
        lines.write(
            f"m-{uuid.UUID(int=rng.getrandbits(128)).hex},APPLIED,,{kind},{kind[:2]}{rng.randrange(60000):06d},3,"
            f"shop-01,UPDATE,2,5,run-{batch:07d},in,{offset % 4},{offset},2026-11-26 09:00:00+00,"
            f"2026-11-26 09:00:00+00,2026-12-07 02:00:00+00,{{}},,\n")
    return lines.getvalue().encode()


def copy_cpu_per_row(database_url: str, rows: int, size: int, index: str | None) -> float:
    """Backend CPU µs per row of COPYing `rows` ledger rows, a transaction per batch."""
    rng = random.Random(1)
    with psycopg.connect(database_url) as connection:
        if index:
            connection.execute(index)
            connection.commit()
        before = backend_cpu_s(connection)
        for batch in range(rows // size):
            data = batch_csv(rng, batch, size)
            with connection.cursor() as cursor, cursor.copy(COPY) as copy:
                copy.write(data)
            connection.commit()
        return (backend_cpu_s(connection) - before) * 1e6 / rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ledger_index")
    parser.add_argument("rows", nargs="?", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--index", default=OLD_INDEX)
    args = parser.parse_args(argv)
    settings = load_settings()
    registry = load_registry(DEFAULT_REGISTRY, custom_strategies=CUSTOM_STRATEGIES)
    results: dict[str, list[float]] = {"as migrated": [], "with the index": []}
    workspace = Workspace(settings, registry)
    try:
        for round_ in range(args.rounds):
            sides = list(results) if round_ % 2 == 0 else list(reversed(results))
            for side in sides:
                target = workspace.schema(f"r{round_}_{side.split()[0]}")
                cost = copy_cpu_per_row(target.database_url, args.rows, args.batch,
                                        args.index if side == "with the index" else None)
                results[side].append(cost)
                print(f"round {round_} {side:>14}: {cost:.2f} µs of backend CPU per ledger row", flush=True)
    finally:
        workspace.close()
    (plain, indexed) = (sorted(values)[len(values) // 2] for values in results.values())
    print(f"median: as migrated {plain:.2f} µs, with the index {indexed:.2f} µs per row; "
          f"the index costs {indexed - plain:.2f} µs ({indexed / plain:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
