"""`read_parts` (rows rendered as CSV by the server, decoded by pyarrow) against a plain
fetchall reference, on ledger and conflict rows written straight into a fresh schema:
values that CSV, JSON or a timestamp conversion could get wrong, and the orders the
files' rows and the parts come in."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import hypothesis
import psycopg
import pytest
from hypothesis import strategies as st

from mutagg.settings import Settings
from schemas.audit import CONFLICTS, CONFLICTS_SCHEMA, MUTATIONS, MUTATIONS_SCHEMA
from sinks.audit import write_parts
from sinks.audit_copy import CHUNK_ROWS
from sinks.audit_rows import read_parts, to_parts
from sinks.audit_store import AuditStore

pytestmark = pytest.mark.integration

INT64 = (-(2**63), 2**63 - 1)
INT32 = (-(2**31), 2**31 - 1)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T0 = datetime(2026, 11, 25, 23, 59, 59, 999999, tzinfo=UTC)
MOMENTS = [
    datetime(1, 1, 1, tzinfo=UTC), datetime(1, 1, 1, 0, 0, 0, 1, tzinfo=UTC), EPOCH - timedelta(microseconds=1),
    EPOCH, EPOCH + timedelta(microseconds=1), T0, T0 + timedelta(microseconds=1),
    datetime(2026, 11, 26, 12, 34, 56, 123457, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
]
TEXTS = [
    None, "", " ", ",", '"', '""', "'", "a,b", 'say "hi"', "line\nbreak", "crlf\r\nend", "\r", "back\\slash", "\\N",
    "NULL", "null", "{", "}", "{a,b}", "[1]", '{"x": 1}', "tab\there", "\x01\x1f\x7f", "é😀\u2028\u00a0", " pad ",
    "x" * 200_000,
]
MUTATION = (
    "mutation_id", "status", "reason", "entity_type", "entity_id", "version", "edge_node_id", "operation",
    "base_version", "adjusted_priority", "batch_id", "kafka_topic", "kafka_partition", "kafka_offset",
    "kafka_timestamp", "edge_timestamp", "decided_at", "conflict_ids", "detail", "held_attributes",
)
CONFLICT = (
    "conflict_id", "entity_type", "entity_id", "attributes", "mutation_id", "other_mutation_id",
    "incoming_edge_node_id", "other_edge_node_id", "strategy", "winner", "status", "incoming_values",
    "server_values", "result_values", "base_version", "entity_version", "batch_id", "detected_at", "resolved_at",
    "resolved_by_mutation_id", "resolution",
)
TIES = ("B", "a", "é", "e", "😀", "Z,1", "z")
DAY = datetime(2030, 1, 1, 12, tzinfo=UTC)
JSONB = {"held_attributes", "incoming_values", "server_values", "result_values"}
REGISTRY = ("customer", "article", "stock_level", "a", "b")
"""The types these tests declare: every other one (NULL, '', 'é', ...) is partitioned as _invalid."""


def _partitioned(row: tuple) -> tuple:
    """The reference's row with its last column (the claimed type) as its partition."""
    return (*row[:-1], row[-1] if row[-1] in REGISTRY else "_invalid")

# The reference: what `read_parts` did before it read CSV (rows fetched, sorted in Python).
REFERENCE_MUTATIONS = """
SELECT m.mutation_id, m.status, m.reason, m.entity_id, m.version, m.edge_node_id, m.operation,
       m.base_version, m.adjusted_priority, m.batch_id, m.kafka_topic, m.kafka_partition, m.kafka_offset,
       m.kafka_timestamp, m.edge_timestamp, m.decided_at,
       extract(epoch FROM m.decided_at - m.kafka_timestamp)::float8,
       extract(epoch FROM m.decided_at - m.edge_timestamp)::float8, m.conflict_ids,
       ARRAY(SELECT c.conflict_id FROM conflicts c WHERE c.resolved_by_mutation_id = m.mutation_id
             ORDER BY c.conflict_id),
       m.detail, m.held_attributes::text, m.entity_type, m.entity_type
FROM mutation_log m WHERE m.batch_id = ANY(%(batches)s)
"""
REFERENCE_CONFLICTS = """
SELECT c.conflict_id, c.entity_id, c.attributes, c.mutation_id, c.other_mutation_id, c.incoming_edge_node_id,
       c.other_edge_node_id, c.strategy, c.winner, c.status, c.incoming_values::text, c.server_values::text,
       c.result_values::text, c.base_version, c.entity_version, c.batch_id, c.detected_at, c.resolved_at,
       c.resolved_by_mutation_id, c.resolution, m.kafka_topic, m.kafka_partition, m.kafka_offset,
       m.kafka_timestamp, m.edge_timestamp, o.edge_timestamp, c.entity_type, c.entity_type
FROM conflicts c
LEFT JOIN mutation_log m ON m.mutation_id = c.mutation_id
LEFT JOIN mutation_log o ON o.mutation_id = c.other_mutation_id
WHERE c.batch_id = ANY(%(batches)s)
ORDER BY c.batch_id, c.conflict_id
"""
LEDGER_ORDER = [MUTATIONS_SCHEMA.get_field_index(name)
                for name in ("batch_id", "kafka_topic", "kafka_partition", "kafka_offset", "mutation_id")]


def reference_parts(connection: psycopg.Connection, batch_ids: list[str]) -> list:
    batches = sorted(set(batch_ids))
    if not batches:
        return []
    with connection.transaction(), connection.cursor() as cursor:
        mutations = sorted(map(_partitioned, cursor.execute(REFERENCE_MUTATIONS, {"batches": batches}).fetchall()),
                           key=lambda row: [(row[i] is None, row[i]) for i in LEDGER_ORDER])
        resolved = sorted({cid for row in mutations for cid in row[19]})
        resolved_batches = {row[0] for row in cursor.execute(
            "SELECT batch_id FROM conflicts WHERE conflict_id = ANY(%s) AND batch_id IS NOT NULL", [resolved])}
        conflicts = [_partitioned(row) for row in cursor.execute(
            REFERENCE_CONFLICTS, {"batches": sorted({*batches, *resolved_batches})}).fetchall()]
    return [*to_parts(MUTATIONS, mutations, MUTATIONS_SCHEMA, "decided_at"),
            *to_parts(CONFLICTS, conflicts, CONFLICTS_SCHEMA, "detected_at")]


def assert_same_parts(connection: psycopg.Connection, batch_ids: list[str], tmp_path: Path | None = None) -> list:
    """`read_parts` as the reference: same parts in the same order, equal tables, same files."""
    expected, actual = reference_parts(connection, batch_ids), read_parts(connection, batch_ids, entity_types=REGISTRY)
    assert [(p.dataset, p.day, p.entity_type, p.batch_id) for p in actual] == [
        (p.dataset, p.day, p.entity_type, p.batch_id) for p in expected]
    for old, new in zip(expected, actual):
        assert new.table.schema.equals(old.table.schema, check_metadata=True)
        assert new.table.equals(old.table, check_metadata=True), (
            new.dataset, new.batch_id, _first_difference(old.table, new.table))
    if tmp_path is not None:
        files = []
        for name, parts in (("reference", expected), ("new", actual)):
            write_parts(AuditStore(str(tmp_path / name)), parts, T0.date().replace(year=2000))
            files.append({str(p.relative_to(tmp_path / name)): p.read_bytes()
                          for p in sorted((tmp_path / name).rglob("*.parquet"))})
        assert files[0] == files[1]
    return actual


def _first_difference(old, new):
    for name in old.column_names:
        pairs = zip(old[name].to_pylist(), new[name].to_pylist())
        for i, (a, b) in enumerate(pairs):
            if a != b or type(a) is not type(b):
                return name, i, a, b
    return None


def insert(connection: psycopg.Connection, table: str, columns: tuple[str, ...], rows: list[dict]) -> None:
    values = ", ".join(f"%({c})s::jsonb" if c in JSONB else f"%({c})s" for c in columns)
    with connection.cursor() as cursor:
        cursor.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({values})",
                           [{c: row.get(c) for c in columns} for row in rows])


def mutation(mutation_id: str, batch_id: str, **values) -> dict:
    return {"mutation_id": mutation_id, "status": "APPLIED", "batch_id": batch_id, "decided_at": T0,
            "conflict_ids": [], "entity_type": "customer", "kafka_topic": "t", "kafka_partition": 0,
            "kafka_offset": 0, **values}


def conflict(conflict_id: str, batch_id: str, mutation_id: str, **values) -> dict:
    return {"conflict_id": conflict_id, "entity_type": "customer", "entity_id": "C1", "attributes": ["notes"],
            "mutation_id": mutation_id, "strategy": "manual", "status": "AUTO_RESOLVED", "batch_id": batch_id,
            "detected_at": T0, **values}


def tricky_ledger() -> tuple[list[dict], list[dict]]:
    """Batch b1 raised conflicts that a mutation of b2 resolved; b2 holds every odd value."""
    mutations = [mutation("r1", "b1", entity_type="article"), mutation("r2", "b1", status="CONFLICT",
                                                                      conflict_ids=["c-open-1", "c-open-2"])]
    conflicts = [conflict("c-open-1", "b1", "r2", status="MANUALLY_RESOLVED", resolved_at=T0,
                          resolved_by_mutation_id="x-resolver", resolution="accept"),
                 conflict("c-open-2", "b1", "r2", status="MANUALLY_RESOLVED", resolved_by_mutation_id="x-resolver"),
                 conflict("c-open-3", "b1", "r2", status="OPEN")]
    mutations.append(mutation("x-resolver", "b2", kafka_offset=7))
    for i, text in enumerate(TEXTS):
        moment = MOMENTS[i % len(MOMENTS)]
        mutations.append(mutation(
            f"t{i:02d}", "b2", reason=text, detail=text, entity_id=text, edge_node_id=text, operation=text,
            kafka_topic=text, entity_type=[None, "", "article", "customer", "é", "a,\"b\"\n"][i % 6],
            decided_at=MOMENTS[-1 - i % len(MOMENTS)], kafka_timestamp=moment,
            edge_timestamp=None if i % 4 == 0 else MOMENTS[(i + 3) % len(MOMENTS)],
            version=[None, *INT64, 0, -1][i % 5], base_version=[*INT64, None][i % 3],
            adjusted_priority=[None, *INT32][i % 3], kafka_partition=[None, *INT32, 3][i % 4],
            kafka_offset=[None, *INT64, 5][i % 4],
            conflict_ids=[[], ["one"], [t for t in TEXTS[1:12]], ["x", None, ""]][i % 4],
            held_attributes=[None, "null", "{}", '{"a": "x\\"y,\\n", "b": [1, 2.50, null, 1e400], "é": "😀"}',
                             '"just a string"', "[]", '{"n": 123456789012345678901234567890}'][i % 7],
        ))
    # Ties on the Kafka position: the mutation id decides, in code-point order.
    for mutation_id in TIES:
        mutations.append(mutation(mutation_id, "b2", kafka_topic="same", kafka_partition=1, kafka_offset=2))
    # One day, every kind of entity type: files in name order, '' first, unknown (NULL) last.
    for entity_type in (None, "b", "", "é", "a"):
        mutations.append(mutation(f"d-{entity_type}", "b2", entity_type=entity_type, decided_at=DAY))
    for i, (attributes, other) in enumerate([
        (["a"], "t01"), ([t for t in TEXTS[1:15]], None), (["#deleted", ""], "missing"), (["x", None], "t02"),
    ]):
        conflicts.append(conflict(
            f"k{i}", "b2", ["t03", "missing", "x-resolver", "t04"][i], attributes=attributes, other_mutation_id=other,
            entity_type=["stock_level", "article", "customer", "é"][i], entity_id=TEXTS[i + 1],
            incoming_edge_node_id=TEXTS[i + 5], other_edge_node_id=TEXTS[i + 8], winner=[None, "merged"][i % 2],
            incoming_values='{"q": "\\"quoted\\", \\\\ , \\n"}',
            server_values=[None, "null", "{}", '{"big": 1.000000000000000000001}'][i],
            result_values=[None, '{"k": [true, false]}'][i % 2], base_version=INT64[i % 2],
            entity_version=[None, *INT64, 0][i], detected_at=MOMENTS[i * 2], resolved_at=MOMENTS[-1 - i],
            resolution=TEXTS[i],
        ))
    return mutations, conflicts


@pytest.fixture
def ledger(settings: Settings) -> psycopg.Connection:
    with psycopg.connect(settings.database_url) as connection:
        mutations, conflicts = tricky_ledger()
        insert(connection, "mutation_log", MUTATION, mutations)
        insert(connection, "conflicts", CONFLICT, conflicts)
        connection.commit()
        yield connection


def test_odd_values_read_back_as_the_reference_reads_them(ledger: psycopg.Connection, tmp_path: Path):
    for number, batches in enumerate([["b2"], ["b1"], ["b2", "b1", "b2"], ["no-such-batch"], []]):
        assert_same_parts(ledger, batches, tmp_path / str(number))


def test_odd_values_are_the_values_written(ledger: psycopg.Connection):
    parts = read_parts(ledger, ["b2"], entity_types=REGISTRY)
    rows = {row["mutation_id"]: row for p in parts if p.dataset == MUTATIONS for row in p.table.to_pylist()}
    for i, text in enumerate(TEXTS):
        row = rows[f"t{i:02d}"]
        assert (row["detail"], row["reason"], row["kafka_topic"]) == (text, text, text)  # NULL is not ''
        assert row["kafka_timestamp"] == MOMENTS[i % len(MOMENTS)]
        assert row["decided_at"] == MOMENTS[-1 - i % len(MOMENTS)]
        assert row["version"] == [None, *INT64, 0, -1][i % 5] and row["kafka_offset"] == [None, *INT64, 5][i % 4]
    assert rows["t01"]["held_attributes"] == "null" and rows["t00"]["held_attributes"] is None  # JSON null, SQL NULL
    (held,) = ledger.execute("SELECT held_attributes::text FROM mutation_log WHERE mutation_id = 't03'").fetchone()
    assert rows["t03"]["held_attributes"] == held and "1" + "0" * 400 in held and '"x\\"y,\\n"' in held
    assert rows["t03"]["conflict_ids"] == ["x", None, ""] and rows["t02"]["conflict_ids"] == TEXTS[1:12]
    far = rows["t00"]  # decided in year 9999, Kafka timestamp in year 1
    assert far["kafka_latency_s"] == (far["decided_at"] - far["kafka_timestamp"]).total_seconds()
    assert rows["x-resolver"]["resolved_conflict_ids"] == ["c-open-1", "c-open-2"]
    assert rows["t05"]["resolved_conflict_ids"] == []
    tied = [p for p in parts if p.dataset == MUTATIONS and p.day == T0.date() and p.entity_type == "customer"]
    assert [m for m in tied[0].table["mutation_id"].to_pylist() if m in TIES] == ["B", "Z,1", "a", "e", "z", "é", "😀"]
    # The earlier batch's conflict file is read again: a mutation of b2 closed two of its conflicts.
    resolved = [p for p in parts if p.dataset == CONFLICTS and p.batch_id == "b1"]
    assert [row["conflict_id"] for p in resolved for row in p.table.to_pylist()] == ["c-open-1", "c-open-2", "c-open-3"]
    # One partition per registry type and one for the rest ('', 'é', NULL): '_' sorts before 'a'.
    assert [p.entity_type for p in parts if p.dataset == MUTATIONS and p.day == DAY.date()] == ["_invalid", "a", "b"]
    claimed = {row["mutation_id"]: row["claimed_entity_type"] for p in parts
               if p.dataset == MUTATIONS and p.entity_type == "_invalid" and p.day == DAY.date()
               for row in p.table.to_pylist()}
    assert claimed == {"d-": "", "d-None": None, "d-é": "é"}


def test_conflicts_keep_the_servers_order_and_the_ledger_python_s(ledger: psycopg.Connection, tmp_path: Path):
    """Under a collation that is not byte order, conflicts come in the server's order
    (ORDER BY batch_id, conflict_id), ledger rows in code-point order, as before."""
    ledger.execute('ALTER TABLE conflicts ALTER COLUMN conflict_id TYPE text COLLATE "und-x-icu"')
    ledger.execute('ALTER TABLE mutation_log ALTER COLUMN mutation_id TYPE text COLLATE "und-x-icu"')
    insert(ledger, "conflicts", CONFLICT, [conflict(c, "b3", "r1") for c in ("b", "B", "a", "A", "-a", "é", "e")])
    insert(ledger, "mutation_log", MUTATION, [mutation(f"q{m}", "b3") for m in ("b", "B", "a", "A", "-a", "é", "e")])
    ledger.commit()
    parts = assert_same_parts(ledger, ["b3"], tmp_path)
    (mutations,), (conflicts,) = ([p for p in parts if p.dataset == name] for name in (MUTATIONS, CONFLICTS))
    assert conflicts.table["conflict_id"].to_pylist() == ["-a", "a", "A", "b", "B", "e", "é"]
    assert mutations.table["mutation_id"].to_pylist() == ["q-a", "qA", "qB", "qa", "qb", "qe", "qé"]


def test_more_rows_than_one_chunk_in_server_order(ledger: psycopg.Connection):
    count = CHUNK_ROWS * 5 + 3
    insert(ledger, "mutation_log", MUTATION, [
        mutation(f"m{i:05d}", "b4", kafka_offset=(i * 7919) % count, entity_type=["a", "b", None][i % 3],
                 decided_at=T0 + timedelta(microseconds=i * 997)) for i in range(count)])
    insert(ledger, "conflicts", CONFLICT, [
        conflict(f"c{(i * 7919) % count:05d}", "b4", f"m{i:05d}", entity_type=["a", "b"][i % 2],
                 detected_at=T0 + timedelta(microseconds=i)) for i in range(count)])
    ledger.commit()
    parts = assert_same_parts(ledger, ["b4"])
    assert sum(p.table.num_rows for p in parts) == 2 * count


TEXT = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=30)


@hypothesis.settings(max_examples=40, suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
@hypothesis.given(rows=st.lists(st.fixed_dictionaries({
    "mutation_id": TEXT, "detail": st.none() | TEXT, "entity_type": st.none() | TEXT, "kafka_topic": st.none() | TEXT,
    "kafka_offset": st.none() | st.integers(*INT64), "conflict_ids": st.lists(st.none() | TEXT, max_size=3),
    "micros": st.integers(-62_135_596_800_000_000, 253_402_300_799_999_999),
}), min_size=1, max_size=12, unique_by=lambda row: row["mutation_id"]))
def test_any_text_and_time_reads_back_as_the_reference_reads_it(settings: Settings, rows: list[dict]):
    batch_id = f"h{uuid.uuid4().hex[:8]}"
    written = []
    for row in rows:
        values = {k: v for k, v in row.items() if k not in ("mutation_id", "micros")}
        written.append(mutation(
            f"{batch_id}{row['mutation_id']}", batch_id, **values, decided_at=EPOCH + timedelta(
                microseconds=row["micros"]), kafka_timestamp=EPOCH + timedelta(microseconds=row["micros"] // 3)))
    with psycopg.connect(settings.database_url) as connection:
        insert(connection, "mutation_log", MUTATION, written)
        connection.commit()
        assert_same_parts(connection, [batch_id])
