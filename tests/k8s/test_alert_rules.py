"""The alert rules under Prometheus's own rule engine: `promtool check rules` on the rendered
PrometheusRule's groups, and `promtool test rules` (tests/k8s/alerts.promtool.yaml) with, for
every alert, input series that fire it and series that do not. promtool is built once from the
Go module proxy by the repo's own script (k8s/tools/promtool.sh) into the tool cache."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.k8s.conftest import REPO

PROMTOOL_SCRIPT = REPO / "k8s" / "tools" / "promtool.sh"
RULE_TESTS = Path(__file__).resolve().parent / "alerts.promtool.yaml"


@pytest.fixture(scope="session")
def promtool() -> Path:
    """The promtool binary (a first build from source takes a few minutes and ~2 GB of modules)."""
    result = subprocess.run(["bash", str(PROMTOOL_SCRIPT), "--path"], capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, f"building promtool failed:\n{result.stderr[-4000:]}"
    return Path(result.stdout.strip())


@pytest.fixture(scope="session")
def rule_groups(kustomize: Path) -> list[dict]:
    """The PrometheusRule's groups as `kubectl apply -k k8s/monitoring` would create them."""
    result = subprocess.run([str(kustomize), "build", str(REPO / "k8s" / "monitoring")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    (rule,) = [d for d in yaml.safe_load_all(result.stdout) if d and d["kind"] == "PrometheusRule"]
    return rule["spec"]["groups"]


def run(promtool: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(promtool), *args], capture_output=True, text=True, timeout=300, cwd=cwd)


def without_annotations(groups: list[dict]) -> list[dict]:
    """promtool's tests compare annotations exactly: the tests are about when alerts fire, so
    they run on the rules without them (`check rules` validates the annotations' templates)."""
    return [{**group, "rules": [{k: v for k, v in rule.items() if k != "annotations"} for rule in group["rules"]]}
            for group in groups]


def test_promtool_accepts_the_rules_and_every_alert_behaves_as_its_tests_say(promtool, rule_groups, tmp_path):
    (tmp_path / "checked.yaml").write_text(yaml.safe_dump({"groups": rule_groups}, sort_keys=False))
    checked = run(promtool, "check", "rules", "checked.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": without_annotations(rule_groups)}, sort_keys=False))
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    tested = run(promtool, "test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "SUCCESS" in tested.stdout + tested.stderr


def test_every_alert_has_a_firing_and_a_quiet_case(rule_groups):
    alerts = {rule["alert"] for group in rule_groups for rule in group["rules"] if "alert" in rule}
    cases = [case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    fired = {case["alertname"] for case in cases if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in cases if not case.get("exp_alerts")}
    assert alerts - fired == set(), "alerts no test fires"
    assert alerts - quiet == set(), "alerts no test shows quiet"
    assert (fired | quiet) <= alerts, "tests of alerts that do not exist"
