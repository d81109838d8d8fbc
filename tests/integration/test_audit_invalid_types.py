"""Hostile input cannot shape the audit's layout (issue 20 item 7): 10,000 rejected
mutations, each claiming a type of its own, land in one ``entity_type=_invalid``
partition per day with the claimed type in ``claimed_entity_type``; the data sets
still read as one with DuckDB, Polars and pyarrow, through export, catch-up and
compaction."""

from __future__ import annotations

import argparse
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import psycopg
import pyarrow.dataset as ds
import pytest

from mutagg import audit_cmd
from mutagg.settings import Settings
from operators.strategies import CUSTOM_STRATEGIES
from schemas.audit import CLAIMED_ENTITY_TYPE, INVALID_ENTITY_TYPE, PARTITIONING
from schemas.registry import load_registry
from sinks.audit import missing_batches
from sinks.audit_store import AuditStore

pytestmark = pytest.mark.integration

HOSTILE = 10_000
DAYS = tuple((datetime.now(UTC) - timedelta(days=back)).replace(hour=12) for back in (3, 2))
SHAPES = ("ware; DROP TABLE hw_ware; -- {i}", "../../etc/{i}", "a/b={i}", "__HIVE_DEFAULT_PARTITION__{i}",
          "é😀 {i}", "%2F{i}", "x" * 250 + "{i}", "customer{i}", ".{i}", "line\nbreak {i}")
MUTATION = ("mutation_id", "status", "reason", "entity_type", "entity_id", "batch_id", "kafka_topic",
            "kafka_partition", "kafka_offset", "decided_at")
CONFLICT = ("conflict_id", "entity_type", "entity_id", "attributes", "mutation_id", "strategy", "status",
            "batch_id", "detected_at")


def _claimed(i: int) -> str | None:
    """10,000 distinct strings a node could send, plus a few NULL, '' and reserved-looking ones."""
    return SHAPES[i % len(SHAPES)].format(i=i)


def _ledger(types: tuple[str, ...]) -> tuple[list[tuple], list[tuple]]:
    rows = [(f"bad-{i:05d}", "REJECTED", "UNKNOWN_ENTITY_TYPE", _claimed(i), None, f"b{i % 40:02d}", "in", 0, i,
             DAYS[i % 2]) for i in range(HOSTILE)]
    odd = [None, "", INVALID_ENTITY_TYPE, "_INVALID"]
    rows += [(f"odd-{i}", "REJECTED", "INVALID_FIELD", t, None, "b00", "in", 1, i, DAYS[0]) for i, t in enumerate(odd)]
    rows += [(f"ok-{name}", "APPLIED", None, name, "1", "b01", "in", 2, n, DAYS[1]) for n, name in enumerate(types)]
    # A conflict whose type left the registry since it was detected: it must not make a directory either.
    conflicts = [("k-ok", types[0], "1", ["notes"], f"ok-{types[0]}", "manual", "AUTO_RESOLVED", "b01", DAYS[1]),
                 ("k-gone", "retired_type", "1", ["notes"], "bad-00001", "manual", "AUTO_RESOLVED", "b01", DAYS[1])]
    return rows, conflicts


def _cli(settings: Settings, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    audit_cmd.add_parser(parser.add_subparsers(dest="command"))
    registry = load_registry(settings.registry, custom_strategies=CUSTOM_STRATEGIES)
    return audit_cmd.run(parser.parse_args(list(argv)), settings, registry)


def _layout(audit: Path) -> dict[tuple[str, str], set[str]]:
    """{(data set, date=...): {entity_type=... directory names}}."""
    found: dict[tuple[str, str], set[str]] = {}
    for day in audit.glob("*/date=*"):
        found[(day.parent.name, day.name)] = {p.name for p in day.iterdir()}
    return found


def _read_as_one(audit: Path) -> dict[str, Counter]:
    """The mutations data set by DuckDB, Polars and pyarrow: (partition, claimed type) counts."""
    glob = f"{audit}/mutations/**/*.parquet"
    duck = duckdb.connect().execute(
        f"SELECT entity_type, {CLAIMED_ENTITY_TYPE} FROM read_parquet('{glob}', hive_partitioning = true, "
        "hive_types = {'date': DATE, 'entity_type': VARCHAR})").fetchall()
    polars = pl.scan_parquet(glob, hive_partitioning=True).select("entity_type", CLAIMED_ENTITY_TYPE).collect().rows()
    arrow = ds.dataset(audit / "mutations", format="parquet", partitioning=PARTITIONING).to_table(
        columns=["entity_type", CLAIMED_ENTITY_TYPE])
    return {"duckdb": Counter(duck), "polars": Counter(polars),
            "pyarrow": Counter(zip(*(arrow[c].to_pylist() for c in arrow.column_names)))}


def test_ten_thousand_invalid_types_make_one_partition_per_day(settings: Settings):
    types = tuple(t.name for t in load_registry(settings.registry, custom_strategies=CUSTOM_STRATEGIES))
    mutations, conflicts = _ledger(types)
    with psycopg.connect(settings.database_url) as connection:
        with connection.cursor() as cursor:
            with cursor.copy(f"COPY mutation_log ({', '.join(MUTATION)}) FROM STDIN") as copy:
                for row in mutations:
                    copy.write_row(row)
            cursor.executemany(f"INSERT INTO conflicts ({', '.join(CONFLICT)}) VALUES ({', '.join(['%s'] * 9)})",
                               conflicts)
    audit = Path(settings.audit_uri)
    since = (DAYS[0] - timedelta(days=1)).isoformat()
    assert _cli(settings, "audit", "export", "--since", since) == 0

    layout = _layout(audit)
    for day in DAYS:
        partitions = layout[("mutations", f"date={day.date().isoformat()}")]
        assert f"entity_type={INVALID_ENTITY_TYPE}" in partitions
        assert partitions <= {f"entity_type={name}" for name in (*types, INVALID_ENTITY_TYPE)}, partitions
    assert layout[("conflicts", f"date={DAYS[1].date().isoformat()}")] == {
        f"entity_type={types[0]}", f"entity_type={INVALID_ENTITY_TYPE}"}
    assert sum(len(names) for names in layout.values()) <= 2 * (len(types) + 1) + 2

    expected = Counter((name if name in types else INVALID_ENTITY_TYPE, name) for name in (row[3] for row in mutations))
    assert len({claimed for (partition, claimed) in expected if partition == INVALID_ENTITY_TYPE}) == HOSTILE + 4
    read = _read_as_one(audit)
    assert read == {"duckdb": expected, "polars": expected, "pyarrow": expected}

    # Catch-up looks for the files where the export put them: nothing is missing.
    with psycopg.connect(settings.database_url) as connection:
        assert missing_batches(connection, AuditStore(str(audit)), DAYS[0] - timedelta(days=1),
                               entity_types=types) == []
    # Compaction keeps the layout: one file per partition, same rows.
    for day in DAYS:
        assert _cli(settings, "audit", "compact", "--date", day.date().isoformat()) == 0
    assert _layout(audit) == layout
    assert all(len(list(p.glob("*.parquet"))) == 1 for p in audit.glob("*/date=*/entity_type=*"))
    assert _read_as_one(audit) == read
