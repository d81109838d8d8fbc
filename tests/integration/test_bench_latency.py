"""The latency mode on a small offered load: the job tails, is stopped with
SIGTERM, exits 0, and every mutation is in the ledger with its latency."""

from __future__ import annotations

import pytest

from bench.run import BenchOptions, run_bench

pytestmark = pytest.mark.integration


def test_latency_mode_reports_percentiles_for_every_offered_mutation(base_settings):
    report = run_bench(base_settings, BenchOptions(latency=True, rate=500, duration_s=2, warmup=200))

    result = report.results["latency"]
    assert result.items == 1_000
    assert None not in (result.p50_ms, result.p95_ms, result.p99_ms)
    assert 0 <= result.p50_ms <= result.p95_ms <= result.p99_ms
    assert all(check.ok for check in report.checks), report.checks
