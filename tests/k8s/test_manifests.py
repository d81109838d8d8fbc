"""Every overlay renders and validates against the Kubernetes schemas, and the
rendered Job is what a team running such jobs expects: an Indexed Job forming one
Bytewax cluster behind a headless Service, non-root with a read-only root, bounded
resources, probes on the metrics endpoint, recovery partitions on a persistent
volume, the registry from a ConfigMap, and credentials only from Secrets."""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from mutagg.endpoint import LIVENESS_PATH, READINESS_PATH
from operators.strategies import CUSTOM_STRATEGIES
from schemas.registry import load_registry
from tests.k8s.conftest import MIGRATE_OVERLAYS, OVERLAYS, PRODUCTION, REPO
from tests.k8s.custom_resources import validate_custom_resource

# The oldest Kubernetes we support (batch.kubernetes.io/job-name label, podFailurePolicy)
# and the newest the schema package knows.
KUBERNETES_VERSIONS = ("1.32", kubernetes_validate.latest_version())
METRICS_PORT = 9464


def _one(resources: list[dict], kind: str, name: str | None = None) -> dict:
    found = [r for r in resources if r["kind"] == kind and (name is None or r["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _settings(resources: list[dict]) -> dict[str, str]:
    maps = [r for r in resources if r["kind"] == "ConfigMap" and r["metadata"]["name"].startswith("mutagg-settings")]
    assert len(maps) == 1
    return maps[0]["data"]


def _pod(resources: list[dict]) -> dict:
    return _one(resources, "Job")["spec"]["template"]["spec"]


def _containers(pod: dict) -> list[dict]:
    return pod.get("initContainers", []) + pod["containers"]


def _main(pod: dict) -> dict:
    (main,) = [c for c in pod["containers"] if c["name"] == "mutagg"]
    return main


def _volume_for(pod: dict, container: dict, path: str) -> tuple[dict, str]:
    """The volume that holds `path` in `container`, and the path inside the volume."""
    mounts = sorted(container.get("volumeMounts", []), key=lambda m: len(m["mountPath"]), reverse=True)
    for mount in mounts:
        root = mount["mountPath"].rstrip("/")
        if path == root or path.startswith(root + "/"):
            (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
            return volume, posixpath.relpath(path, root)
    raise AssertionError(f"{path} is on no volume of container {container['name']}")


@pytest.mark.parametrize("target", ["base", *OVERLAYS, *MIGRATE_OVERLAYS])
@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_resource_is_valid_for_kubernetes(rendered, target, version):
    kinds = set()
    for resource in rendered[target]:
        if validate_custom_resource(resource, rendered[target]):  # kinds of KEDA and of the job's own CRD
            kinds.add(resource["kind"])
            continue
        try:
            kubernetes_validate.validate(resource, version, strict=True)  # strict: unknown fields fail
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{target}: {resource['kind']}/{resource['metadata']['name']} invalid for "
                        f"Kubernetes {version}: {exc.message} at {list(exc.path)}")
        kinds.add(resource["kind"])
    assert {"Job", "Service", "PersistentVolumeClaim", "ConfigMap", "ServiceAccount"} <= kinds


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_job_is_an_indexed_job_forming_one_bytewax_cluster(rendered, overlay):
    resources = rendered[overlay]
    job = _one(resources, "Job")
    spec, pod, settings = job["spec"], _pod(resources), _settings(resources)
    assert job["apiVersion"] == "batch/v1"
    assert spec["completionMode"] == "Indexed"
    assert spec["parallelism"] == spec["completions"] == int(settings["MUTAGG_PROCESSES"]) >= 1
    assert pod["restartPolicy"] == "Never"
    assert {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]} in \
        spec["podFailurePolicy"]["rules"]

    service = _one(resources, "Service", settings["MUTAGG_CLUSTER_SERVICE"])
    assert service["spec"]["clusterIP"] == "None"          # headless: one DNS name per pod
    assert service["spec"]["publishNotReadyAddresses"] is True  # peers resolve before they are ready
    assert pod["subdomain"] == service["metadata"]["name"]
    labels = job["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    cluster_port = int(settings["MUTAGG_CLUSTER_PORT"])
    assert cluster_port in [p["port"] for p in service["spec"]["ports"]]
    assert {"name": "cluster", "containerPort": cluster_port} in _main(pod)["ports"]

    # Process id from the completion index, the job name for the pods' DNS names.
    env = {e["name"]: e for e in _main(pod)["env"]}
    assert env["JOB_COMPLETION_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"] == \
        "metadata.annotations['batch.kubernetes.io/job-completion-index']"
    assert env["JOB_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.labels['batch.kubernetes.io/job-name']"
    assert _main(pod)["command"] == ["sh", "/opt/mutagg/scripts/run-cluster.sh"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workers_divide_the_partitions_evenly(rendered, overlay):
    settings = _settings(rendered[overlay])
    workers = int(settings["MUTAGG_PROCESSES"]) * int(settings["MUTAGG_WORKERS"])
    for name in ("MUTAGG_TOPIC_PARTITIONS", "MUTAGG_RECOVERY_PARTITIONS"):
        assert int(settings[name]) % workers == 0, f"{name}={settings[name]} is not a multiple of {workers} workers"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_runs_as_non_root_on_a_read_only_root(rendered, overlay):
    pod = _pod(rendered[overlay])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    for container in _containers(pod):
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True, container["name"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["capabilities"]["drop"] == ["ALL"], container["name"]
        volume, inside = _volume_for(pod, container, "/tmp/x")
        assert "emptyDir" in volume and inside == "x", f"{container['name']}: /tmp must be a writable emptyDir"


_UNITS = {"m": 1e-3, "": 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30}


def _quantity(value) -> float:
    number, unit = re.fullmatch(r"([0-9.]+)(m|Ki|Mi|Gi|)", str(value)).groups()
    return float(number) * _UNITS[unit]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_requests_and_limits(rendered, overlay):
    for container in _containers(_pod(rendered[overlay])):
        resources = container["resources"]
        for resource in ("cpu", "memory"):
            request, limit = resources["requests"][resource], resources["limits"][resource]
            assert 0 < _quantity(request) <= _quantity(limit), f"{container['name']} {resource}"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_ask_the_dataflows_heartbeat(rendered, overlay):
    main = _main(_pod(rendered[overlay]))
    ports = {p["name"]: p["containerPort"] for p in main["ports"]}
    # Liveness from the worker loop (/healthz), readiness from it and the dependencies (/readyz):
    # never /metrics, which the HTTP thread serves while a worker hangs (mutagg/endpoint.py).
    paths = {"startupProbe": LIVENESS_PATH, "livenessProbe": LIVENESS_PATH, "readinessProbe": READINESS_PATH}
    for probe, path in paths.items():
        check = main[probe]["httpGet"]
        assert check["path"] == path, probe
        assert ports.get(check["port"], check["port"]) == METRICS_PORT, probe
    # Liveness must not kill a process that is still forming its cluster or loading state.
    startup = main["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_recovery_partitions_live_on_the_persistent_volume_and_are_created_once(rendered, overlay):
    resources = rendered[overlay]
    pod, settings, job = _pod(resources), _settings(resources), _one(resources, "Job")
    recovery_dir = settings["MUTAGG_RECOVERY_DIR"]
    init = {c["name"]: c for c in pod["initContainers"]}
    for container in (init["recovery-init"], _main(pod)):
        volume, _inside = _volume_for(pod, container, recovery_dir)
        claim = _one(resources, "PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    assert init["recovery-init"]["command"] == ["sh", "/opt/mutagg/scripts/recovery-init.sh"]
    assert int(settings["MUTAGG_RECOVERY_PARTITIONS"]) >= 1
    if job["spec"]["parallelism"] > 1:  # every process mounts the one claim
        assert "ReadWriteMany" in claim["spec"]["accessModes"]
    # Schema and topics are the migrate Job's (tests/k8s/test_migrate_job.py), not a pod start's.
    assert [c["name"] for c in pod["initContainers"]] == ["recovery-init"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_registry_comes_from_a_configmap_and_loads(rendered, overlay, tmp_path):
    resources = rendered[overlay]
    pod, settings = _pod(resources), _settings(resources)
    for container in _containers(pod):
        volume, key = _volume_for(pod, container, settings["MUTAGG_REGISTRY"])
        config_map = _one(resources, "ConfigMap", volume["configMap"]["name"])
        path = tmp_path / key
        path.write_text(config_map["data"][key])
        registry = load_registry(str(path), custom_strategies=CUSTOM_STRATEGIES)
        assert registry.get("customer") is not None


def test_the_base_registry_is_the_example_registry():
    assert (REPO / "k8s/base/registry.yaml").read_text() == (REPO / "schemas/example_registry.yaml").read_text()


_CREDENTIAL_NAME = re.compile(r"(?i)password|secret|token|sasl|access_key|credential")
_CREDENTIAL_VALUE = re.compile(r"://[^/\s:@]+:[^/\s@]+@")  # a URL with user:password@


def _inlined_credential(name: str, value: str) -> bool:
    return bool(_CREDENTIAL_NAME.search(name) or _CREDENTIAL_VALUE.search(value))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_credentials_come_only_from_mounted_secrets(rendered, overlay):
    resources = rendered[overlay]
    pod, settings = _pod(resources), _settings(resources)
    assert "MUTAGG_DATABASE_URL" not in settings
    for name, value in settings.items():
        assert not _inlined_credential(name, value), f"settings ConfigMap carries a credential: {name}"
    for container in _containers(pod):
        env = {e["name"]: e for e in container.get("env", [])}
        assert "MUTAGG_DATABASE_URL" not in env, container["name"]
        for item in env.values():
            if "value" in item:
                assert not _inlined_credential(item["name"], item["value"]), f"{container['name']}: {item}"
        for variable, key in (("MUTAGG_DATABASE_URL_FILE", "url"), ("MUTAGG_CONFIG", "settings.yaml")):
            volume, inside = _volume_for(pod, container, env[variable]["value"])
            assert "secret" in volume and inside == key, f"{container['name']}: {variable} is not a mounted secret"
    secrets = [r for r in resources if r["kind"] == "Secret"]
    if overlay in PRODUCTION:
        assert secrets == []  # production credentials are created out of band, never rendered from git
    else:
        referenced = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
        assert referenced == {s["metadata"]["name"] for s in secrets}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_one_image_runs_every_step_and_production_pins_it(rendered, overlay):
    images = {c["image"] for c in _containers(_pod(rendered[overlay]))}
    assert len(images) == 1
    (image,) = images
    name, _, tag = image.rpartition(":")
    assert name and tag and tag != "latest"
    if overlay in PRODUCTION:
        assert "/" in name  # from a registry, not a locally loaded image


def test_the_dev_overlay_renders_only_what_its_files_say():
    overlay = yaml.safe_load((REPO / "k8s/overlays/dev/kustomization.yaml").read_text())
    assert overlay["resources"][0] == "../../base"
    assert Path(REPO / "k8s/overlays/dev/kafka-settings.yaml").exists()


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_verify_runs_as_a_cronjob_with_the_jobs_image_settings_and_secrets(rendered, overlay):
    resources = rendered[overlay]
    cron = _one(resources, "CronJob", "mutagg-verify")
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][0] == "verify" and "--repair" in container["args"]
    assert {c["image"] for c in _containers(_pod(resources))} == {container["image"]}
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    context = container["securityContext"]
    assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
    settings = _settings(resources)
    assert [r["configMapRef"]["name"] for r in container["envFrom"]] == \
        [c["envFrom"][0]["configMapRef"]["name"] for c in _pod(resources)["containers"]]
    env = {e["name"]: e["value"] for e in container["env"]}
    for variable, key in (("MUTAGG_DATABASE_URL_FILE", "url"), ("MUTAGG_CONFIG", "settings.yaml")):
        volume, inside = _volume_for(pod, container, env[variable])
        assert "secret" in volume and inside == key
    volume, _key = _volume_for(pod, container, settings["MUTAGG_REGISTRY"])
    assert "configMap" in volume
