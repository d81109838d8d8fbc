"""The benchmark's machinery on a tiny workload: every row of the table is
there and what each component left behind adds up. Never asserts on speed."""

from __future__ import annotations

import pytest

from bench.report import format_report
from bench.rows import Replayer, decoded
from bench.run import BenchOptions, run_bench
from bench.scale import CONFIGS, FIGURES, ScaleOptions, format_scale, run_scale
from mutagg.settings import with_overrides
from mutagg.workload import Workload
from operators.strategies import CUSTOM_STRATEGIES
from schemas.registry import load_registry

pytestmark = pytest.mark.integration


def test_bench_table_is_complete_and_consistent(base_settings):
    # Batches of 500: the pipeline and the limit commit 4 times, so each has a steady span.
    settings = with_overrides(base_settings, batch_size=500)
    report = run_bench(settings, BenchOptions(mutations=2_000, naive_slice=500, peer=False))

    assert set(report.results) == {"pipeline", "limit_kafka", "limit_db", "naive"}
    for result in report.results.values():
        assert result.items > 0 and result.seconds > 0, result
    pipeline = report.results["pipeline"]
    assert pipeline.items == 2_000
    assert None not in (pipeline.p50_ms, pipeline.p95_ms, pipeline.p99_ms)
    assert pipeline.p50_ms <= pipeline.p95_ms <= pipeline.p99_ms
    assert pipeline.peak_rss_mib > 0 and pipeline.cpu_s > 0
    assert report.results["limit_kafka"].items == 2_000
    assert report.results["naive"].items == 500
    for key in ("pipeline", "limit_db", "limit_kafka", "naive"):  # where the machine's CPU went, per phase
        use = report.results[key].cpu_use
        assert use is not None and use.machine_s > 0 and use.postgres_s is not None, (key, use)
    assert report.results["limit_db"].cpu_use.postgres_s > 0
    assert set(report.ceilings()) == {"pipeline", "limit_db", "limit_kafka", "naive"}

    names = {check.name for check in report.checks}
    assert "pipeline: ledger rows == distinct readable ids" in names
    assert "pipeline: duplicate deliveries recorded" in names
    assert all(check.ok for check in report.checks), [c for c in report.checks if not c.ok]

    for key, result in report.results.items():  # from the first output to the last: inside the wall time
        assert result.steady_seconds is not None and 0 < result.steady_seconds <= result.seconds, (key, result)
        assert result.steady_rate >= result.rate, (key, result)

    document = report.as_dict()
    assert set(document["ratios"]) == set(document["wall_ratios"]) == {"pipeline/limit", "pipeline/naive"}
    assert document["ratios"]["pipeline/limit"] == (
        report.results["pipeline"].steady_rate
        / min(report.results["limit_db"].steady_rate, report.results["limit_kafka"].steady_rate)
    )
    for result in document["results"].values():
        assert result["steady_rate"] >= result["rate"] > 0
    table = format_report(report)
    for label in ("pipeline", "limit: raw Kafka", "limit: database", "naive", "pipeline/limit", "pipeline/naive",
                  "CPU per item", "pipeline ceiling / limit", "steady /s", "wall /s", "Wall-time ratios"):
        assert label in table


def test_scale_runs_every_configuration_and_the_ledgers_agree(base_settings):
    # Batches of 500: every configuration commits several times, so each has a steady span.
    settings = with_overrides(base_settings, batch_size=500)
    messages = Workload(seed=7).generate(3_000)
    registry = load_registry(settings.registry, custom_strategies=CUSTOM_STRATEGIES)
    expected = Replayer(registry)
    for result in decoded(messages, registry):
        expected.feed(result)
    ledger_rows = expected.finish().ledger_rows

    result = run_scale(settings, ScaleOptions(mutations=3_000, rounds=1))

    assert [set(runs) for runs in result.rounds] == [{config.key for config in CONFIGS}]
    for key, run in result.rounds[0].items():
        assert run.mutations == 3_000 and run.job_cpu_s > 0 and run.postgres_s is not None, (key, run)
        assert run.steady_s is not None and 0 < run.steady_s < run.wall_s, (key, run)
        assert sum(run.statuses.values()) == ledger_rows, (key, run.statuses)
    assert result.rounds[0]["processes"].batches > 1 and result.rounds[0]["shards"].batches > 1
    assert result.ledger_differences() == []
    assert result.ratios()["baseline"] == {name: 1.0 for name in FIGURES}
    table = format_scale(result)
    for config in CONFIGS:
        assert config.title in table
    assert f"ledgers agree: every run's mutation_log has {ledger_rows:,} rows" in table
    assert result.as_dict()["ledgers_agree"] is True
