"""k8s/overlays/prod-autoscale (issue 21 part 4): KEDA scales a DataflowScale through its /scale
subresource from the job's lag in seconds; the job's bounds, shards and recovery partitions fit
every count KEDA may ask for; the job's service account may do exactly what mutagg/rescaler.py
does; and the pods carry what `mutagg scale join` and the rescaler need."""

from __future__ import annotations

import copy
import re

import pytest
from prometheus_client import CollectorRegistry

from mutagg import rescaler
from mutagg.metrics import JobMetrics
from mutagg.process_count import ScaleBounds, check_bounds
from mutagg.settings import Settings, load_settings
from tests.k8s.custom_resources import validate_custom_resource

OVERLAY = "prod-autoscale"


def _one(resources: list[dict], kind: str) -> dict:
    (found,) = [r for r in resources if r["kind"] == kind]
    return found


def _settings(resources: list[dict]) -> dict[str, str]:
    (data,) = [r["data"] for r in resources
               if r["kind"] == "ConfigMap" and r["metadata"]["name"].startswith("mutagg-settings")]
    return data


@pytest.fixture
def resources(rendered) -> list[dict]:
    return rendered[OVERLAY]


def test_keda_drives_the_dataflowscale_through_its_scale_subresource(resources):
    scaled, target, crd = (_one(resources, kind) for kind in ("ScaledObject", "DataflowScale",
                                                              "CustomResourceDefinition"))
    reference = scaled["spec"]["scaleTargetRef"]
    assert (reference["apiVersion"], reference["kind"], reference["name"]) == \
        (target["apiVersion"], target["kind"], target["metadata"]["name"])
    assert scaled["metadata"]["namespace"] == target["metadata"]["namespace"]
    # The CRD the rescaler's paths name, with the /scale fields it reads and writes.
    assert (crd["spec"]["group"], crd["spec"]["names"]["plural"]) == (rescaler.GROUP, rescaler.PLURAL)
    assert target["apiVersion"] == f"{rescaler.GROUP}/{rescaler.VERSION}"
    (version,) = crd["spec"]["versions"]
    assert version["subresources"]["scale"] == {"specReplicasPath": ".spec.replicas",
                                                "statusReplicasPath": ".status.replicas",
                                                "labelSelectorPath": ".status.selector"}
    assert "status" in version["subresources"]  # the job reports through /status only
    # spec.replicas is the autoscaler's: the manifest leaves it out, so a re-apply never resets it.
    assert "replicas" not in target["spec"]
    assert version["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["replicas"]["default"] == 1


def _schema_nodes(schema: dict):
    yield schema
    for child in schema.get("properties", {}).values():
        yield from _schema_nodes(child)
    if isinstance(schema.get("items"), dict):
        yield from _schema_nodes(schema["items"])


def test_the_crd_schema_is_structural(resources):
    """What the API server requires of a v1 CRD beyond what kubernetes_validate checks: every
    node typed, and no node with both `properties` and `additionalProperties`."""
    (version,) = _one(resources, "CustomResourceDefinition")["spec"]["versions"]
    for node in _schema_nodes(version["schema"]["openAPIV3Schema"]):
        assert "type" in node, node
        assert not ("properties" in node and "additionalProperties" in node), node


def test_the_bounds_fit_the_shards_and_every_count_keda_may_ask_for(resources):
    scaled, job, settings = _one(resources, "ScaledObject"), _one(resources, "Job"), _settings(resources)
    low, high = int(settings["MUTAGG_SCALE_MIN_PROCESSES"]), int(settings["MUTAGG_SCALE_MAX_PROCESSES"])
    assert (scaled["spec"]["minReplicaCount"], scaled["spec"]["maxReplicaCount"]) == (low, high)
    shards, partitions = int(settings["MUTAGG_SHARDS"]), int(settings["MUTAGG_TOPIC_PARTITIONS"])
    check_bounds(ScaleBounds(low, high, int(settings["MUTAGG_WORKERS"]), shards,
                             int(settings["MUTAGG_RECOVERY_PARTITIONS"])))
    assert shards <= partitions and partitions % shards == 0
    assert settings.get("MUTAGG_PRIORITY_LANE", "") == ""  # the lane needs one shard
    spec = job["spec"]
    assert low <= spec["parallelism"] == spec["completions"] == int(settings["MUTAGG_PROCESSES"]) <= high
    # A cluster of more than one process shares the recovery partitions: the claim must allow it.
    (claim,) = [r for r in resources if r["kind"] == "PersistentVolumeClaim"]
    assert high == 1 or "ReadWriteMany" in claim["spec"]["accessModes"]


def test_the_settings_turn_autoscaling_on_and_load(resources):
    settings = _settings(resources)
    loaded = load_settings(environ={**settings, "MUTAGG_SCALE_JOB": "mutagg"})
    assert loaded.scale_target == _one(resources, "DataflowScale")["metadata"]["name"]
    assert loaded.recovery_dir and loaded.scale_cooldown_s > 0
    # The pods reach the API where the defaults say (no override in the overlay).
    assert "MUTAGG_KUBE_API_URL" not in settings and "MUTAGG_KUBE_SERVICE_ACCOUNT_DIR" not in settings


def test_the_lag_in_seconds_of_the_jobs_own_metrics_drives_keda_with_a_cool_down(resources):
    scaled, settings = _one(resources, "ScaledObject"), _settings(resources)
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus" and trigger["metricType"] == "AverageValue"
    query = trigger["metadata"]["query"]
    exported = {metric.name for metric in JobMetrics([], CollectorRegistry()).registry.collect()}
    named = set(re.findall(r"\b(mutagg_[a-z_]+)\{", query))
    assert named == {"mutagg_consumer_lag_seconds"} <= exported
    assert 'job="mutation-aggregator"' in query  # the PodMonitor's job label (k8s/monitoring)
    assert "max_over_time" in query  # bridges the gap while the pods restart for a rescale
    assert float(trigger["metadata"]["threshold"]) > 0
    behavior = scaled["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    cooldown = float(settings["MUTAGG_SCALE_COOLDOWN_S"])
    for direction in ("scaleUp", "scaleDown"):
        (policy,) = behavior[direction]["policies"]
        assert (policy["type"], policy["value"]) == ("Pods", 1)  # one process at a time
        assert policy["periodSeconds"] >= min(cooldown, 1800)
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= cooldown


def test_the_service_account_may_do_what_the_rescaler_does_and_no_more(resources):
    role, binding, job = _one(resources, "Role"), _one(resources, "RoleBinding"), _one(resources, "Job")
    target = _one(resources, "DataflowScale")["metadata"]["name"]
    pod = job["spec"]["template"]["spec"]
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": role["metadata"]["name"]}
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": pod["serviceAccountName"],
                                    "namespace": job["metadata"]["namespace"]}]
    granted = {(group, resource, tuple(rule.get("resourceNames", ())), verb)
               for rule in role["rules"] for group in rule["apiGroups"] for resource in rule["resources"]
               for verb in rule["verbs"]}
    name = job["metadata"]["name"]
    assert granted == {
        (rescaler.GROUP, rescaler.PLURAL, (target,), "get"),
        (rescaler.GROUP, f"{rescaler.PLURAL}/status", (target,), "patch"),
        ("batch", "jobs", (name,), "get"),
        ("batch", "jobs", (name,), "patch"),
        ("", "pods", (), "list"),
        ("", "pods", (), "deletecollection"),
    }


def test_the_pods_get_a_projected_token_their_name_and_the_jobs_name(resources):
    pod = _one(resources, "Job")["spec"]["template"]["spec"]
    assert pod["automountServiceAccountToken"] is False  # only the explicit, short-lived token below
    (main,) = [c for c in pod["containers"] if c["name"] == "mutagg"]
    (mount,) = [m for m in main["volumeMounts"] if m["mountPath"] == Settings.kube_service_account_dir]
    assert mount["readOnly"] is True
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    sources = volume["projected"]["sources"]
    paths = {item["path"] for s in sources for item in s.get("configMap", s.get("downwardAPI", {})).get("items", [])}
    assert {s["serviceAccountToken"]["path"] for s in sources if "serviceAccountToken" in s} == {"token"}
    assert paths == {"ca.crt", "namespace"}
    assert all(s["serviceAccountToken"]["expirationSeconds"] <= 3600 for s in sources if "serviceAccountToken" in s)
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in main["env"]
           if "fieldRef" in e.get("valueFrom", {})}
    assert env["POD_NAME"] == "metadata.name"
    assert env["MUTAGG_SCALE_JOB"] == "metadata.labels['batch.kubernetes.io/job-name']"
    for container in pod["initContainers"]:  # only the dataflow talks to the API
        assert mount["name"] not in {m["name"] for m in container["volumeMounts"]}, container["name"]


@pytest.mark.parametrize(("kind", "path", "value"), [
    ("ScaledObject", ("spec", "minReplicas"), 1),  # KEDA's field is minReplicaCount
    ("ScaledObject", ("spec", "advanced", "horizontalPodAutoscalerConfig", "behavior", "scaleDown",
                      "stabilizationWindowSeconds"), 7200),
    ("DataflowScale", ("spec", "replicas"), "three"),
    ("DataflowScale", ("spec", "processes"), 3),
])
def test_the_custom_kinds_are_validated_strictly(resources, kind, path, value):
    broken = copy.deepcopy(_one(resources, kind))
    node = broken
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(pytest.fail.Exception, match=f"{kind}/mutagg invalid"):
        validate_custom_resource(broken, resources)
    assert validate_custom_resource(_one(resources, kind), resources)
