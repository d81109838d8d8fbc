"""The audit files built from what a batch wrote (sinks/audit_batch.py) against the files
read back from the database right after its commit (sinks/audit_rows.py, the repair
path): a workload with conflicts, rejections, duplicates and types outside the registry,
a batch split on a data error (FAILED rows), and manual conflicts closed by a resolution."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import orjson
import psycopg
import pytest

from bench.commit import batches
from mutagg.settings import DEFAULT_REGISTRY, Settings
from operators.strategies import CUSTOM_STRATEGIES
from schemas.mutation import RESOLVES_HEADER, SETS_HEADER, Mutation, RawMessage, decode
from schemas.registry import load_registry
from sinks.audit import AuditExporter, export_batches, write_parts
from sinks.audit_batch import written_parts
from sinks.audit_rows import read_parts
from sinks.audit_store import AuditStore
from sinks.jsonb_text import jsonb_text
from sinks.outcomes import Batch
from sinks.postgres import PostgresCommitter

pytestmark = pytest.mark.integration

REGISTRY = load_registry(DEFAULT_REGISTRY, custom_strategies=CUSTOM_STRATEGIES)
TYPES = tuple(t.name for t in REGISTRY)


def stock(offset: int, mutation_id: str, operation: str, quantity: int, base: int, kafka_ms: int = 1_795_700_000_000):
    document = {
        "id": mutation_id, "edge_node_id": "wh-1", "entity_type": "stock_level", "entity_id": "WH9/SKU-1",
        "operation_type": operation, "attributes": {"quantity": quantity}, "base_version": base,
        "timestamp": "2026-11-26T09:00:00Z", "priority": 5, "dependencies": [],
    }
    raw = RawMessage("poison", 0, offset, b"stock_level:WH9/SKU-1", orjson.dumps(document), kafka_ms)
    return decode(raw, REGISTRY)


def resolution(connection: psycopg.Connection, offset: int) -> tuple[object, list[str]]:
    """A person's acceptance of the oldest held mutation's OPEN conflicts, as `mutagg conflicts
    resolve --accept` sends it; and the conflicts it closes."""
    mutation_id, entity_type, entity_id = connection.execute(
        "SELECT mutation_id, entity_type, entity_id FROM conflicts WHERE status = 'OPEN' "
        "ORDER BY conflict_id LIMIT 1").fetchone()
    open_ids = [row[0] for row in connection.execute(
        "SELECT conflict_id FROM conflicts WHERE mutation_id = %s AND status = 'OPEN' ORDER BY 1", (mutation_id,))]
    node, held = connection.execute(
        "SELECT edge_node_id, held_attributes FROM mutation_log WHERE mutation_id = %s", (mutation_id,)).fetchone()
    version = connection.execute(
        f'SELECT version FROM "{REGISTRY.entity_types[entity_type].table}" WHERE id = %s', (entity_id,)).fetchone()[0]
    document = {
        "id": f"{mutation_id}:resolution:1", "edge_node_id": node, "entity_type": entity_type,
        "entity_id": entity_id, "operation_type": "UPDATE", "attributes": held, "base_version": version,
        "timestamp": "2026-11-26T10:00:00Z", "priority": 10, "dependencies": [],
    }
    raw = RawMessage("resolutions", 0, offset, f"{entity_type}:{entity_id}".encode(), orjson.dumps(document),
                     1_795_700_000_000, ((RESOLVES_HEADER, ",".join(open_ids).encode()), (SETS_HEADER, b"")))
    return decode(raw, REGISTRY), open_ids


def assert_same_parts(built: list, read: list, tmp_path: Path) -> None:
    assert [(p.dataset, p.day, p.entity_type, p.batch_id) for p in built] == [
        (p.dataset, p.day, p.entity_type, p.batch_id) for p in read]
    for new, old in zip(built, read):
        assert new.table.schema.equals(old.table.schema, check_metadata=True)
        assert new.table.equals(old.table), (new.dataset, new.batch_id, _first_difference(old.table, new.table))
    files = []
    for name, parts in (("read", read), ("built", built)):
        write_parts(AuditStore(str(tmp_path / name)), parts)
        files.append({str(p.relative_to(tmp_path / name)): p.read_bytes()
                      for p in sorted((tmp_path / name).rglob("*.parquet"))})
    assert files[0] == files[1]


def _first_difference(old, new):
    for name in old.column_names:
        for i, (a, b) in enumerate(zip(old[name].to_pylist(), new[name].to_pylist())):
            if a != b:
                return name, i, a, b
    return None


def test_the_parts_a_batch_wrote_are_the_parts_read_back_after_its_commit(settings: Settings, tmp_path: Path):
    work = batches(2400, REGISTRY, 400)  # conflicts (manual ones too), rejections, duplicates, warehouse_robot
    # A broker clock in year 9000: a latency past 2**53 microseconds (not exact as a float64 of them).
    work[0].insert(0, stock(0, "poison-1", "CREATE", 2**63 - 10, 0, 221_845_392_000_123))
    work[1].insert(len(work[1]) // 3, stock(1, "poison-2", "UPDATE", 100, 1))  # bigint overflow: split, FAILED
    first = next(item for item in work[0][1:] if isinstance(item, Mutation))
    work[2].append(replace(first, offset=first.offset + 10**6))  # a duplicate: same id, read elsewhere
    work[3].append(first)  # the same message again (as after a crash): replayed, exported by read-back
    committer = PostgresCommitter(settings.database_url, REGISTRY, CUSTOM_STRATEGIES)
    seen = {"FAILED": 0, "CONFLICT": 0, "REJECTED": 0, "duplicate": 0, "replayed": 0, "_invalid": 0, "closed": 0,
            "split": 0}
    try:
        with psycopg.connect(settings.database_url, autocommit=True) as connection:
            for number, items in enumerate([*work, None]):
                if items is None:  # last: a person's resolution closes conflicts of an earlier batch
                    resolving, open_ids = resolution(connection, 0)
                    items = [resolving, *work[-1][:50]]
                written: list = []
                outcomes = committer.commit(Batch(items), f"b{number}", written)
                ids = sorted({w.batch_id for w in written})
                built = written_parts(connection, written, entity_types=TYPES)
                read = read_parts(connection, ids, entity_types=TYPES)
                assert_same_parts(built, read, tmp_path / f"b{number}")
                seen["split"] += len(ids) > 1
                seen["closed"] += sum(len(w.closed) for w in written)
                seen["_invalid"] += sum(p.entity_type == "_invalid" for p in built)
                for outcome in outcomes:
                    key = outcome.status if outcome.kind == "decided" else outcome.kind
                    seen[key] = seen.get(key, 0) + 1
            assert seen["closed"] == len(open_ids) > 0
    finally:
        committer.close()
    assert all(seen[key] for key in ("FAILED", "CONFLICT", "REJECTED", "duplicate", "replayed", "_invalid", "split")), \
        seen


def test_a_batch_committed_before_its_retry_is_read_back(settings: Settings, tmp_path: Path):
    """A batch whose COMMIT answer was lost is committed again: its messages come back replayed,
    its second transaction wrote nothing, and its files are read back (not left empty)."""
    items = batches(400, REGISTRY, 400)[0]
    committer = PostgresCommitter(settings.database_url, REGISTRY, CUSTOM_STRATEGIES)
    exporter = AuditExporter(settings.database_url, str(tmp_path / "job"), entity_types=TYPES)
    try:
        first: list = []
        committer.commit(Batch(items), "b0", first)
        again: list = []
        outcomes = committer.commit(Batch(items), "b0", again)  # as the retry after a lost answer
        assert {o.kind for o in outcomes} >= {"replayed"} and all(w.ledger is None for w in again)
        exporter.export_committed(outcomes, again)
        with psycopg.connect(settings.database_url) as connection:
            export_batches(connection, str(tmp_path / "read"), ["b0"], entity_types=TYPES)
    finally:
        committer.close()
        exporter.close()
    files = [{str(p.relative_to(tmp_path / name)): p.read_bytes() for p in (tmp_path / name).rglob("*.parquet")}
             for name in ("job", "read")]
    assert files[0] == files[1] and files[0]


JSON_TEXTS = [
    '{"b":1.50,"aa":1e-7,"a":[1e3,"x\\u00e9\\\\n"]}', '{"k":1,"k":2}', "-0.0", "1.5e-7", "1e16", "123.0", "-1.25E-3",
    '"\\u0001\\u001f\\u007f\\b\\f/\\"\\\\"', '{"é":1,"z":2,"ab":{"y":[],"x":{}}}', "[true,false,null]",
    "12345678901234567890123", '"😀\\u2028"',
    orjson.dumps({"f": 1e-7, "g": 1e16, "h": 0.1, "i": -0.0, "j": 1.7976931348623157e308, "k": 5e-324}).decode(),
]


def test_json_text_is_printed_as_jsonb_prints_it(settings: Settings):
    with psycopg.connect(settings.database_url) as connection:
        for text in JSON_TEXTS:
            assert jsonb_text(text) == connection.execute("SELECT %s::jsonb::text", (text,)).fetchone()[0], text
