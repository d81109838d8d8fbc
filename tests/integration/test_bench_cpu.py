"""The benchmark's CPU meter on the real services: PostgreSQL's work is counted as
PostgreSQL's, this process's as the machine's only. Never asserts on speed."""

from __future__ import annotations

import time

import psycopg
import pytest

from bench.cpu import CpuMeter, kafka_pid

pytestmark = pytest.mark.integration


def _spin(seconds: float) -> None:
    began = time.process_time()
    while time.process_time() - began < seconds:
        pass


def test_meter_finds_the_local_services(base_settings):
    meter = CpuMeter(base_settings.database_url, base_settings.kafka_bootstrap)
    assert meter.postgres is not None and meter.kafka is not None
    assert kafka_pid("127.0.0.1:1") is None  # a broker elsewhere: the local one's CPU would mislead


def test_a_query_counts_for_postgresql_and_python_does_not(base_settings):
    meter = CpuMeter(base_settings.database_url, base_settings.kafka_bootstrap)
    with psycopg.connect(base_settings.database_url) as connection:
        with meter.measure() as query_cpu:
            began = time.perf_counter()
            connection.execute("SELECT count(*) FROM generate_series(1, 4000000)").fetchone()
            query_s = time.perf_counter() - began
        with meter.measure() as spin_cpu:
            _spin(0.5)  # CPU of this process only
    query, spin = query_cpu(), spin_cpu()
    # A CPU-bound query: its backend is busy for most of its wall time (half, on a contended machine).
    assert query.postgres_s >= 0.5 * query_s, (query, query_s)
    assert query.machine_s >= query.postgres_s * 0.9
    assert spin.postgres_s < 0.25, spin  # the spin is not PostgreSQL's ...
    assert spin.machine_s >= 0.45, spin  # ... but the machine's
