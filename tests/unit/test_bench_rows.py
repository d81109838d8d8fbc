"""The benchmark's derived rows and its table, on plain values."""

from __future__ import annotations

import orjson

from bench.report import Report, Result, format_report
from bench.rows import Replayer, decoded, row_chunks
from mutagg.settings import DEFAULT_REGISTRY
from mutagg.workload import Message, Workload
from operators.strategies import CUSTOM_STRATEGIES
from schemas.registry import load_registry

REGISTRY = load_registry(str(DEFAULT_REGISTRY), custom_strategies=CUSTOM_STRATEGIES)


def _message(mutation_id: str, entity_id: str, operation: str, attributes: dict, base: int) -> Message:
    document = {
        "id": mutation_id, "edge_node_id": "shop-1", "entity_type": "stock_level", "entity_id": entity_id,
        "operation_type": operation, "attributes": attributes, "base_version": base,
        "timestamp": "2026-11-26T09:00:00Z", "priority": 5, "dependencies": [],
    }
    return Message(f"stock_level:{entity_id}".encode(), orjson.dumps(document))


def test_replayer_counts_versions_duplicates_and_unreadable_messages():
    messages = [
        _message("a", "S1", "CREATE", {"quantity": 1}, 0),
        _message("b", "S1", "UPDATE", {"quantity": 2}, 1),
        _message("b", "S1", "UPDATE", {"quantity": 2}, 1),  # re-sent
        _message("c", "S1", "DELETE", {}, 2),
        _message("d", "S2", "CREATE", {"quantity": 5}, 0),
        Message(b"stock_level:x", b"{not json"),
    ]
    replayer = Replayer(REGISTRY)
    for result in decoded(messages, REGISTRY):
        replayer.feed(result)
    expected = replayer.finish()
    assert (expected.messages, expected.ledger_rows, expected.duplicates, expected.mutations) == (6, 4, 1, 4)
    assert expected.entities["stock_level"] == 2
    assert expected.version_sums["stock_level"] == 3 + 1
    state = replayer.states[("stock_level", "S1")]
    assert state.deleted and state.values["quantity"] == 2


def test_row_chunks_split_by_batch_and_render_every_ledger_row():
    messages = Workload(seed=5).generate(1_000)
    chunks, expected = row_chunks(messages, REGISTRY, batch_size=300)
    assert len(chunks) == 4
    assert sum(c.ledger_rows for c in chunks) == expected.ledger_rows
    assert sum(c.ledger_csv.count(b"\n") for c in chunks) >= expected.ledger_rows
    for chunk in chunks:
        for columns, csv in chunk.entity_csv.values():
            assert columns[-1] != "" and csv.endswith(b"\n")


def test_report_ratios_use_the_slower_limit_and_table_lists_every_row():
    report = Report(["title"])
    report.results["pipeline"] = Result("pipeline", 1_000, 1.0, p50_ms=1.0, p95_ms=2.0, p99_ms=3.0)
    report.results["limit_kafka"] = Result("kafka", 4_000, 1.0, unit="records")
    report.results["limit_db"] = Result("db", 2_000, 1.0)
    report.results["naive"] = Result("naive", 100, 2.0)
    report.check("same", 1, 1)
    ratios = report.ratios()
    assert ratios == {"pipeline/limit": 0.5, "pipeline/naive": 20.0}
    table = format_report(report)
    assert "pipeline/limit" in table and "met" in table and "[ok] same" in table
    assert "pipeline/peer" not in table
