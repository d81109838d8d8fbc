"""The benchmark's derived rows and its table, on plain values."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from bench.cli import options_from
from bench.peer import CONNECTOR_DEFAULTS, at_its_best
from bench.peer_records import partition_of, peer_records
from bench.report import Report, Result, format_report
from bench.rows import Replayer, decoded, row_chunks
from bench.steady import OutputClock, steady_rate, steady_seconds
from mutagg.cli import _parser
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


def test_report_ratios_are_steady_against_steady_and_wall_ratios_are_kept_apart():
    report = Report(["title"])
    # Wall: pipeline 1,000/s, limits 4,000/s and 2,000/s, naive 50/s.
    # Steady: pipeline 2,000/s, Kafka 8,000/s, database 2,500/s, naive 100/s.
    report.results["pipeline"] = Result("pipeline", 1_000, 1.0, p50_ms=1.0, p95_ms=2.0, p99_ms=3.0,
                                        steady_seconds=0.5)
    report.results["limit_kafka"] = Result("kafka", 4_000, 1.0, unit="records", steady_seconds=0.5)
    report.results["limit_db"] = Result("db", 2_000, 1.0, steady_seconds=0.8)
    report.results["naive"] = Result("naive", 100, 2.0, steady_seconds=1.0)
    report.check("same", 1, 1)
    assert report.ratios() == {"pipeline/limit": 0.8, "pipeline/naive": 20.0}
    assert report.wall_ratios() == {"pipeline/limit": 0.5, "pipeline/naive": 20.0}
    document = orjson.loads(orjson.dumps(report.as_dict()))
    assert document["ratios"] == {"pipeline/limit": 0.8, "pipeline/naive": 20.0}
    assert document["wall_ratios"] == {"pipeline/limit": 0.5, "pipeline/naive": 20.0}
    assert (document["results"]["limit_db"]["rate"], document["results"]["limit_db"]["steady_rate"]) == (2_000, 2_500)
    table = format_report(report)
    assert "steady /s" in table and "wall /s" in table
    assert "Headline ratios (steady rates" in table and "Wall-time ratios" in table
    assert "met" in table and "[ok] same" in table
    assert "pipeline/peer" not in table
    row = next(line for line in table.splitlines() if line.startswith("db "))
    assert row.split()[3:7] == ["1.00", "2,000", "0.80", "2,500"]


def test_a_row_without_a_steady_span_has_no_steady_ratio_but_a_wall_one():
    report = Report(["title"])
    report.results["pipeline"] = Result("pipeline", 1_000, 1.0)  # one batch: no span
    report.results["limit_db"] = Result("db", 2_000, 1.0, steady_seconds=0.5)
    assert report.results["pipeline"].steady_rate is None
    assert report.ratios() == {}
    assert report.wall_ratios() == {"pipeline/limit": 0.5}
    row = next(line for line in format_report(report).splitlines() if line.startswith("pipeline "))
    assert row.split()[5:7] == ["-", "-"]


def test_steady_span_runs_from_the_first_output_to_the_last():
    clock = OutputClock()
    assert clock.seconds is None
    clock.mark(10.0)
    assert clock.seconds is None  # one output: no span
    for moment in (10.5, 11.0, 12.5):
        clock.mark(moment)
    assert clock.seconds == 2.5
    assert steady_seconds(3.0, 3.0) is None and steady_seconds(None, 4.0) is None
    assert steady_rate(500, clock.seconds) == 200.0 and steady_rate(500, None) is None


@given(st.lists(st.floats(0, 1e6, allow_nan=False), min_size=2, max_size=50), st.integers(1, 10**6))
def test_steady_rate_is_never_below_the_wall_rate(moments, items):
    """The span lies inside the wall time, so the steady rate is at least the wall-time one."""
    began, ended = min(moments) - 1.0, max(moments) + 1.0
    clock = OutputClock()
    for moment in sorted(moments):
        clock.mark(moment)
    result = Result("row", items, ended - began, steady_seconds=clock.seconds)
    assert result.steady_rate is None or result.steady_rate >= result.rate


def test_peer_at_its_best_sets_what_its_documentation_names():
    assert at_its_best(partitions=6).properties() == {
        "tasks.max": "6", "batch.size": "5000", "use.reduction.buffer": "true",
        "consumer.override.max.poll.records": "5000",
    }
    assert CONNECTOR_DEFAULTS.properties()["batch.size"] == "500"


def test_the_last_peer_record_of_each_partition_carries_its_entity_final_version():
    messages = Workload(seed=3).generate(3_000)
    records, replayer, finals = peer_records(messages, REGISTRY, "bench-x.peer", partitions=3)
    drawn = list(records)
    replayer.finish()
    last: dict[tuple[str, int], bytes] = {}
    for record in drawn:
        last[(record.topic, record.partition)] = record.key
    tables = {t.table: t for t in REGISTRY}
    assert sum(len(p) for p in finals.tables.values()) == len(last)
    for table, by_partition in finals.tables.items():
        for partition, (entity_id, version) in by_partition.items():
            assert partition == partition_of(entity_id, 3)
            key = orjson.loads(last[(f"bench-x.peer.{table}", partition)])["payload"]
            assert key == {tables[table].key: entity_id}
            assert replayer.states[(tables[table].name, entity_id)].version == version


def test_the_default_run_is_a_million_mutations_with_the_peer():
    default = options_from(_parser().parse_args(["bench"]))
    assert (default.mutations, default.peer, default.naive_slice) == (1_000_000, True, 20_000)
    quick = options_from(_parser().parse_args(["bench", "--quick", "--no-peer"]))
    assert (quick.mutations, quick.peer) == (100_000, False)
