"""`python -m bench.neighbour` on a tiny size: its three phases run and print their rows.
Never asserts on latency or speed (BENCHMARKS.md holds the figures of a full run)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.integration.conftest import settings_env

pytestmark = pytest.mark.integration


def test_the_neighbour_benchmark_prints_its_three_phases(base_settings):
    result = subprocess.run(
        [sys.executable, "-m", "bench.neighbour", "--mutations", "1000", "--seconds", "1", "--rate", "50"],
        env=settings_env(base_settings), capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = {line.split("  ")[0]: line.split() for line in result.stdout.splitlines()}
    for phase in ("1. ERP alone", "1. ERP + job, throttle off", "1. ERP + job, limiter on (20 ms)",
                  "median: ERP alone", "median: ERP + job, limiter on (20 ms)"):
        assert phase in rows, result.stdout
        assert int(rows[phase][-5]) > 0  # ERP transactions measured in every phase
