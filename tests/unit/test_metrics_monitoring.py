"""The Grafana dashboard and the alert rules only query metrics the job exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from mutagg.metrics import JobMetrics

MONITORING = Path(__file__).resolve().parents[2] / "k8s" / "monitoring"
METRIC = re.compile(r"\b(mutagg[_:][a-z0-9_:]+)")
PRESENCE = "mutation-aggregator.presence"
CAPACITY_ROW = "Capacity planning"
# What is not a metric name in PromQL: strings, label matchers, ranges, label lists, calls, numbers.
NOT_NAMES = re.compile(r'"[^"]*"|\{[^}]*\}|\[[^\]]*\]'
                       r"|\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
NAME = re.compile(r"(?<![\w.$])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()")
KEYWORDS = {"and", "or", "unless", "atan2", "bool", "offset", "inf", "nan", "by", "without", "on", "ignoring",
            "group_left", "group_right"}
OTHER_EXPORTERS = re.compile(r"up|kube_[a-z_]+")
"""kube-state-metrics (the Job's pods and status) and Prometheus's own `up`."""


def exposed() -> set[str]:
    names = set()
    for family in JobMetrics(entity_types=["customer"]).registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names.update(f"{family.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(family.name)
    return names


def metric_names(expr: str) -> set[str]:
    """Every metric name a PromQL expression selects (not functions, labels or keywords)."""
    return {name for name in NAME.findall(NOT_NAMES.sub(" ", expr)) if name.lower() not in KEYWORDS}


def dashboard_panels() -> list[dict]:
    return json.loads((MONITORING / "mutagg-dashboard.json").read_text())["panels"]


def balanced(expr: str) -> bool:
    depth = {"(": 0, "{": 0, "[": 0}
    closing = {")": "(", "}": "{", "]": "["}
    for char in expr:
        if char in depth:
            depth[char] += 1
        elif char in closing:
            depth[closing[char]] -= 1
            if depth[closing[char]] < 0:
                return False
    return not any(depth.values())


def test_metric_names_finds_the_selected_metrics_only():
    expr = ('sum by (topic) (rate(mutagg_messages_total{kind!="replayed",job=~"a|b"}[5m] offset 1d)) '
            '/ on (topic) group_left (partition) (process_resident_memory_bytes > 1e-9) or up unless '
            'max_over_time(kube_pod_info[7d:5m])')
    assert metric_names(expr) == {
        "mutagg_messages_total", "process_resident_memory_bytes", "up", "kube_pod_info"}


def test_dashboard_queries_exposed_metrics():
    panels = dashboard_panels()
    exprs = [t["expr"] for panel in panels for t in panel.get("targets", [])]
    assert len(exprs) >= 15 and all(balanced(e) for e in exprs)
    used = {name for expr in exprs for name in metric_names(expr)}
    foreign = {name for name in used - exposed() if not OTHER_EXPORTERS.fullmatch(name)}
    assert used and not foreign, foreign
    assert {name for expr in exprs for name in METRIC.findall(expr)} <= used  # the regexes agree
    titles = " ".join(panel["title"].lower() for panel in panels)
    for topic in ("throughput", "latency", "lag", "conflicts", "errors"):
        assert topic in titles
    assert len({panel["id"] for panel in panels}) == len(panels)


def capacity_panels() -> list[dict]:
    """The panels under the (expanded) capacity row: those after it up to the next row."""
    panels = dashboard_panels()
    (start,) = [i for i, p in enumerate(panels) if p["type"] == "row" and p["title"] == CAPACITY_ROW]
    assert panels[start]["collapsed"] is False
    following = panels[start + 1:]
    return following[:next((i for i, p in enumerate(following) if p["type"] == "row"), len(following))]


def test_the_capacity_row_answers_the_planning_questions():
    """Headroom, input growth, time until the lag passes retention, CPU and memory per mutation
    (issue 21 part 5), each from what the job exports (its own gauges and its process collector)."""
    panels = capacity_panels()
    titles = " ".join(panel["title"].lower() for panel in panels)
    for topic in ("headroom", "growth", "retention", "cpu per mutation", "memory per mutation"):
        assert topic in titles, topic
    used = {name for panel in panels for t in panel["targets"] for name in metric_names(t["expr"])}
    assert {"mutagg_input_end_offset", "mutagg_input_retention_seconds", "mutagg_consumer_lag_seconds",
            "mutagg_mutations_total", "process_cpu_seconds_total", "process_resident_memory_bytes"} <= used
    assert used <= exposed(), used - exposed()
    exprs = " ".join(t["expr"] for panel in panels for t in panel["targets"])
    assert "predict_linear(" in exprs and "max_over_time(" in exprs
    row_y = dashboard_panels()[dashboard_panels().index(panels[0]) - 1]["gridPos"]["y"]
    assert all(panel["gridPos"]["y"] > row_y for panel in panels)


def test_alert_rules_query_exposed_or_recorded_metrics():
    rule = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert rule["kind"] == "PrometheusRule" and rule["apiVersion"] == "monitoring.coreos.com/v1"
    groups = {group["name"]: group["rules"] for group in rule["spec"]["groups"]}
    rules = [r for group in groups.values() for r in group]
    recorded = {r["record"] for r in rules if "record" in r}
    alerts = {r["alert"]: r for r in rules if "alert" in r}
    assert {"MutaggConsumerLagGrowing", "MutaggErrorRateHigh", "MutaggNoCommits"} <= set(alerts)
    # The presence alerts fire when the job's pods are gone: none may need a metric of the job.
    presence = groups.pop(PRESENCE)
    assert {"MutaggJobMetricsAbsent", "MutaggJobFailed", "MutaggRestartsLooping"} <= {r["alert"] for r in presence}
    for r in presence:
        assert balanced(r["expr"]) and not METRIC.findall(r["expr"]), r["expr"]
        assert re.findall(r"\b(up|kube_[a-z_]+)\b", r["expr"]), r["expr"]
    for r in (r for group in groups.values() for r in group):
        assert balanced(r["expr"]), r["expr"]
        used = set(METRIC.findall(r["expr"]))
        assert used and used <= exposed() | recorded, used - exposed() - recorded
    for alert in alerts.values():
        assert alert["labels"]["severity"] in ("critical", "warning", "info") and alert["annotations"]["summary"]
        assert alert["annotations"]["runbook"], alert["alert"]  # what to do (README "Alerts")


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((MONITORING / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"]) | {
        f for generator in kustomization["configMapGenerator"] for f in generator["files"]}
    assert listed == {p.name for p in MONITORING.iterdir() if p.name != "kustomization.yaml"}
