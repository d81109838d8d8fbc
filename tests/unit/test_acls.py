"""The Kafka ACL plan (mutagg/acls.py): who may do what on the job's topics, and that it
covers every consumer group the code names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from confluent_kafka import KafkaError
from hypothesis import given
from hypothesis import strategies as st

from mutagg import acls
from mutagg.cli import main
from mutagg.security import AuthorizationError, kafka_denied
from mutagg.settings import Settings
from schemas.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SETTINGS = Settings(topic_mutations="in", topic_status="status", topic_dlq="dlq", topic_central_state="state",
                    priority_lane="critical")
JOB = "User:mutagg-job"

node_ids = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789-_."), min_size=1, max_size=20)


def _allowed(plan: list[acls.Acl], who: str) -> set[tuple[str, str]]:
    return {(a.name, a.operation) for a in plan if a.principal == who and a.resource == "topic"}


@given(st.lists(node_ids, max_size=5, unique=True))
def test_edges_write_only_the_input_and_read_only_the_status_topic(nodes):
    plan = acls.plan(SETTINGS, JOB, nodes)
    for node in nodes:
        who = acls.edge_principal(node)
        # The priority lane's topic too (README "Priority lane"): an edge routes lane types to it.
        assert _allowed(plan, who) == {("in", "WRITE"), ("in.critical", "WRITE"), ("status", "READ"), ("state", "READ")}
        groups = {(a.name, a.pattern, a.operation) for a in plan if a.principal == who and a.resource == "group"}
        assert groups == {(f"mutagg-edge-{node}", "LITERAL", "DESCRIBE")}  # its own group only, no offsets
    writers = {a.principal for a in plan if a.operation in ("WRITE", "ALL") and a.name in ("status", "dlq", "state")}
    assert writers == {JOB}
    assert {a.principal for a in plan if a.name in ("in", "in.critical") and a.operation == "READ"} == {JOB}


def test_the_job_reads_the_input_and_is_the_only_writer_of_status_and_dlq():
    assert _allowed(acls.job_acls(SETTINGS, "mutagg-job"), JOB) == {
        ("in", "READ"), ("in", "DESCRIBE_CONFIGS"), ("in", "WRITE"),
        ("in.critical", "READ"), ("in.critical", "DESCRIBE_CONFIGS"), ("in.critical", "WRITE"),
        ("status", "WRITE"), ("status", "READ"), ("dlq", "WRITE"), ("dlq", "READ"), ("state", "WRITE"),
    }
    assert all(a.operation == "DESCRIBE" for a in acls.job_acls(SETTINGS) if a.resource == "group")


def test_an_edge_given_the_jobs_principal_is_refused():
    with pytest.raises(ConfigError, match="edge node 'van-3' must not use the job's principal User:mutagg-job"):
        acls.plan(SETTINGS, JOB, ["van-1", "van-2=User:other", "van-3=User:mutagg-job"])
    with pytest.raises(ConfigError, match="expected NODE or NODE=PRINCIPAL"):
        acls.plan(SETTINGS, JOB, ["=User:x"])
    with pytest.raises(ConfigError, match="empty or padded"):
        acls.principal(" User:x")


def test_an_edge_may_authenticate_with_any_principal():
    plan = acls.plan(SETTINGS, JOB, ["van-3=User:CN=van-3,O=fleet"])
    assert _allowed(plan, "User:CN=van-3,O=fleet") == {
        ("in", "WRITE"), ("in.critical", "WRITE"), ("status", "READ"), ("state", "READ")}
    assert ("mutagg-edge-van-3", "User:CN=van-3,O=fleet") in {(a.name, a.principal) for a in plan}


def test_the_printed_commands_are_kafka_acls_commands():
    plan = acls.plan(SETTINGS, JOB, ["van-1"])
    commands = [a.command("broker:9093") for a in plan]
    assert ("kafka-acls.sh --bootstrap-server broker:9093 --command-config admin.properties --add "
            "--allow-principal User:mutagg-job --operation DescribeConfigs --topic in") in commands
    assert ("kafka-acls.sh --bootstrap-server broker:9093 --command-config admin.properties --add "
            "--allow-principal User:mutagg-job --operation Describe --group mutagg-dlq- "
            "--resource-pattern-type prefixed") in commands
    assert len(commands) == len(set(commands)) == len(plan)


def test_topics_acls_prints_the_plan_for_the_configured_topics(capsys, monkeypatch):
    for name, value in {"MUTAGG_TOPIC_MUTATIONS": "fleet.in", "MUTAGG_TOPIC_STATUS": "fleet.status",
                        "MUTAGG_TOPIC_DLQ": "fleet.dlq", "MUTAGG_KAFKA_BOOTSTRAP": "kafka.internal:9093"}.items():
        monkeypatch.setenv(name, value)
    assert main(["topics", "acls", "--job-principal", "agg", "--edge", "van-1", "--edge", "shop-2=User:CN=shop-2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "# User:agg: run: reads the mutations" in lines
    commands = [line for line in lines if not line.startswith("#")]
    assert len(commands) == len(acls.plan(Settings(topic_mutations="fleet.in", topic_status="fleet.status",
                                                   topic_dlq="fleet.dlq"), "agg", ["van-1", "shop-2=User:CN=shop-2"]))
    assert ("kafka-acls.sh --bootstrap-server kafka.internal:9093 --command-config admin.properties --add "
            "--allow-principal User:CN=shop-2 --operation Write --topic fleet.in") in commands
    assert all(c.startswith("kafka-acls.sh --bootstrap-server kafka.internal:9093 ") for c in commands)


GROUP_ID = re.compile(r'"group\.id":\s*(f?)"([^"]*)"')


def _groups_in(*folders: str) -> set[tuple[str, bool]]:
    """Every consumer group id the code names: (name or f-string prefix, is it a prefix)."""
    found = set()
    for folder in folders:
        for path in (REPO / folder).rglob("*.py"):
            for fstring, name in GROUP_ID.findall(path.read_text()):
                found.add((name.split("{")[0], bool(fstring) and "{" in name))
    return found


def test_every_consumer_group_of_the_job_has_its_acl():
    groups = _groups_in("mutagg", "sources", "sinks", "dataflows", "operators")
    groups |= {(name, False) for name in re.findall(r'^_GROUP = "([^"]+)"', (REPO / "sources/kafka.py").read_text(),
                                                    re.M)}
    assert ("mutagg-unused", False) in groups and ("mutagg-dlq-", True) in groups  # the scan finds them
    planned = {(name, pattern == "PREFIXED") for name, pattern, _why in acls.JOB_GROUPS}
    assert groups == planned


def test_the_edge_listener_group_has_its_acl():
    assert _groups_in("edge") == {(acls.EDGE_GROUP_PREFIX, True)}


def test_a_denied_topic_or_group_is_an_authorization_error():
    denied = kafka_denied(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED), "b:9093", "mutagg-job", "in")
    assert isinstance(denied, AuthorizationError)
    assert str(denied).startswith(
        "Kafka authorization failed: broker b:9093 denied user 'mutagg-job' access to topic 'in': ")
    assert "mutagg topics acls" in str(denied)
    group = kafka_denied(KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED), "b:9093", None, "in", "g")
    assert "denied this client access to consumer group 'g'" in str(group)
    assert kafka_denied(KafkaError(KafkaError._TRANSPORT), "b:9093", None, "in") is None
