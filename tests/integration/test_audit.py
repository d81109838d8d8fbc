"""The audit data sets against the database they come from: a real job run (with a
manual conflict resolved by a person in a second run), exported batch by batch as
the job does, then read with DuckDB, Polars and pyarrow."""

from __future__ import annotations

import argparse
import re
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import psycopg
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from mutagg import audit_cmd
from mutagg.demo import url_with_schema
from mutagg.migrate import migrate
from mutagg.producer import produce
from mutagg.settings import DEFAULT_REGISTRY, Settings, with_overrides
from mutagg.topics import create_topics
from mutagg.workload import Workload
from operators.strategies import CUSTOM_STRATEGIES
from schemas.audit import PARTITIONING
from schemas.registry import load_registry
from sinks.audit import AuditExporter, export_batches, missing_batches
from sinks.audit_store import AuditError, AuditStore
from tests.integration.conftest import REPO, mutagg, query, run_job

pytestmark = pytest.mark.integration

HIVE = "hive_partitioning = true, hive_types = {'date': DATE, 'entity_type': VARCHAR}"
TYPES = tuple(t.name for t in load_registry(DEFAULT_REGISTRY, custom_strategies=CUSTOM_STRATEGIES))
_PARTITION = "CASE WHEN {0} IN (" + ", ".join(f"'{name}'" for name in TYPES) + ") THEN {0} ELSE '_invalid' END"

MUTATIONS_SQL = """
SELECT m.mutation_id, m.status, m.reason, m.entity_id, m.version, m.edge_node_id, m.operation,
       m.base_version, m.adjusted_priority, m.batch_id, m.kafka_topic, m.kafka_partition, m.kafka_offset,
       m.kafka_timestamp, m.edge_timestamp, m.decided_at, m.conflict_ids,
       ARRAY(SELECT c.conflict_id FROM conflicts c WHERE c.resolved_by_mutation_id = m.mutation_id
             ORDER BY c.conflict_id),
       m.detail, m.held_attributes::text, m.entity_type, {partition}, (m.decided_at AT TIME ZONE 'UTC')::date
FROM mutation_log m
""".format(partition=_PARTITION.format("m.entity_type"))
MUTATION_COLUMNS = (
    "mutation_id, status, reason, entity_id, version, edge_node_id, operation, base_version, adjusted_priority, "
    "batch_id, kafka_topic, kafka_partition, kafka_offset, kafka_timestamp, edge_timestamp, decided_at, "
    "conflict_ids, resolved_conflict_ids, detail, held_attributes, claimed_entity_type, entity_type, date"
)
CONFLICTS_SQL = """
SELECT c.conflict_id, c.entity_id, c.attributes, c.mutation_id, c.other_mutation_id, c.incoming_edge_node_id,
       c.other_edge_node_id, c.strategy, c.winner, c.status, c.incoming_values::text, c.server_values::text,
       c.result_values::text, c.base_version, c.entity_version, c.batch_id, c.detected_at, c.resolved_at,
       c.resolved_by_mutation_id,
       (SELECT m.kafka_offset FROM mutation_log m WHERE m.mutation_id = c.mutation_id),
       (SELECT m.edge_timestamp FROM mutation_log m WHERE m.mutation_id = c.other_mutation_id),
       c.entity_type, {partition}, (c.detected_at AT TIME ZONE 'UTC')::date
FROM conflicts c
""".format(partition=_PARTITION.format("c.entity_type"))
CONFLICT_COLUMNS = (
    "conflict_id, entity_id, attributes, mutation_id, other_mutation_id, incoming_edge_node_id, "
    "other_edge_node_id, strategy, winner, status, incoming_values, server_values, result_values, base_version, "
    "entity_version, batch_id, detected_at, resolved_at, resolved_by_mutation_id, kafka_offset, "
    "other_edge_timestamp, claimed_entity_type, entity_type, date"
)


@dataclass
class Ledger:
    settings: Settings
    audit: Path
    first_run: list[str]
    second_run: list[str]
    resolved: str
    """The conflict a person resolved between the two runs."""


def _batches(settings: Settings, exclude: set[str] = frozenset()) -> list[str]:
    found = {row[0] for row in query(settings, "SELECT DISTINCT batch_id FROM mutation_log")}
    return sorted(found - set(exclude))


def _export_like_the_job(settings: Settings, audit: Path, batches: list[str]) -> None:
    """One export per committed batch, in commit order, as the apply step does (once wired
    into the dataflow the job has done it already: this rewrites the same files)."""
    with psycopg.connect(settings.database_url) as connection:
        for batch_id in batches:
            export_batches(connection, str(audit), [batch_id], entity_types=TYPES)


@pytest.fixture(scope="module")
def ledger(base_settings: Settings, tmp_path_factory) -> Ledger:
    suffix = uuid.uuid4().hex[:10]
    schema = f"t_{suffix}"
    with psycopg.connect(base_settings.database_url, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    audit = tmp_path_factory.mktemp("audit") / "audit"
    settings = with_overrides(
        base_settings, database_url=url_with_schema(base_settings.database_url, schema),
        topic_mutations=f"t-{suffix}.mutations", topic_dlq=f"t-{suffix}.dlq", topic_status=f"t-{suffix}.status",
        topic_partitions=4, batch_size=300, window_ms=50, audit_uri=str(audit),
    )
    with psycopg.connect(settings.database_url) as connection:
        migrate(connection, load_registry(settings.registry, custom_strategies=CUSTOM_STRATEGIES))
    create_topics(settings)
    produce(settings, Workload(seed=3).generate(2000))
    run_job(settings)
    first = _batches(settings)
    _export_like_the_job(settings, audit, first)
    open_ids = [row[0] for row in query(
        settings, "SELECT conflict_id FROM conflicts WHERE status = 'OPEN' ORDER BY conflict_id")]
    assert len(open_ids) >= 2, "the workload should hold a few manual conflicts"
    mutagg(settings, "conflicts", "resolve", open_ids[0], "--accept")
    run_job(settings)
    second = _batches(settings, set(first))
    _export_like_the_job(settings, audit, second)
    yield Ledger(settings, audit, first, second, open_ids[0])
    with psycopg.connect(base_settings.database_url, autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _sql(statement: str, params: list | None = None) -> list[tuple]:
    return duckdb.connect().execute(statement, params or []).fetchall()


def _codecs(pattern: str) -> list[tuple]:
    return _sql(f"SELECT DISTINCT compression FROM parquet_metadata('{pattern}')")


def _duck(audit: Path, dataset: str, columns: str) -> list[tuple]:
    return sorted(_sql(f"SELECT {columns} FROM read_parquet('{audit}/{dataset}/**/*.parquet', {HIVE})"))


def _assert_matches_database(settings: Settings, audit: Path) -> None:
    mutations = _duck(audit, "mutations", MUTATION_COLUMNS)
    assert mutations == sorted(tuple(row) for row in query(settings, MUTATIONS_SQL))
    conflicts = _duck(audit, "conflicts", CONFLICT_COLUMNS)
    assert conflicts == sorted(tuple(row) for row in query(settings, CONFLICTS_SQL))
    assert len({row[0] for row in mutations}) == len(mutations)
    assert len({row[0] for row in conflicts}) == len(conflicts)


def test_the_export_is_the_database_row_for_row(ledger: Ledger):
    _assert_matches_database(ledger.settings, ledger.audit)
    types = {name: kind for name, kind, *_ in _sql(
        f"DESCRIBE SELECT * FROM read_parquet('{ledger.audit}/conflicts/**/*.parquet', {HIVE})")}
    assert types["detected_at"] == "TIMESTAMP WITH TIME ZONE"
    assert types["attributes"] == "VARCHAR[]"
    assert types["entity_version"] == "BIGINT"
    assert types["date"] == "DATE"
    latencies = _sql(
        f"SELECT max(abs(kafka_latency_s - epoch(decided_at - kafka_timestamp))), count(kafka_latency_s) "
        f"FROM read_parquet('{ledger.audit}/mutations/**/*.parquet', {HIVE})")[0]
    assert latencies[0] < 1e-3 and latencies[1] > 0
    assert _codecs(f"{ledger.audit}/**/part-*.parquet") == [("SNAPPY",)]  # cheap to write, per batch
    # One data set for Polars and pyarrow too.
    total = query(ledger.settings, "SELECT count(*) FROM mutation_log")[0][0]
    assert pl.scan_parquet(f"{ledger.audit}/mutations/**/*.parquet", hive_partitioning=True).select(
        pl.len()).collect().item() == total
    table = ds.dataset(ledger.audit / "mutations", format="parquet", partitioning=PARTITIONING).to_table()
    assert table.num_rows == total and table.schema.field("date").type == pa.date32()


def test_a_resolution_rewrites_the_conflicts_file_in_place(ledger: Ledger):
    rows = _sql(
        f"SELECT status, resolved_by_mutation_id, batch_id, filename FROM read_parquet("
        f"'{ledger.audit}/conflicts/**/*.parquet', {HIVE}, filename = true) WHERE conflict_id = ?",
        [ledger.resolved])
    assert len(rows) == 1
    status, resolved_by, batch_id, filename = rows[0]
    assert status == "MANUALLY_RESOLVED" and resolved_by.endswith(":resolution:1")
    assert batch_id in ledger.first_run and filename.endswith(f"part-{batch_id}.parquet")
    closing = _sql(
        f"SELECT mutation_id, batch_id FROM read_parquet('{ledger.audit}/mutations/**/*.parquet', {HIVE}) "
        f"WHERE list_contains(resolved_conflict_ids, ?)", [ledger.resolved])
    assert closing == [(resolved_by, closing[0][1])] and closing[0][1] in ledger.second_run


def test_a_replay_rewrites_the_same_files_and_a_restart_fills_the_gaps(ledger: Ledger, tmp_path: Path):
    audit = tmp_path / "audit"
    shutil.copytree(ledger.audit, audit)
    before = {p.relative_to(audit): p.read_bytes() for p in audit.rglob("*.parquet")}
    _export_like_the_job(ledger.settings, audit, ledger.first_run + ledger.second_run)  # replay everything
    after = {p.relative_to(audit): p.read_bytes() for p in audit.rglob("*.parquet")}
    assert after == before  # same names, same bytes: nothing duplicated
    # A crash mid-write leaves a temporary file; a crash before the write leaves no file.
    victim = sorted(audit.rglob("part-*.parquet"))[3]
    (victim.parent / f".{victim.name}.0123abcd.tmp").write_bytes(b"PAR1 half a file")
    victim.unlink()
    store = AuditStore(str(audit))
    since = datetime.now(UTC) - timedelta(days=1)
    with psycopg.connect(ledger.settings.database_url) as connection:
        missing = missing_batches(connection, store, since, entity_types=TYPES)
    batch_of_victim = victim.name.removeprefix("part-").removesuffix(".parquet")
    assert batch_of_victim in missing
    exporter = AuditExporter(ledger.settings.database_url, str(audit), entity_types=TYPES)
    try:
        assert str(victim) in exporter.catch_up()
    finally:
        exporter.close()
    _assert_matches_database(ledger.settings, audit)  # temporary files are never read
    victim.unlink()  # the operator's way: `mutagg audit export --since ... --missing-only` or `--batch`
    assert _cli(ledger.settings, "audit", "export", "--since", since.isoformat(), "--missing-only",
                "--audit-uri", str(audit)) == 0
    assert victim.exists()
    assert _cli(ledger.settings, "audit", "export", "--batch", batch_of_victim, "--audit-uri", str(audit)) == 0
    assert pl.scan_parquet(f"{audit}/mutations/**/*.parquet").select(pl.len()).collect().item() == len(
        query(ledger.settings, "SELECT 1 FROM mutation_log"))


def _cli(settings: Settings, *argv: str) -> int:
    parser = argparse.ArgumentParser()
    audit_cmd.add_parser(parser.add_subparsers(dest="command"))
    registry = load_registry(settings.registry, custom_strategies=CUSTOM_STRATEGIES)
    return audit_cmd.run(parser.parse_args(list(argv)), settings, registry)


@pytest.fixture
def two_days_ago(ledger: Ledger, base_settings: Settings):
    """The ledger's tables copied into a schema of their own, two days older."""
    schema = f"t_{uuid.uuid4().hex[:10]}"
    source = re.search(r"search_path%3D(\w+)", ledger.settings.database_url).group(1)
    with psycopg.connect(base_settings.database_url, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
        for table in ("mutation_log", "conflicts"):
            connection.execute(f'CREATE TABLE "{schema}".{table} (LIKE "{source}".{table} INCLUDING ALL)')
            connection.execute(f'INSERT INTO "{schema}".{table} SELECT * FROM "{source}".{table}')
        connection.execute(f'UPDATE "{schema}".mutation_log SET decided_at = decided_at - interval \'2 days\'')
        connection.execute(
            f'UPDATE "{schema}".conflicts SET detected_at = detected_at - interval \'2 days\', '
            "resolved_at = resolved_at - interval '2 days'")
    yield with_overrides(ledger.settings, database_url=url_with_schema(base_settings.database_url, schema))
    with psycopg.connect(base_settings.database_url, autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


def test_compaction_merges_a_day_without_losing_or_duplicating(two_days_ago: Settings, tmp_path: Path, monkeypatch):
    settings = with_overrides(two_days_ago, audit_uri=str(tmp_path / "audit"))
    audit = tmp_path / "audit"
    day = query(settings, "SELECT DISTINCT (decided_at AT TIME ZONE 'UTC')::date FROM mutation_log")[0][0]
    assert _cli(settings, "audit", "export", "--since", (day - timedelta(days=1)).isoformat()) == 0
    _assert_matches_database(settings, audit)
    small = len(list(audit.rglob("part-*.parquet")))
    with pytest.raises(AuditError, match="not closed"):
        _cli(settings, "audit", "compact", "--date", datetime.now(UTC).date().isoformat())

    # Killed after the merged files appeared, before the small ones were removed.
    def killed(self, path):
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(AuditStore, "delete", killed)
    with pytest.raises(KeyboardInterrupt):
        _cli(settings, "audit", "compact", "--date", day.isoformat())
    monkeypatch.undo()
    assert list(audit.rglob("compacted-*.parquet")) and len(list(audit.rglob("part-*.parquet"))) == small
    assert _cli(settings, "audit", "compact", "--date", day.isoformat()) == 0  # finishes the job
    _assert_matches_database(settings, audit)
    partitions = {p.parent for p in audit.rglob("*.parquet")}
    for partition in partitions:
        files = sorted(f.name for f in partition.glob("*.parquet"))
        compacted = [f for f in files if f.startswith("compacted-")]
        assert len(compacted) == 1, (partition, files)
        for part in set(files) - set(compacted):  # only conflict files still holding an OPEN conflict stay
            assert "conflicts" in str(partition)
            assert _sql(f"SELECT count(*) FROM '{partition / part}' WHERE status = 'OPEN'")[0][0]
    assert len(list(audit.rglob("part-*.parquet"))) < small / 5
    assert _codecs(f"{audit}/**/compacted-*.parquet") == [("ZSTD",)]  # small at rest
    # A replay of the day (a restart, or an operator) must not bring the merged rows back.
    batches = _batches(settings)
    with psycopg.connect(settings.database_url) as connection:
        export_batches(connection, str(audit), batches, entity_types=TYPES)
    _assert_matches_database(settings, audit)
    assert _cli(settings, "audit", "compact", "--date", day.isoformat()) == 0
    _assert_matches_database(settings, audit)


def _readme_block(kind: str) -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(rf"<!-- analyst-query: {kind} -->\n```\w+\n(.*?)```", text, re.S)
    assert match, f"README has no {kind} analyst queries"
    return match.group(1)


def test_the_readme_analyst_queries_agree_with_the_database(ledger: Ledger):
    settings, audit = ledger.settings, str(ledger.audit)
    expected_per_day = query(settings, """
        SELECT (detected_at AT TIME ZONE 'UTC')::date, entity_type, count(*) FROM conflicts
        GROUP BY 1, 2 ORDER BY 1, entity_type COLLATE "C" """)
    expected_top = query(settings, """
        SELECT entity_type, attribute, count(*) FROM conflicts, unnest(attributes) AS attribute
        GROUP BY 1, 2 ORDER BY 3 DESC, entity_type COLLATE "C", attribute COLLATE "C" LIMIT 10""")
    expected_open = query(settings, """
        SELECT conflict_id, entity_type, entity_id, attributes, mutation_id, incoming_edge_node_id, detected_at
        FROM conflicts WHERE strategy = 'manual' AND status = 'OPEN' ORDER BY detected_at, conflict_id COLLATE "C"
    """)
    assert expected_per_day and expected_top and expected_open
    assert ledger.resolved not in {row[0] for row in expected_open}

    connection = duckdb.connect()
    sql = _readme_block("duckdb").replace("'audit/", f"'{audit}/")
    results = [connection.execute(statement).fetchall() for statement in sql.split(";") if statement.strip()]
    assert results[2:] == [expected_per_day, expected_top, expected_open]

    namespace: dict = {}
    exec(_readme_block("polars").replace('"audit/', f'"{audit}/'), namespace)  # the README's code as written
    assert namespace["per_day"].rows() == expected_per_day
    assert namespace["top_attributes"].rows() == expected_top
    assert namespace["still_open"].rows() == expected_open


def test_an_empty_audit_uri_disables_the_sink(ledger: Ledger):
    exporter = AuditExporter(ledger.settings.database_url, "", entity_types=TYPES)
    assert exporter.export(ledger.first_run) == [] and exporter.catch_up() == []
