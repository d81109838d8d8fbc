"""The topics `mutagg topics create` makes (every config set explicitly) and what
`mutagg topics check` calls drift: missing, fewer partitions or replicas, any config differing."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mutagg.settings import Settings
from mutagg.topics import TopicSpec, TopicState, drift, topic_specs

SETTINGS = Settings(topic_mutations="in", topic_dlq="dlq", topic_status="status", topic_partitions=4,
                    priority_lane="critical")


def test_every_topic_gets_each_config_the_job_relies_on():
    specs = {spec.role: spec for spec in topic_specs(Settings(**{
        **vars(SETTINGS), "topic_replication": 3, "topic_min_insync_replicas": 2}))}
    assert specs["input"].config["message.timestamp.type"] == "LogAppendTime"
    assert "message.timestamp.type" not in specs["status"].config  # the job stamps its acks itself
    state = specs.pop("central state")
    # The priority lane is an input like the other (README "Priority lane"), named after it by default.
    lane = specs["input, priority lane"]
    assert (lane.name, lane.partitions, lane.config) == ("in.critical", 4, specs["input"].config)
    assert {role: spec.config["retention.ms"] for role, spec in specs.items()} == {
        "input": str(SETTINGS.topic_retention_input_ms), "input, priority lane": str(SETTINGS.topic_retention_input_ms),
        "DLQ": str(SETTINGS.topic_retention_dlq_ms), "status": str(SETTINGS.topic_retention_status_ms)}
    for spec in specs.values():
        assert spec.replication == 3 and spec.config["min.insync.replicas"] == "2"
        assert spec.config["cleanup.policy"] == "delete" and spec.config["unclean.leader.election.enable"] == "false"
    # The edges' view of the job: only the latest record of each job process matters (compacted).
    assert (state.name, state.partitions, state.replication) == (SETTINGS.topic_central_state, 1, 3)
    assert state.config["cleanup.policy"] == "compact" and "retention.ms" not in state.config
    assert state.config["min.insync.replicas"] == "2" and state.config["unclean.leader.election.enable"] == "false"
    assert (specs["input"].partitions, specs["DLQ"].partitions, specs["status"].partitions) == (4, 1, 4)
    # Replication left to the broker (0): not set, not checked.
    assert all(s.replication == 0 and "min.insync.replicas" not in s.config for s in topic_specs(SETTINGS))
    # No lane, no lane topic.
    assert "in.critical" not in {s.name for s in topic_specs(Settings(**{**vars(SETTINGS), "priority_lane": ""}))}


def test_an_input_stamped_by_its_producers_is_never_deleted_by_age():
    """CreateTime (tests that set every Kafka timestamp): retention would count from those
    timestamps, and a log stamped a week ago would be gone before the job read it."""
    (created,) = [s for s in topic_specs(SETTINGS, timestamp_type="CreateTime") if s.role == "input"]
    assert created.config["message.timestamp.type"] == "CreateTime" and created.config["retention.ms"] == "-1"
    (appended,) = [s for s in topic_specs(SETTINGS) if s.role == "input"]
    assert appended.config["retention.ms"] == str(SETTINGS.topic_retention_input_ms) != "-1"


SPEC = TopicSpec("in", "input", 4, 3, {"retention.ms": "1000", "cleanup.policy": "delete"})


def test_a_topic_as_created_has_no_drift_and_each_difference_is_one_line_naming_its_fix():
    assert drift(SPEC, TopicState(4, 3, {**SPEC.config, "segment.ms": "5"})) == []  # other configs: not ours
    assert drift(SPEC, TopicState(12, 5, SPEC.config)) == []  # more partitions or replicas: fine
    assert drift(SPEC, None) == ["topic in (input): missing (create it with `mutagg topics create`)"]
    lines = drift(SPEC, TopicState(2, 1, {"retention.ms": "5", "cleanup.policy": "compact"}))
    assert [line.split(":")[1].strip() for line in lines] == [
        "2 partitions, expected at least 4 (kafka-topics.sh --alter --topic in --partitions 4; adding partitions "
        "re-maps entities", "replication factor 1, expected 3 (kafka-reassign-partitions.sh)",
        "retention.ms is 5, expected 1000 (kafka-configs.sh --alter --entity-type topics --entity-name in "
        "--add-config retention.ms=1000)",
        "cleanup.policy is compact, expected delete (kafka-configs.sh --alter --entity-type topics --entity-name in "
        "--add-config cleanup.policy=delete)"]
    assert drift(SPEC, TopicState(4, 3, {"retention.ms": "1000"})) == [
        "topic in (input): cleanup.policy is unset, expected delete (kafka-configs.sh --alter --entity-type topics "
        "--entity-name in --add-config cleanup.policy=delete)"]


@given(partitions=st.integers(1, 64), replication=st.integers(1, 5),
       config=st.dictionaries(st.sampled_from(["retention.ms", "cleanup.policy", "x"]),
                              st.sampled_from(["1000", "delete", "compact"])))
def test_drift_is_empty_exactly_when_the_topic_meets_the_spec(partitions, replication, config):
    found = TopicState(partitions, replication, config)
    meets = (partitions >= SPEC.partitions and replication >= SPEC.replication
             and all(config.get(k) == v for k, v in SPEC.config.items()))
    lines = drift(SPEC, found)
    assert (lines == []) == meets
    assert all(line.startswith("topic in (input): ") for line in lines)
