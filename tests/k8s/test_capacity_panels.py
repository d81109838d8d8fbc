"""The dashboard's capacity row under Prometheus's own engine: every target of the row becomes a
recording rule, `promtool test rules` feeds it 7 days of series a two-process job could export,
and each recorded value is the one computed by hand below. promtool comes from the repo's own
script (k8s/tools/promtool.sh), as in test_alert_rules.py.

The 7 days (one sample a minute; processes mutagg-0 and mutagg-1 both report every partition,
as the refresher does):
- input: partition 0's end offset grows at 58 + h/4 messages/s in hour h (h = 1..168): 100/s in
  the last hour, and a linear fit puts hour 168 + 720 (30 days on) at 58 + 888/4 = 280/s;
- commits: 50/s per process, 100/s per process in hours 10-12 (peak 200/s); replays at 1000/s
  in hours 20-21 must not count as capacity;
- lag in time: partition 1 stalled for the last hour (0 -> 3600 s, +1 s per s), partition 0 at
  a steady 5 s, partition 2 draining (4600 -> 1600 s); retention 7200 s: (7200 - 3600) / 1 =
  3600 s left (a draining partition is never "0 s left");
- CPU: 0.25 s/s per process, mutations 25/s per process: 0.5 / 50 = 0.01 s per mutation; RSS
  300 MB + 200 MB: 5e8 / 50 = 1e7 bytes per mutation/s. Another job in the namespace (a database
  exporter) burns 2 CPU s/s and 1 GB and must not count.
Few series go into the 7-day subqueries: promtool's engine stops at 10,000 samples in memory,
and a subquery in 5-minute steps holds 2016 per series (a real Prometheus allows 50 million).
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.unit.test_metrics_monitoring import capacity_panels

PROMTOOL_SCRIPT = Path(__file__).resolve().parents[2] / "k8s" / "tools" / "promtool.sh"
MINUTES = 7 * 24 * 60
TOPIC = ',topic="edge.mutations"'
PODS = ("mutagg-0", "mutagg-1")

INPUT_NOW = 58 + 168 / 4  # messages/s in the last hour
PEAK_COMMITS = 2 * 100
MUTATIONS_NOW = 2 * 25
EXPECTED = {  # panel title (its start) -> refId -> value at the end of the 7 days (docstring)
    "Headroom": {"A": PEAK_COMMITS / INPUT_NOW},  # 2.0
    "Time until the lag exceeds": {"A": (7200 - 3600) / 1},
    "CPU per mutation": {"A": 2 * 0.25 / MUTATIONS_NOW},  # 0.01 s
    "Memory per mutation": {"A": (3e8 + 2e8) / MUTATIONS_NOW},  # 1e7 bytes
    "Input growth": {"A": INPUT_NOW, "B": 58 + (168 + 30 * 24) / 4, "C": PEAK_COMMITS},  # 100, 280, 200
}


@pytest.fixture(scope="module")
def promtool() -> Path:
    result = subprocess.run(["bash", str(PROMTOOL_SCRIPT), "--path"], capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, f"building promtool failed:\n{result.stderr[-4000:]}"
    return Path(result.stdout.strip())


def values(start: float, step: Callable[[int], float]) -> str:
    """promtool's notation for a sample at each minute 0..MINUTES: `start` at minute 0, then
    `step(m)` added at minute m (runs of equal steps written as `a+bxn` or `a-bxn`)."""
    parts, value, minute = [str(start)], start, 1
    while minute <= MINUTES:
        increment, run = step(minute), 1
        while minute + run <= MINUTES and step(minute + run) == increment:
            run += 1
        parts.append(f"{value + increment}{'-' if increment < 0 else '+'}{abs(increment)}x{run - 1}")
        value += increment * run
        minute += run
    return " ".join(parts)


def hour(minute: int) -> int:
    return (minute + 59) // 60  # minute 1..60 is hour 1


def input_series() -> list[dict]:
    def per_pod(name: str, labels: str, start: float, step: Callable[[int], float]) -> list[dict]:
        return [{"series": f'{name}{{namespace="mutagg",job="mutation-aggregator",pod="{pod}"{labels}}}',
                 "values": values(start, step)} for pod in PODS]

    series = [
        *per_pod("mutagg_input_end_offset", f'{TOPIC},partition="0"', 0, lambda m: (58 + hour(m) / 4) * 60),
        *per_pod("mutagg_input_end_offset", f'{TOPIC},partition="1"', 0, lambda m: 0),
        *per_pod("mutagg_messages_total", ',kind="decided"', 0, lambda m: 6000 if 10 <= hour(m) <= 12 else 3000),
        *per_pod("mutagg_messages_total", ',kind="replayed"', 0, lambda m: 60000 if 20 <= hour(m) <= 21 else 0),
        *per_pod("mutagg_mutations_total", ',entity_type="customer",status="APPLIED"', 0, lambda m: 1500),
        *per_pod("mutagg_consumer_lag_seconds", f'{TOPIC},partition="0"', 5, lambda m: 0),
        *per_pod("mutagg_consumer_lag_seconds", f'{TOPIC},partition="1"', 0,
                 lambda m: 60 if m > MINUTES - 60 else 0),
        *per_pod("mutagg_consumer_lag_seconds", f'{TOPIC},partition="2"', 4600,
                 lambda m: -50 if m > MINUTES - 60 else 0),
        *per_pod("mutagg_input_retention_seconds", TOPIC, 7200, lambda m: 0),
        *per_pod("process_cpu_seconds_total", "", 0, lambda m: 15),
    ]
    series += [
        {"series": 'process_resident_memory_bytes{namespace="mutagg",job="mutation-aggregator",pod="mutagg-0"}',
         "values": f"3e8x{MINUTES}"},
        {"series": 'process_resident_memory_bytes{namespace="mutagg",job="mutation-aggregator",pod="mutagg-1"}',
         "values": f"2e8x{MINUTES}"},
        {"series": 'process_cpu_seconds_total{namespace="mutagg",job="postgres-exporter",pod="pg-0"}',
         "values": values(0, lambda m: 120)},
        {"series": 'process_resident_memory_bytes{namespace="mutagg",job="postgres-exporter",pod="pg-0"}',
         "values": f"1e9x{MINUTES}"},
    ]
    return series


def recording_rules() -> dict[str, tuple[str, float]]:
    """Record name -> (the target's expression for namespace "mutagg", the value expected)."""
    rules = {}
    for panel in capacity_panels():
        (expected,) = [by_ref for title, by_ref in EXPECTED.items() if panel["title"].startswith(title)]
        assert set(expected) == {t["refId"] for t in panel["targets"]}, panel["title"]
        for target in panel["targets"]:
            expr = target["expr"].replace('namespace=~"$namespace"', 'namespace=~"mutagg"')
            assert "$" not in expr, expr  # a Grafana variable promtool would not know
            rules[f"capacity:panel_{panel['id']}_{target['refId']}"] = (expr, expected[target["refId"]])
    assert len(rules) == sum(len(by_ref) for by_ref in EXPECTED.values())
    return rules


def test_every_capacity_panel_computes_what_the_hand_computation_says(promtool, tmp_path):
    rules = recording_rules()
    (tmp_path / "capacity.rules.yaml").write_text(yaml.safe_dump({"groups": [{
        "name": "capacity", "rules": [{"record": name, "expr": expr} for name, (expr, _) in rules.items()]}]}))
    (tmp_path / "capacity.test.yaml").write_text(yaml.safe_dump({
        "rule_files": ["capacity.rules.yaml"],
        "evaluation_interval": "1d",  # the rules run at day 0..7: the subqueries over 7 days stay cheap
        "fuzzy_compare": True,  # equal to the last bit of a float
        "tests": [{
            "interval": "1m",
            "input_series": input_series(),
            "promql_expr_test": [
                {"expr": name, "eval_time": "7d", "exp_samples": [{"labels": name, "value": value}]}
                for name, (_, value) in rules.items()],
        }],
    }, sort_keys=False))
    checked = subprocess.run([str(promtool), "check", "rules", "capacity.rules.yaml"],
                             capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run([str(promtool), "test", "rules", "capacity.test.yaml"],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout + tested.stderr

