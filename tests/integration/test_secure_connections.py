"""Secure connections, for real: the job against a Kafka broker that only speaks
SASL_SSL (SCRAM-SHA-512) and a PostgreSQL server that only accepts TLS with
scram-sha-256, both started by services/secure.sh with certificates made by openssl.
The job runs as a least-privileged role and principal; the broker authorizes every
request, with the ACLs of `mutagg topics acls`: an edge principal writes only the input
topic and reads only the status topic. Rejected credentials and untrusted certificates
fail fast with a typed error that names the cause."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import AclBindingFilter, AdminClient

from edge.client import EdgeConfig, EdgeNode
from edge.sender import producer_config
from mutagg import acls
from mutagg.demo import url_with_schema
from mutagg.producer import produce
from mutagg.security import AuthorizationError
from mutagg.settings import Settings, load_settings, with_overrides
from mutagg.topics import create_topics
from mutagg.workload import Workload
from sinks.acks import AckProducer
from sinks.outcomes import Outcome
from sources.kafka import list_partitions
from tests.integration.conftest import acks_agree_with_ledger, query
from tests.k8s.conftest import kustomize, render  # noqa: F401 (kustomize: a fixture)

REPO = Path(__file__).resolve().parents[2]
SECURE_SCRIPT = REPO / "services" / "secure.sh"
JOB_ROLE = "mutagg_job"
EDGE_NODE = "van-1"  # secure.sh's edge node: SCRAM user edge-van-1
pytestmark = pytest.mark.integration


def _script_env(role: str) -> dict[str, str]:
    """The `export` lines of `secure.sh env ROLE` as a dict."""
    lines = subprocess.run(
        ["bash", str(SECURE_SCRIPT), "env", role], check=True, capture_output=True, text=True, timeout=30
    ).stdout.splitlines()
    return dict(shlex.split(line)[1].split("=", 1) for line in lines if line.startswith("export "))


@pytest.fixture(scope="module")
def secure_env() -> Iterator[dict[str, dict[str, str]]]:
    """Start the secure broker and server (idempotent); the job's and the owner's variables.
    What this module started it stops again: a second broker left running costs a shared
    machine memory and CPU (and skews a benchmark run after the tests)."""
    status = subprocess.run(["bash", str(SECURE_SCRIPT), "status"], capture_output=True, timeout=60)
    was_running = status.returncode == 0
    subprocess.run(["bash", str(SECURE_SCRIPT), "start"], check=True, timeout=300)
    try:
        yield {role: _script_env(role) for role in ("job", "owner", "edge")}
    finally:
        if not was_running:
            subprocess.run(["bash", str(SECURE_SCRIPT), "stop"], check=True, timeout=300)


@pytest.fixture(scope="module")
def untrusted_ca(tmp_path_factory) -> Path:
    """A second CA, made here: it signed nothing the services present."""
    directory = tmp_path_factory.mktemp("untrusted-ca")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=untrusted test CA",
         "-keyout", str(directory / "ca.key"), "-out", str(directory / "ca.pem")],
        check=True, capture_output=True, timeout=60,
    )
    return directory / "ca.pem"


@dataclass
class Secure:
    settings: Settings  # the job's: SASL_SSL user mutagg-job, PostgreSQL role mutagg_job over TLS
    env: dict[str, str]  # the same as variables for a `mutagg` process
    owner_url: str
    admin: Settings  # the Kafka admin's (secure.sh env owner), with the job's database and topics
    edge: Settings  # edge node van-1's Kafka principal, the same topics


@pytest.fixture
def secure(secure_env, tmp_path) -> Iterator[Secure]:
    """A fresh schema, migrated by the owner with grants for the job's role, and fresh topics."""
    suffix = uuid.uuid4().hex[:10]
    schema = f"s_{suffix}"
    owner_url = url_with_schema(secure_env["owner"]["MUTAGG_DATABASE_URL"], schema)
    with psycopg.connect(owner_url, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    env = {
        **secure_env["job"],
        "MUTAGG_DATABASE_URL": url_with_schema(secure_env["job"]["MUTAGG_DATABASE_URL"], schema),
        **_topics(suffix),
        "MUTAGG_BATCH_SIZE": "200",
        "MUTAGG_WINDOW_MS": "50",
        "MUTAGG_SERVICE_DEADLINE_S": "30",
        "MUTAGG_AUDIT_URI": str(tmp_path / "audit"),
    }
    migrated = _mutagg(env, "migrate", "--grant-to", JOB_ROLE, MUTAGG_DATABASE_URL=owner_url)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    assert f"role {JOB_ROLE}: exactly the job's privileges" in migrated.stdout
    yield from _with_topics_and_acls(secure_env, env, owner_url)
    with psycopg.connect(owner_url, autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA "{schema}" CASCADE')


@pytest.fixture
def secure_kafka(secure_env) -> Iterator[Secure]:
    """Fresh topics and their ACLs only (no schema): for tests of the broker alone."""
    yield from _with_topics_and_acls(secure_env, {**secure_env["job"], **_topics(uuid.uuid4().hex[:10])}, "")


def _topics(suffix: str) -> dict[str, str]:
    return {"MUTAGG_TOPIC_MUTATIONS": f"s-{suffix}.mutations", "MUTAGG_TOPIC_DLQ": f"s-{suffix}.dlq",
            "MUTAGG_TOPIC_STATUS": f"s-{suffix}.status", "MUTAGG_TOPIC_CENTRAL_STATE": f"s-{suffix}.central-state",
            "MUTAGG_TOPIC_PARTITIONS": "2"}


def _with_topics_and_acls(secure_env, env: dict[str, str], owner_url: str) -> Iterator[Secure]:
    """What a platform team does: the topics and the ACLs, as the cluster's admin (not the job)."""
    settings = load_settings(environ=env)
    admin = load_settings(environ={**env, **_kafka_only(secure_env["owner"])})
    edge = load_settings(environ={**env, **_kafka_only(secure_env["edge"])})
    assert edge.kafka_sasl_username == acls.edge_principal(EDGE_NODE).removeprefix("User:")
    create_topics(admin)
    planned = acls.plan(settings, f"User:{settings.kafka_sasl_username}", [EDGE_NODE])
    applied = acls.apply(admin, planned)
    assert not applied.unplanned, applied.unplanned
    yield Secure(settings, env, owner_url, admin, edge)
    _remove(admin, planned)


def _remove(admin: Settings, planned: list[acls.Acl]) -> None:
    """Delete a test's bindings on its throwaway topics, which would pile up on the broker (the
    groups' bindings are the same for every test and for secure.sh's default topics: kept)."""
    client = AdminClient(admin.kafka_client_config())
    filters = [AclBindingFilter(b.restype, b.name, b.resource_pattern_type, b.principal, b.host, b.operation,
                                b.permission_type) for b in (a.binding() for a in planned if a.resource == "topic")]
    if not filters:
        return
    for future in client.delete_acls(filters, request_timeout=30).values():
        future.result(timeout=30)


def _kafka_only(env: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in env.items() if k.startswith("MUTAGG_KAFKA_")}


def _mutagg(env: dict[str, str], *args: str, **extra: str) -> subprocess.CompletedProcess:
    """`mutagg ARGS` with exactly these MUTAGG_* variables."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("MUTAGG_")}
    return subprocess.run(
        [sys.executable, "-m", "mutagg.cli", *args], env={**inherited, "MUTAGG_LOG_LEVEL": "WARNING", **env, **extra},
        capture_output=True, text=True, timeout=120,
    )


def _changed(url: str, **params: str | None) -> str:
    """`url` with these query parameters set (None: removed)."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in params]
    query += [(k, v) for k, v in params.items() if v is not None]
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))


def _fails_fast(env: dict[str, str], *args: str, **extra: str) -> str:
    """Run `mutagg ARGS`; it must exit 2 well before the service deadline. Returns stderr."""
    began = time.monotonic()
    result = _mutagg(env, *args, **extra)
    assert result.returncode == 2, (result.returncode, result.stderr[-3000:])
    assert time.monotonic() - began < 25, "a rejected credential or certificate must not wait for the deadline"
    return result.stderr


def _delivery_error(settings: Settings, topic: str) -> KafkaError | None:
    """Produce one record to `topic` as the edge sender would; the delivery report's error."""
    producer = Producer(producer_config(settings.kafka_client_config(), delivery_timeout_s=10.0))
    reports: list[KafkaError | None] = []
    producer.produce(topic, key=b"customer:X", value=b"{}", on_delivery=lambda error, _m: reports.append(error))
    assert producer.flush(20) == 0 and len(reports) == 1
    return reports[0]


def test_an_edge_principal_writes_only_the_input_and_reads_only_the_status_topic(secure_kafka):
    secure = secure_kafka
    topics = secure.settings
    assert _delivery_error(secure.edge, topics.topic_mutations) is None
    for topic in (topics.topic_status, topics.topic_dlq):  # no forged acks, no forged rejects
        error = _delivery_error(secure.edge, topic)
        assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, (topic, error)
        assert error.str() == "Broker: Topic authorization failed"

    def first_event(topic: str) -> KafkaError | None:
        """Read `topic` from its start with the edge ack listener's group: the first error, or None at its end."""
        consumer = Consumer({**secure.edge.kafka_client_config(), "group.id": f"mutagg-edge-{EDGE_NODE}",
                             "enable.auto.commit": False, "enable.partition.eof": True})
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        give_up_at = time.monotonic() + 20
        try:
            while time.monotonic() < give_up_at:
                for message in consumer.consume(10, 0.5):
                    error = message.error()
                    if error is not None:
                        return None if error.code() == KafkaError._PARTITION_EOF else error
        finally:
            consumer.close()
        raise AssertionError(f"no event from {topic} within 20 s")

    assert first_event(topics.topic_status) is None  # its acks: readable
    error = first_event(topics.topic_mutations)  # other nodes' mutations: not
    assert error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, error


def test_a_job_principal_without_its_acls_gets_an_authorization_error_not_an_outage(secure_kafka):
    """Denied is not unreachable: no retry until the deadline (exit 3, retried by the Job
    forever), but at once an error that `mutagg run` reports with exit code 2."""
    suffix = uuid.uuid4().hex[:10]
    names = {"topic_mutations": f"d-{suffix}.mutations", "topic_dlq": f"d-{suffix}.dlq",
             "topic_status": f"d-{suffix}.status"}
    create_topics(with_overrides(secure_kafka.admin, **names))  # no ACL on these for anyone
    job = with_overrides(secure_kafka.settings, **names)
    who = f"broker {job.kafka_bootstrap} denied user '{job.kafka_sasl_username}'"
    began = time.monotonic()
    with pytest.raises(AuthorizationError, match=re.escape(
            f"Kafka authorization failed: {who} access to topic '{job.topic_mutations}': "
            "Broker: Topic authorization failed (the ACLs of the job's principal: `mutagg topics acls`")):
        list_partitions(job.kafka_client_config(), job.topic_mutations, deadline_s=30)  # the source's first call
    with pytest.raises(AuthorizationError, match=re.escape(f"{who} creating topic 'd-{suffix}.") + r"(dlq|status)'"):
        create_topics(job, outputs_only=True)
    producer = AckProducer(job.kafka_client_config(), job.topic_status, job.topic_dlq, deadline_s=30)
    ack = Outcome(None, "decided", "m-1", "APPLIED", None, "customer", "C-1", 1, EDGE_NODE, (), "b", "")  # type: ignore[arg-type]
    with pytest.raises(AuthorizationError, match=re.escape(f"{who} access to topic '{job.topic_status}'")):
        producer.send([ack])
    assert time.monotonic() - began < 20


def test_postgres_refuses_connections_without_tls(secure):
    url = _changed(secure.settings.database_url, sslmode="disable")
    with pytest.raises(psycopg.OperationalError, match=r"no pg_hba\.conf entry.*no encryption"):
        psycopg.connect(url, connect_timeout=10)


def test_wrong_kafka_password_fails_with_an_authentication_error(secure, tmp_path):
    wrong = tmp_path / "kafka-password"
    wrong.write_text("not-the-password\n")
    stderr = _fails_fast(secure.env, "run", "--until-idle", MUTAGG_KAFKA_SASL_PASSWORD_FILE=str(wrong))
    assert "AuthenticationError: Kafka authentication failed" in stderr
    assert "invalid credentials with SASL mechanism SCRAM-SHA-512" in stderr
    assert "not-the-password" not in stderr


def test_wrong_postgres_password_fails_with_an_authentication_error(secure, tmp_path):
    # The URL as a mounted secret: user and password inside it, no passfile.
    url = secure.settings.database_url.replace(f"{JOB_ROLE}@", f"{JOB_ROLE}:not-the-password@")
    secret = tmp_path / "database-url"
    secret.write_text(_changed(url, passfile=None) + "\n")
    env = {k: v for k, v in secure.env.items() if k != "MUTAGG_DATABASE_URL"}
    stderr = _fails_fast(env, "run", "--until-idle", MUTAGG_DATABASE_URL_FILE=str(secret))
    assert "AuthenticationError: PostgreSQL authentication failed" in stderr
    assert f'password authentication failed for user "{JOB_ROLE}"' in stderr
    assert "not-the-password" not in stderr


def test_untrusted_kafka_certificate_fails_with_a_certificate_error(secure, untrusted_ca):
    stderr = _fails_fast(secure.env, "run", "--until-idle", MUTAGG_KAFKA_SSL_CA_FILE=str(untrusted_ca))
    assert "CertificateError: Kafka TLS certificate verification failed" in stderr
    assert "certificate verify failed" in stderr


def test_untrusted_postgres_certificate_fails_with_a_certificate_error(secure, untrusted_ca):
    untrusted_url = _changed(secure.settings.database_url, sslrootcert=str(untrusted_ca))
    for command in (("run", "--until-idle"), ("migrate",)):
        stderr = _fails_fast(secure.env, *command, MUTAGG_DATABASE_URL=untrusted_url)
        assert "CertificateError: PostgreSQL TLS certificate verification failed" in stderr
        assert "certificate verify failed" in stderr


RUN_CLUSTER = REPO / "k8s" / "base" / "scripts" / "run-cluster.sh"


def _pod(resources: list[dict], job: str) -> dict:
    (found,) = [r for r in resources if r["kind"] == "Job" and r["metadata"]["name"] == job]
    return found["spec"]["template"]["spec"]


def _containers(pod: dict) -> list[tuple[str, list[str], set[str]]]:
    """(name, mutagg arguments, Secrets mounted) of each container, in the order the pod runs them
    (the dev overlays' Secrets are generated: their names lose the hash suffix here)."""
    volumes = {v["name"]: v for v in pod["volumes"]}
    return [(c["name"], c.get("args", []), {volumes[m["name"]]["secret"]["secretName"].rsplit("-", 1)[0]
                                            for m in c["volumeMounts"] if "secret" in volumes[m["name"]]})
            for c in pod.get("initContainers", []) + pod["containers"]]


def test_the_k8s_start_sequence_runs_end_to_end_over_sasl_ssl_and_verified_tls(secure_env, kustomize, tmp_path):  # noqa: F811
    """What an upgrade does, step by step as the rendered dev overlays say: the migrate Job's
    containers (the owner's database secret for `migrate` only; the Kafka admin's for the topics
    steps, then the ACLs as a platform team applies them),
    then the dataflow pod's main container with the job role's secret; every connection
    SASL_SSL to Kafka and verified TLS to PostgreSQL."""
    migrate_pod = _pod(render(kustomize, "dev-migrate"), "mutagg-migrate")
    dataflow_resources = render(kustomize, "dev")
    dataflow_pod = _pod(dataflow_resources, "mutagg")
    (settings_map,) = [r["data"] for r in dataflow_resources if r["kind"] == "ConfigMap"
                       and r["metadata"]["name"].startswith("mutagg-settings")]
    assert settings_map["MUTAGG_JOB_ROLE"] == JOB_ROLE

    suffix = uuid.uuid4().hex[:10]
    schema = f"k_{suffix}"
    owner_url = url_with_schema(secure_env["owner"]["MUTAGG_DATABASE_URL"], schema)
    job_url = url_with_schema(secure_env["job"]["MUTAGG_DATABASE_URL"], schema)
    with psycopg.connect(owner_url, autocommit=True) as connection:
        connection.execute(f'CREATE SCHEMA "{schema}"')
    kafka = {k: v for k, v in secure_env["job"].items() if k != "MUTAGG_DATABASE_URL"}
    kafka.update({"MUTAGG_TOPIC_MUTATIONS": f"k-{suffix}.mutations", "MUTAGG_TOPIC_DLQ": f"k-{suffix}.dlq",
                  "MUTAGG_TOPIC_STATUS": f"k-{suffix}.status", "MUTAGG_TOPIC_PARTITIONS": "2",
                  "MUTAGG_JOB_ROLE": JOB_ROLE, "MUTAGG_SERVICE_DEADLINE_S": "30",
                  "MUTAGG_AUDIT_URI": str(tmp_path / "audit"), "MUTAGG_WINDOW_MS": "50"})
    databases = {"mutagg-database-owner": owner_url, "mutagg-database": job_url}
    kafka_secrets = {"mutagg-kafka": kafka, "mutagg-kafka-admin": {**kafka, **_kafka_only(secure_env["owner"])}}
    pod_env = {"JOB_COMPLETION_INDEX": "0", "MUTAGG_PROCESSES": "1", "MUTAGG_METRICS_PORT": "0",
               "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    cleanup = contextlib.ExitStack()
    try:
        # (The dataflow applied first exits 2, NotMigrated: test_exit_codes.py.) The job role cannot migrate:
        refused = _mutagg({**kafka, "MUTAGG_DATABASE_URL": job_url}, "migrate")
        assert refused.returncode == 2 and "run it as the role that owns the schema" in refused.stderr, \
            refused.stderr[-3000:]

        steps = _containers(migrate_pod)
        assert [name for name, _args, _secrets in steps] == ["migrate", "topics", "topics-check"]
        for name, args, secrets in steps:
            (database,) = (secrets & set(databases)) or {None}
            (kafka_secret,) = (secrets & set(kafka_secrets)) or {None}
            # the topics steps create topics: the admin's principal (the job's may not, with ACLs)
            assert (kafka_secret == "mutagg-kafka-admin") == name.startswith("topics"), (name, secrets)
            # a step without a database secret gets an address where no server listens
            env = {**kafka_secrets.get(kafka_secret, kafka),
                   "MUTAGG_DATABASE_URL": databases.get(database, "postgresql://none@127.0.0.1:1/none")}
            assert (name == "migrate") == (database == "mutagg-database-owner"), (name, secrets)
            result = _mutagg(env, *args)
            assert result.returncode == 0, f"{name}: {result.stderr[-3000:]}"
            if name == "migrate":
                assert f"role {JOB_ROLE}: exactly the job's privileges" in result.stdout

        settings = load_settings(environ={**kafka, "MUTAGG_DATABASE_URL": job_url})
        admin = load_settings(environ={**kafka_secrets["mutagg-kafka-admin"], "MUTAGG_DATABASE_URL": job_url})
        edge = load_settings(environ={**kafka, **_kafka_only(secure_env["edge"]), "MUTAGG_DATABASE_URL": job_url})
        planned = acls.plan(settings, f"User:{settings.kafka_sasl_username}", [EDGE_NODE])  # the platform team's step
        assert not acls.apply(admin, planned).unplanned
        cleanup.callback(_remove, admin, planned)
        produce(edge, Workload(seed=21).generate(300))  # the project's producer, as an edge principal
        config = EdgeConfig(node_id=EDGE_NODE, outbox_path=tmp_path / "van-1.sqlite3",
                            kafka_config=edge.kafka_client_config(), topic_mutations=edge.topic_mutations,
                            topic_status=edge.topic_status, delivery_timeout_s=10.0)
        node = cleanup.enter_context(EdgeNode(config))  # the edge client, as its own principal
        node.receive_acks(1.0)
        node.create("customer", "VAN-1", {"name": "Van one", "balance": "0.00"})
        assert node.send(deadline_s=20).delivered == 1
        names = [name for name, _args, _secrets in _containers(dataflow_pod)]
        assert names == ["recovery-init", "mutagg"]
        ((_name, _args, secrets),) = [c for c in _containers(dataflow_pod) if c[0] == "mutagg"]
        (database,) = secrets & set(databases)
        assert database == "mutagg-database"
        run = subprocess.run(["sh", str(RUN_CLUSTER), "--until-idle"], capture_output=True, text=True, timeout=180,
                             env={**{k: v for k, v in os.environ.items() if not k.startswith("MUTAGG_")},
                                  **kafka, **pod_env, "MUTAGG_DATABASE_URL": databases[database],
                                  "MUTAGG_LOG_LEVEL": "WARNING"})
        assert run.returncode == 0, run.stderr[-3000:]
        assert node.wait_until_decided(deadline_s=20)
        assert node.outbox.known_version("customer", "VAN-1") == 1
        ledger = dict(query(settings, "SELECT mutation_id, status FROM mutation_log"))
        assert len(ledger) > 250 and set(ledger.values()) <= {"APPLIED", "CONFLICT", "REJECTED"}
        assert "APPLIED" in ledger.values() and "REJECTED" in ledger.values()  # acks and DLQ written by the job
        assert query(settings, "SELECT count(*) FROM customer")[0][0] > 0
        acks_agree_with_ledger(admin)  # acks read back over SASL_SSL (a test reader: the admin)
        with psycopg.connect(settings.database_url) as connection:
            ssl, user = connection.execute(
                "SELECT ssl, current_user FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
        assert (ssl, user) == (True, JOB_ROLE)
    finally:
        cleanup.close()
        with psycopg.connect(owner_url, autocommit=True) as connection:
            connection.execute(f'DROP SCHEMA "{schema}" CASCADE')
