"""The real `mutagg run`, started as the pod starts it (k8s/base/scripts/run-cluster.sh), ends
each way the README's exit-code table lists, and the rendered Job's `podFailurePolicy` gives
each ending its intended action: weather (an outage, a SIGTERM) is retried without counting,
what only an operator can fix (a bad registry, rejected credentials, an unmigrated schema)
fails the Job at once. A stop after SIGTERM with the database blocking the batch in flight
ends at MUTAGG_STOP_DEADLINE_S, not at the kubelet's SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import yaml

from mutagg.ports import free_port
from mutagg.producer import produce
from mutagg.settings import Settings
from mutagg.workload import Workload
from tests.integration.conftest import REPO, drop_schema, new_schema, settings_env
from tests.k8s.conftest import kustomize, render  # noqa: F401 (kustomize: a fixture)
from tests.k8s.failure_policy import INTENDED, action

RUN_CLUSTER = REPO / "k8s" / "base" / "scripts" / "run-cluster.sh"
DEADLINE_S = "2"  # MUTAGG_SERVICE_DEADLINE_S: an outage this long is past it


@pytest.fixture(scope="module")
def job_specs(kustomize):  # noqa: F811
    """The Job spec of every overlay, as rendered."""
    specs = {}
    for target in ("base", "dev", "prod"):
        (job,) = [r for r in render(kustomize, target) if r["kind"] == "Job"]
        specs[target] = job["spec"]
    return specs


def pod_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of the pod's main container, with this test's services."""
    env = settings_env(settings, JOB_COMPLETION_INDEX="0", MUTAGG_PROCESSES="1", MUTAGG_SERVICE_DEADLINE_S=DEADLINE_S)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # `mutagg` as in the image
    env.update(extra)
    return env


def run_pod(env: dict[str, str]) -> tuple[int, str, float]:
    started = time.monotonic()
    result = subprocess.run(["sh", str(RUN_CLUSTER)], env=env, capture_output=True, text=True, timeout=60)
    return result.returncode, result.stderr, time.monotonic() - started


def termination_message(stderr: str) -> str:
    """What `terminationMessagePolicy: FallbackToLogsOnError` shows: the log's last 80 lines, at most 2 KiB."""
    return "\n".join(stderr.splitlines()[-80:]).encode()[-2048:].decode(errors="replace")


def lands_as_intended(job_specs: dict, code: int, intended: str) -> None:
    assert INTENDED[code] == intended, f"exit {code} is documented as {INTENDED[code]}"
    for target, spec in job_specs.items():
        assert action(spec, {"mutagg": code}) == intended, f"{target}: exit {code}"


def test_postgresql_unreachable_is_weather(settings, job_specs):
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/mutagg"
    code, stderr, seconds = run_pod(pod_env(settings, MUTAGG_DATABASE_URL=url))
    assert code == 3 and "PostgreSQL unreachable" in stderr, stderr[-3000:]
    assert seconds < 20, f"gave up after {seconds:.1f}s, not at the {DEADLINE_S}s deadline"
    lands_as_intended(job_specs, code, "Ignore")


def test_kafka_unreachable_is_weather(settings, job_specs):
    code, stderr, seconds = run_pod(pod_env(settings, MUTAGG_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}"))
    assert code == 3 and "Kafka unreachable" in stderr, stderr[-3000:]
    assert seconds < 20, f"gave up after {seconds:.1f}s, not at the {DEADLINE_S}s deadline"
    lands_as_intended(job_specs, code, "Ignore")


def test_a_bad_registry_fails_the_job_naming_it(settings, job_specs, tmp_path):
    registry = tmp_path / "registry.yaml"
    registry.write_text("entities:\n  customer: {table: [unclosed\n")
    code, stderr, _ = run_pod(pod_env(settings, MUTAGG_REGISTRY=str(registry)))
    assert code == 2 and "mutagg: RegistryError: " in termination_message(stderr), stderr[-3000:]
    lands_as_intended(job_specs, code, "FailJob")


def test_rejected_credentials_fail_the_job_naming_them(settings, job_specs):
    # The local server trusts every role it has: a role it does not have is what it rejects.
    url = settings.database_url.replace("postgres@", f"nobody_{uuid.uuid4().hex[:6]}@", 1)
    assert url != settings.database_url
    code, stderr, _ = run_pod(pod_env(settings, MUTAGG_DATABASE_URL=url))
    assert code == 2 and "mutagg: AuthenticationError: " in termination_message(stderr), stderr[-3000:]
    lands_as_intended(job_specs, code, "FailJob")


def test_an_unmigrated_schema_fails_the_job_naming_it(settings, base_settings, job_specs):
    schema = f"u_{uuid.uuid4().hex[:10]}"
    unmigrated = new_schema(settings, schema, migrated=False)
    try:
        code, stderr, _ = run_pod(pod_env(unmigrated))
    finally:
        drop_schema(base_settings, schema)
    assert code == 2 and "mutagg: NotMigrated: " in termination_message(stderr), stderr[-3000:]
    lands_as_intended(job_specs, code, "FailJob")


def test_a_schema_older_than_the_release_or_the_registry_fails_the_job_naming_migrate(settings, job_specs, tmp_path):
    """The dataflow holds the job role's credentials only: it cannot migrate, so it says what
    is missing in one line naming `mutagg migrate` and fails the Job (the migrate Job's turn)."""
    with psycopg.connect(settings.database_url, autocommit=True) as connection:
        connection.execute("UPDATE mutagg_schema SET version = version - 1")
        try:
            code, stderr, _ = run_pod(pod_env(settings))
        finally:
            connection.execute("UPDATE mutagg_schema SET version = version + 1")
    (line,) = [line for line in stderr.splitlines() if line.startswith("mutagg: ")]
    assert code == 2 and line.startswith("mutagg: NotMigrated: the database is migrated to version "), stderr[-3000:]
    assert "`mutagg migrate`" in line and line in termination_message(stderr)
    lands_as_intended(job_specs, code, "FailJob")

    registry = yaml.safe_load(Path(settings.registry).read_text())  # a registry change not migrated yet
    registry["entity_types"]["customer"]["attributes"]["loyalty_tier"] = {"type": "string"}
    registry["entity_types"]["invoice"] = {**registry["entity_types"]["customer"], "table": "invoice"}
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump(registry))
    code, stderr, _ = run_pod(pod_env(settings, MUTAGG_REGISTRY=str(path)))
    (line,) = [line for line in stderr.splitlines() if line.startswith("mutagg: ")]
    assert code == 2 and line.startswith("mutagg: NotMigrated: the registry is not migrated in schema "), stderr[-3000:]
    assert "table customer lacks columns loyalty_tier" in line and "no table invoice (entity type invoice)" in line
    assert "`mutagg migrate`" in line
    lands_as_intended(job_specs, code, "FailJob")


def test_sigterm_with_the_database_blocking_the_batch_ends_at_the_stop_deadline(settings, job_specs):
    produce(settings, Workload(seed=3).generate(200))
    with psycopg.connect(settings.database_url) as blocker:
        # another session holds what every batch writes: the batch in flight waits on it
        blocker.execute("LOCK TABLE mutation_log IN SHARE MODE")
        pod = subprocess.Popen(["sh", str(RUN_CLUSTER)], env=pod_env(settings, MUTAGG_STOP_DEADLINE_S="2"),
                               stderr=subprocess.PIPE, text=True)
        try:
            waiting = _wait_for_lock_wait(blocker, timeout_s=30)
            assert waiting, "the batch never waited on the lock"
            stopped = time.monotonic()
            pod.send_signal(signal.SIGTERM)
            code = pod.wait(timeout=30)
            seconds = time.monotonic() - stopped
            print(f"SIGTERM -> exit {code} after {seconds:.2f}s (stop deadline 2 s, lock held throughout)")
        finally:
            if pod.poll() is None:
                pod.kill()
            stderr = pod.stderr.read()
            pod.stderr.close()
    assert code == 143 and "did not finish within the stop deadline" in stderr, stderr[-3000:]
    assert 2 <= seconds < 6, seconds
    lands_as_intended(job_specs, code, "Ignore")


def _wait_for_lock_wait(blocker: psycopg.Connection, timeout_s: float) -> bool:
    (table,) = blocker.execute("SELECT 'mutation_log'::regclass::oid").fetchone()
    with psycopg.connect(blocker.info.dsn, autocommit=True) as observer:
        give_up = time.monotonic() + timeout_s
        while time.monotonic() < give_up:
            (count,) = observer.execute(
                "SELECT count(*) FROM pg_locks WHERE relation = %s AND NOT granted", (table,)).fetchone()
            if count:
                return True
            time.sleep(0.1)
    return False
