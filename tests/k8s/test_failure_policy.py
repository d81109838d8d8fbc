"""The rendered Job's failure handling is the README's exit-code table: weather is retried
without counting, what only an operator can fix fails the Job at once, anything else is
counted per index; and a stop after SIGTERM ends well inside the pod's grace period."""

from __future__ import annotations

import pytest

from tests.k8s.conftest import OVERLAYS
from tests.k8s.failure_policy import INTENDED, action

STOP_MARGIN_S = 15  # closing after the deadline (metrics, logs) and the wrapper, measured in BENCHMARKS.md


def _job(resources: list[dict]) -> dict:
    (job,) = [r for r in resources if r["kind"] == "Job"]
    return job


@pytest.mark.parametrize("target", ["base", *OVERLAYS])
def test_every_exit_code_of_the_table_gets_its_action(rendered, target):
    spec = _job(rendered[target])["spec"]
    for code, intended in INTENDED.items():
        if intended is not None:
            assert action(spec, {"mutagg": code}) == intended, f"{target}: exit {code}"
            # the init container runs `mutagg` too (recovery init): same codes, same meaning
            assert action(spec, {}, {"recovery-init": code}) == intended, f"{target}: init container exit {code}"
    assert action(spec, {"mutagg": 137}, conditions=[("DisruptionTarget", "True")]) == "Ignore"


@pytest.mark.parametrize("target", ["base", *OVERLAYS])
def test_failures_are_counted_per_index_and_never_in_total(rendered, target):
    spec = _job(rendered[target])["spec"]
    assert spec["completionMode"] == "Indexed" and spec["backoffLimitPerIndex"] >= 3
    assert spec["maxFailedIndexes"] == 0  # the cluster needs every process
    assert "backoffLimit" not in spec  # a total over months of weather would end the Job for good


@pytest.mark.parametrize("target", ["base", *OVERLAYS])
def test_a_stop_ends_well_inside_the_grace_period_and_a_failure_shows_its_cause(rendered, target):
    resources = rendered[target]
    pod = _job(resources)["spec"]["template"]["spec"]
    (settings,) = [r["data"] for r in resources if r["kind"] == "ConfigMap" and r["metadata"]["name"].startswith(
        "mutagg-settings")]
    assert float(settings["MUTAGG_STOP_DEADLINE_S"]) + STOP_MARGIN_S <= pod["terminationGracePeriodSeconds"]
    for container in pod["initContainers"] + pod["containers"]:
        assert container["terminationMessagePolicy"] == "FallbackToLogsOnError", container["name"]


def test_the_evaluator_follows_the_documented_semantics():
    spec = {"completionMode": "Indexed", "backoffLimitPerIndex": 1, "podFailurePolicy": {"rules": [
        {"action": "FailIndex", "onExitCodes": {"containerName": "main", "operator": "In", "values": [4]}},
        {"action": "Ignore", "onExitCodes": {"operator": "NotIn", "values": [1, 4]}},
    ]}}
    assert action(spec, {"main": 4}) == "FailIndex"
    assert action(spec, {"side": 4, "main": 1}) == "Count"  # containerName restricts the first rule
    assert action(spec, {"main": 1, "side": 0}) == "Count"  # an exit 0 is never matched, not even by NotIn
    assert action(spec, {"main": 1, "side": 9}) == "Ignore"  # any container may match NotIn
    with pytest.raises(AssertionError):
        action({"podFailurePolicy": {"rules": [{"action": "FailIndex", "onExitCodes": {
            "operator": "In", "values": [4]}}]}}, {"main": 4})  # FailIndex without backoffLimitPerIndex
    with pytest.raises(AssertionError):
        action({"podFailurePolicy": {"rules": [{"action": "Ignore", "onExitCodes": {
            "operator": "In", "values": [7, 3]}}]}}, {"main": 3})  # unsorted values
