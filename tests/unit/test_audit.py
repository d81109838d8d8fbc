"""Audit paths, file grouping, atomic writes and compaction planning, without a database."""

from __future__ import annotations

import tempfile
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.audit import (
    CLAIMED_ENTITY_TYPE,
    CONFLICTS,
    CONFLICTS_SCHEMA,
    DATASETS,
    INVALID_ENTITY_TYPE,
    MUTATIONS,
    MUTATIONS_SCHEMA,
    PARTITION_COLUMNS,
    PARTITIONING,
    SCHEMAS,
    dataset_schema,
)
from schemas.errors import RegistryError
from schemas.registry import RESERVED_TYPE_NAMES, parse_registry
from sinks.audit import batches_to_export
from sinks.audit_compact import compact_day, compact_partition, plan_partition
from sinks.audit_rows import to_parts
from sinks.audit_store import HIVE_NULL, AuditError, AuditFile, AuditStore, compacted_name, part_name, partition_value
from sinks.outcomes import Outcome

T0 = datetime(2026, 11, 25, 23, 59, 59, tzinfo=UTC)


def mutation_row(mutation_id: str, batch_id: str, decided_at: datetime = T0, entity_type: str | None = "customer"):
    """A row as `read_parts` gets it from the database: schema columns, then entity_type."""
    values = {
        "mutation_id": mutation_id, "status": "APPLIED", "batch_id": batch_id, "decided_at": decided_at,
        "conflict_ids": [], "resolved_conflict_ids": [], "version": 1,
    }
    return (*(values.get(f.name) for f in MUTATIONS_SCHEMA), entity_type)


def conflict_row(conflict_id: str, batch_id: str, status: str = "AUTO_RESOLVED"):
    values = {
        "conflict_id": conflict_id, "entity_id": "C1", "attributes": ["notes"], "mutation_id": "m",
        "strategy": "manual" if status == "OPEN" else "last_writer_wins", "status": status,
        "batch_id": batch_id, "detected_at": T0,
    }
    return (*(values.get(f.name) for f in CONFLICTS_SCHEMA), "customer")


def test_plain_entity_types_are_path_segments_as_they_are():
    for name in ("customer", "stock_level", "x.y-z", "A1"):
        assert partition_value(name) == name
    assert partition_value(None) == HIVE_NULL


@pytest.mark.parametrize("name", ["a/b", "..", ".hidden", "__HIVE_DEFAULT_PARTITION__", "a b", "ü", "x" * 300])
def test_other_entity_types_cannot_escape_or_collide(name):
    value = partition_value(name)
    assert "/" not in value and not value.startswith(".") and value != HIVE_NULL and len(value) <= 200


@settings(max_examples=60)
@given(st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40))
def test_readers_decode_the_entity_type_back(name):
    with tempfile.TemporaryDirectory() as root:
        store = AuditStore(root)
        store.write_table(f"{store.partition_dir(MUTATIONS, T0.date(), name)}/{part_name('b1')}",
                          pa.table({"x": [1]}), {})
        table = ds.dataset(f"{root}/{MUTATIONS}", format="parquet", partitioning=PARTITIONING).to_table()
        (read,) = table.column("entity_type").to_pylist()
        if partition_value(name).startswith("%5Flong-"):  # too long for a path segment: a stable digest
            assert read.startswith("_long-")
        else:
            assert read == name


def test_file_names_are_deterministic_and_safe():
    assert part_name("20261126T090000-42-0000001.2") == "part-20261126T090000-42-0000001.2.parquet"
    odd = part_name("../../etc/passwd")
    assert odd == part_name("../../etc/passwd") and "/" not in odd and odd.startswith("part-h")
    assert compacted_name(["b", "a"]) == compacted_name(["a", "b"]) != compacted_name(["a"])


def test_rows_become_one_part_per_day_entity_type_and_batch():
    rows = [
        mutation_row("m1", "b1"), mutation_row("m2", "b1", T0 + timedelta(seconds=2)),
        mutation_row("m3", "b1", entity_type="article"), mutation_row("m4", "b2"),
        mutation_row("m5", "b2", entity_type=None),
    ]
    parts = to_parts(MUTATIONS, rows, MUTATIONS_SCHEMA, "decided_at")
    keys = [(p.day, p.entity_type, p.batch_id, p.table.column("mutation_id").to_pylist()) for p in parts]
    assert keys == [
        (date(2026, 11, 25), "article", "b1", ["m3"]),
        (date(2026, 11, 25), "customer", "b1", ["m1"]),
        (date(2026, 11, 25), "customer", "b2", ["m4"]),
        (date(2026, 11, 25), None, "b2", ["m5"]),
        (date(2026, 11, 26), "customer", "b1", ["m2"]),
    ]
    assert all(p.table.schema == MUTATIONS_SCHEMA for p in parts)
    assert dataset_schema(MUTATIONS).names[-2:] == ["date", "entity_type"]


def outcome(kind: str, batch_id: str | None) -> Outcome:
    return Outcome(None, kind, "m", "APPLIED", None, "customer", "C", 1, "n", (), batch_id, "")  # type: ignore[arg-type]


def test_committed_and_replayed_batches_are_exported_duplicates_are_not():
    outcomes = [outcome("decided", "b2"), outcome("decided", "b2"), outcome("replayed", "b1"),
                outcome("duplicate", "b0"), outcome("decided", None)]
    assert batches_to_export(outcomes) == ["b1", "b2"]


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path):
    store = AuditStore(str(tmp_path))
    path = f"{store.partition_dir(MUTATIONS, T0.date(), 'customer')}/{part_name('b1')}"

    def broken(writer):
        writer.write_table(to_parts(MUTATIONS, [mutation_row("m1", "b1")], MUTATIONS_SCHEMA, "decided_at")[0].table)
        raise RuntimeError("killed while writing")

    with pytest.raises(RuntimeError):
        store.write_parquet(path, broken, MUTATIONS_SCHEMA, {})
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def af(name: str, modified: datetime | None = None) -> AuditFile:
    return AuditFile(f"/a/{name}", name, "/a", modified)


def test_plan_rolls_forward_then_merges():
    now = datetime(2026, 11, 27, tzinfo=UTC)
    files = [af("compacted-1.parquet"), af("part-b1.parquet"), af("part-b2.parquet"), af("part-b3.parquet"),
             af(".part-b4.parquet.x.tmp", now - timedelta(hours=2)), af(".part-b5.parquet.y.tmp", now)]
    plan = plan_partition(files, {"compacted-1.parquet": ["part-b1.parquet"]}, {"part-b3.parquet"},
                          now - timedelta(hours=1))
    assert [f.name for f in plan.leftovers] == ["part-b1.parquet", ".part-b4.parquet.x.tmp"]
    assert [f.name for f in plan.sources] == ["compacted-1.parquet", "part-b2.parquet"]
    idle = plan_partition([af("compacted-1.parquet")], {"compacted-1.parquet": []}, set(), now)
    assert idle.sources == [] and idle.leftovers == []


def _write_part(store: AuditStore, dataset: str, batch_id: str, rows: list[tuple]) -> None:
    schema = MUTATIONS_SCHEMA if dataset == MUTATIONS else CONFLICTS_SCHEMA
    column = "decided_at" if dataset == MUTATIONS else "detected_at"
    (part,) = to_parts(dataset, rows, schema, column)
    store.write_table(f"{store.partition_dir(dataset, part.day, part.entity_type)}/{part_name(batch_id)}",
                      part.table, {"batches": f'["{batch_id}"]'})


def _keys(root: Path, dataset: str, key: str) -> list[str]:
    table = ds.dataset(f"{root}/{dataset}", format="parquet", partitioning=PARTITIONING).to_table()
    return sorted(table.column(key).to_pylist())


def test_compaction_survives_a_crash_and_keeps_open_conflicts_apart(tmp_path: Path, monkeypatch):
    store = AuditStore(str(tmp_path))
    day, later = T0.date(), T0 + timedelta(days=2)
    for batch in range(5):
        _write_part(store, MUTATIONS, f"b{batch}", [mutation_row(f"m{batch}-{i}", f"b{batch}") for i in range(3)])
    _write_part(store, CONFLICTS, "b0", [conflict_row("c0", "b0")])
    _write_part(store, CONFLICTS, "b1", [conflict_row("c1", "b1", "OPEN"), conflict_row("c2", "b1")])
    with pytest.raises(AuditError):
        compact_day(store, day, now=T0 + timedelta(minutes=30))

    directory = store.partition_dir(MUTATIONS, day, "customer")
    monkeypatch.setattr(AuditStore, "delete", lambda self, path: (_ for _ in ()).throw(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        compact_partition(store, MUTATIONS, directory, later)
    monkeypatch.undo()
    assert len(_keys(tmp_path, MUTATIONS, "mutation_id")) == 30  # the window: merged and small files both
    _write_part(store, MUTATIONS, "b5", [mutation_row("m5-0", "b5")])  # a batch exported after the crash

    compact_day(store, day, now=later)
    expected = sorted([*(f"m{b}-{i}" for b in range(5) for i in range(3)), "m5-0"])
    assert _keys(tmp_path, MUTATIONS, "mutation_id") == expected
    names = sorted(p.name for p in Path(directory).iterdir())
    assert len(names) == 1 and names[0].startswith("compacted-")
    conflict_files = sorted(p.name for p in Path(store.partition_dir(CONFLICTS, day, "customer")).iterdir())
    assert conflict_files[0].startswith("compacted-") and conflict_files[1:] == [part_name("b1")]
    assert _keys(tmp_path, CONFLICTS, "conflict_id") == ["c0", "c1", "c2"]
    assert compact_day(store, day, now=later)[0].output is None  # nothing left to do


def test_the_invalid_partition_cannot_be_a_registry_type():
    """`_invalid` holds every type outside the registry, so no registry type may take its name."""
    assert INVALID_ENTITY_TYPE in RESERVED_TYPE_NAMES and partition_value(INVALID_ENTITY_TYPE) == INVALID_ENTITY_TYPE
    with pytest.raises(RegistryError, match="reserved"):
        parse_registry({"entity_types": {INVALID_ENTITY_TYPE: {"attributes": {"x": {"type": "string"}}}}})
    for name in DATASETS:
        assert SCHEMAS[name].field(CLAIMED_ENTITY_TYPE).type == pa.string()
        assert CLAIMED_ENTITY_TYPE not in PARTITION_COLUMNS
