"""Schema changes and topics are deliberate: each overlay's migrate step (k8s/components/migrate)
is a one-shot Job with the owner's database secret that migrates, then creates and checks the
topics, with the overlay's own image, namespace and settings; the dataflow Job's pods hold only
the job role's secret and change neither the schema nor the topics."""

from __future__ import annotations

import pytest

from tests.k8s.conftest import MIGRATE_OVERLAYS, OVERLAYS
from tests.k8s.failure_policy import MIGRATE_INTENDED, action

OWNER_SECRET = "mutagg-database-owner"


def _jobs(resources: list[dict]) -> dict[str, dict]:
    return {r["metadata"]["name"]: r for r in resources if r["kind"] == "Job"}


def _settings(resources: list[dict]) -> dict[str, str]:
    (settings,) = [r["data"] for r in resources
                   if r["kind"] == "ConfigMap" and r["metadata"]["name"].startswith("mutagg-settings")]
    return settings


def _secret_names(pod: dict) -> set[str]:
    """Every Secret the pod can read: volumes, envFrom and env references."""
    names = {v["secret"]["secretName"] for v in pod["volumes"] if "secret" in v}
    for container in pod.get("initContainers", []) + pod["containers"]:
        names |= {s["secretRef"]["name"] for s in container.get("envFrom", []) if "secretRef" in s}
        names |= {e["valueFrom"]["secretKeyRef"]["name"] for e in container.get("env", [])
                  if "secretKeyRef" in e.get("valueFrom", {})}
    return names


def _mounted_secrets(pod: dict, container: dict) -> set[str]:
    volumes = {v["name"]: v for v in pod["volumes"]}
    return {volumes[m["name"]]["secret"]["secretName"] for m in container.get("volumeMounts", [])
            if "secret" in volumes[m["name"]]}


def _owner(name: str) -> bool:
    return name.startswith(OWNER_SECRET)  # generated secrets carry a hash suffix


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_dataflow_pod_holds_no_owner_credentials_and_changes_no_schema(rendered, overlay):
    resources = rendered[overlay]
    assert set(_jobs(resources)) == {"mutagg"}  # applying the overlay starts no migration
    pod = _jobs(resources)["mutagg"]["spec"]["template"]["spec"]
    assert not any(_owner(name) for name in _secret_names(pod)), _secret_names(pod)
    assert any(name.startswith("mutagg-database") for name in _secret_names(pod))  # the job role's
    assert not any(_owner(r["metadata"]["name"]) for r in resources if r["kind"] == "Secret")
    for container in pod.get("initContainers", []) + pod["containers"]:
        arguments = container.get("command", []) + container.get("args", [])
        assert "migrate" not in arguments and "topics" not in arguments, container["name"]
    assert _settings(resources)["MUTAGG_JOB_ROLE"]  # the role the migrate Job grants


@pytest.mark.parametrize("target", MIGRATE_OVERLAYS)
def test_the_migrate_job_runs_the_release_of_its_overlay_as_the_owner(rendered, target):
    overlay = MIGRATE_OVERLAYS[target]
    resources, deployed = rendered[target], rendered[overlay]
    assert set(_jobs(resources)) == {"mutagg-migrate"}  # not the dataflow: it starts after
    assert not [r for r in resources if r["kind"] == "CronJob"]
    job = _jobs(resources)["mutagg-migrate"]
    pod = job["spec"]["template"]["spec"]
    dataflow = _jobs(deployed)["mutagg"]
    assert job["metadata"]["namespace"] == dataflow["metadata"]["namespace"]
    images = {c["image"] for c in pod["initContainers"] + pod["containers"]}
    assert images == {dataflow["spec"]["template"]["spec"]["containers"][0]["image"]}
    assert _settings(resources) == _settings(deployed)
    steps = [(c["name"], c["args"]) for c in pod["initContainers"] + pod["containers"]]
    assert steps == [("migrate", ["migrate"]), ("topics", ["topics", "create"]), ("topics-check", ["topics", "check"])]
    assert pod["restartPolicy"] == "Never" and pod["automountServiceAccountToken"] is False

    containers = {c["name"]: c for c in pod["initContainers"] + pod["containers"]}
    migrate = containers.pop("migrate")
    (owner,) = _mounted_secrets(pod, migrate)
    assert _owner(owner)
    url_file = {e["name"]: e["value"] for e in migrate["env"]}["MUTAGG_DATABASE_URL_FILE"]
    (mount,) = [m for m in migrate["volumeMounts"] if url_file.startswith(m["mountPath"] + "/")]
    assert {v["name"]: v for v in pod["volumes"]}[mount["name"]]["secret"]["secretName"] == owner
    for name, container in containers.items():  # the topics steps get no database credentials at all
        assert not any(s.startswith("mutagg-database") for s in _mounted_secrets(pod, container)), name
        assert "MUTAGG_DATABASE_URL_FILE" not in {e["name"] for e in container.get("env", [])}, name
    if overlay == "prod":
        assert not [r for r in resources if r["kind"] == "Secret"]  # created out of band
    else:
        assert owner in {r["metadata"]["name"] for r in resources if r["kind"] == "Secret"}


@pytest.mark.parametrize("target", MIGRATE_OVERLAYS)
def test_the_migrate_job_fails_at_once_on_what_no_retry_fixes_and_retries_locks_a_few_times(rendered, target):
    spec = _jobs(rendered[target])["mutagg-migrate"]["spec"]
    for code, intended in MIGRATE_INTENDED.items():
        if intended is not None:
            for container in ("migrate", "topics"):
                assert action(spec, {}, {container: code}) == intended, f"{target}: {container} exit {code}"
            assert action(spec, {"topics-check": code}) == intended, f"{target}: topics-check exit {code}"
    assert 1 <= spec["backoffLimit"] <= 5  # a migration still blocked after a few tries needs a person
    assert spec["activeDeadlineSeconds"] > 0 and spec["ttlSecondsAfterFinished"] > 0


def test_production_topics_are_replicated_three_times_and_need_two_in_sync(rendered):
    settings = _settings(rendered["prod"])
    assert (int(settings["MUTAGG_TOPIC_REPLICATION"]), int(settings["MUTAGG_TOPIC_MIN_INSYNC_REPLICAS"])) == (3, 2)


@pytest.mark.parametrize("target", MIGRATE_OVERLAYS)
def test_the_migrate_pod_is_as_locked_down_as_the_dataflow(rendered, target):
    resources = rendered[target]
    pod = _jobs(resources)["mutagg-migrate"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    registry_dir = _settings(resources)["MUTAGG_REGISTRY"].rsplit("/", 1)[0]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for container in pod["initContainers"] + pod["containers"]:
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] is True and context["allowPrivilegeEscalation"] is False
        assert context["capabilities"]["drop"] == ["ALL"], container["name"]
        assert container["resources"]["requests"] and container["resources"]["limits"], container["name"]
        assert container["terminationMessagePolicy"] == "FallbackToLogsOnError", container["name"]
        mounts = {m["mountPath"]: volumes[m["name"]] for m in container["volumeMounts"]}
        assert "emptyDir" in mounts["/tmp"] and "configMap" in mounts[registry_dir], container["name"]
