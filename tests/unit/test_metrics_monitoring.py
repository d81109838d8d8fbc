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


def test_dashboard_queries_exposed_metrics():
    dashboard = json.loads((MONITORING / "mutagg-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(exprs) >= 15 and all(balanced(e) for e in exprs)
    used = {name for expr in exprs for name in METRIC.findall(expr)}
    assert used and used <= exposed(), used - exposed()
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in ("throughput", "latency", "lag", "conflicts", "errors"):
        assert topic in titles
    assert len({panel["id"] for panel in dashboard["panels"]}) == len(dashboard["panels"])


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
