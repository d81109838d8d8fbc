"""The benchmark's CPU accounting: /proc parsing and the ceiling arithmetic."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import time

import pytest

from bench.cpu import CpuUse, machine_busy_s, process_times
from bench.report import Report, Result, format_report

TICK = os.sysconf("SC_CLK_TCK")


def test_machine_busy_counts_user_nice_system_irq_softirq_only():
    stat = (
        f"cpu  {1 * TICK} {2 * TICK} {3 * TICK} {100 * TICK} {50 * TICK} {4 * TICK} {5 * TICK} {60 * TICK} 0 0\n"
        "cpu0 1 1 1 1 1 1 1 1 0 0\nintr 12345\n"
    )
    assert machine_busy_s(stat) == pytest.approx(1 + 2 + 3 + 4 + 5)  # idle, iowait and steal are not busy


def test_process_times_survive_a_command_name_with_spaces_and_parentheses():
    # pid (comm) state ppid ... field 14-17: utime stime cutime cstime
    fields = ["S", "4242"] + ["0"] * 9 + [str(3 * TICK), str(2 * TICK), str(7 * TICK), str(1 * TICK)] + ["0"] * 30
    text = "99 (post gres: a (b)) " + " ".join(fields)
    assert process_times(text) == (4242, pytest.approx(5.0), pytest.approx(8.0))


def _own_stat() -> tuple[int, float, float]:
    with open("/proc/self/stat") as handle:
        return process_times(handle.read())


def _spin(seconds: float) -> None:
    began = time.process_time()
    while time.process_time() - began < seconds:
        pass


def test_own_stat_counts_cpu_burnt_here_as_own_and_in_a_reaped_child_as_reaped():
    parent, own_before, reaped_before = _own_stat()
    assert parent == os.getppid()
    _spin(0.3)
    _, own_spun, reaped_spun = _own_stat()
    assert own_spun - own_before >= 0.25, (own_before, own_spun)  # ticks: 10 ms granularity
    assert reaped_spun == reaped_before
    subprocess.run([sys.executable, "-c", f"import time\n{inspect.getsource(_spin)}\n_spin(0.4)"], check=True)
    _, own_after, reaped_after = _own_stat()
    assert reaped_after - reaped_spun >= 0.35, (reaped_spun, reaped_after)  # the child's, once waited for
    assert own_after - own_spun < 0.2, (own_spun, own_after)  # waiting costs this process next to nothing


def _report() -> Report:
    report = Report(["header"])
    # 10,000 mutations using 2 s of machine CPU: 200 us each; 2 cores give at most 10,000/s.
    report.results["pipeline"] = Result("pipeline", 10_000, 2.0, cpu_s=1.0, cpu_use=CpuUse(2.0, 0.6, 0.1))
    report.results["limit_db"] = Result(
        "limit: database alone", 10_000, 0.4, cpu_s=0.05, cpu_use=CpuUse(0.5, 0.4, None)
    )
    report.results["limit_kafka"] = Result("limit: raw Kafka consume", 10_000, 0.1, unit="records")
    return report


def test_ceiling_is_the_rate_with_every_core_busy(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    ceilings = _report().ceilings()
    assert ceilings == {"pipeline": pytest.approx(10_000), "limit_db": pytest.approx(40_000)}


def test_table_says_when_the_pipeline_cannot_reach_the_limit_target(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    table = format_report(_report())
    # limit 25,000/s (database); pipeline ceiling 10,000/s = 0.40 of it; 0.7 x would need 3.5 cores.
    assert "pipeline ceiling / limit 0.40" in table
    assert "0.7 x the limit" in table and "would keep 3.50 of 2 cores busy (more than the machine has)" in table
    row = next(line for line in table.splitlines() if line.startswith("  pipeline  "))
    assert row.split()[1:] == ["100.0", "60.0", "10.0", "200.0", "1.00", "10,000"]


def test_table_without_cpu_figures_has_no_cpu_block():
    report = Report(["header"])
    report.results["pipeline"] = Result("pipeline", 10, 1.0)
    assert "CPU per item" not in format_report(report)


def test_job_cpu_measured_over_the_phase_wins_over_the_whole_run(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    report = Report(["header"])
    # The job ran 30 s (cpu_s, warm-up included); over the timed 10 s it used 1.5 s.
    report.results["latency"] = Result("at 1,000/s", 10_000, 10.0, cpu_s=9.0,
                                       cpu_use=CpuUse(4.0, 1.0, 0.5, job_s=1.5))
    row = next(line for line in format_report(report).splitlines() if line.startswith("  at 1,000/s"))
    assert row.split()[2:6] == ["150.0", "100.0", "50.0", "400.0"]
