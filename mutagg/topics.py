"""The job's Kafka topics (input, DLQ, status, central state): `mutagg topics create` makes the missing ones
with every config the job relies on set explicitly (`topic_specs`), `mutagg topics check`
reports where existing ones differ from that (`drift`)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

from mutagg.security import AuthorizationError
from mutagg.settings import Settings
from schemas.errors import ServiceUnavailable
from sources.kafka import list_partitions

log = logging.getLogger(__name__)

TIMESTAMP_TYPE = "message.timestamp.type"
LOG_APPEND_TIME = "LogAppendTime"
"""The input topic's timestamps are the broker's: an edge cannot forge them (DESIGN section 4, Time)."""
MIN_INSYNC_REPLICAS = "min.insync.replicas"
RETENTION_MS = "retention.ms"
CLEANUP_POLICY = "cleanup.policy"
UNCLEAN_LEADER_ELECTION = "unclean.leader.election.enable"
SEGMENT_MS = "segment.ms"
LANE_ROLE = "input, priority lane"
CENTRAL_STATE_SEGMENT_MS = str(3600 * 1000)
"""The central-state topic rolls a segment an hour, so compaction leaves a node that comes back
about an hour of records to read, not a week's (the active segment is never compacted)."""


@dataclass(frozen=True)
class TopicSpec:
    """One topic as the job needs it: at least `partitions` partitions, `replication` replicas
    (0: the broker's default, not checked), and exactly these configs."""

    name: str
    role: str  # input, DLQ, status, central state
    partitions: int
    replication: int
    config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class TopicState:
    """One topic as the broker describes it (`replication`: the fewest replicas of any partition)."""

    partitions: int
    replication: int
    config: dict[str, str]


def topic_specs(settings: Settings, partitions: int | None = None, timestamp_type: str = LOG_APPEND_TIME
                ) -> list[TopicSpec]:
    """The topics with every config the job relies on:

    - input: `message.timestamp.type` (the broker's clock orders mutations, DESIGN section 4);
    - all: `retention.ms` from the settings (how long unread input, an offline van's acks and
      a rejected message survive), `cleanup.policy=delete` (compaction would keep one record
      per key: mutations of one entity would vanish unread), no unclean leader election
      (an out-of-sync replica as leader loses acknowledged writes), and `min.insync.replicas`
      with the replication factor from the settings (3 and 2 in production);
    - priority lane (when `priority_lane` is not empty): as the input;
    - central state: one partition, `cleanup.policy=compact` (only the latest record per job
      process matters; README "Central state") and an hourly segment.
    """
    common = {CLEANUP_POLICY: "delete", UNCLEAN_LEADER_ELECTION: "false"}
    if settings.topic_min_insync_replicas:
        common[MIN_INSYNC_REPLICAS] = str(settings.topic_min_insync_replicas)
    count = partitions or settings.topic_partitions
    replication = settings.topic_replication
    # With CreateTime (tests that set every Kafka timestamp) retention by age would count from
    # those timestamps: a log stamped days ago would be deleted before the job read it.
    input_retention = settings.topic_retention_input_ms if timestamp_type == LOG_APPEND_TIME else -1
    input_config = {**common, RETENTION_MS: str(input_retention), TIMESTAMP_TYPE: timestamp_type}
    # The priority lane (README "Priority lane") is an input like the other: the same configs.
    lane = [TopicSpec(settings.lane_topic, LANE_ROLE, count, replication, dict(input_config))] \
        if settings.lane_on else []
    return [
        TopicSpec(settings.topic_mutations, "input", count, replication, dict(input_config)),
        *lane,
        TopicSpec(settings.topic_dlq, "DLQ", 1, replication, {
            **common, RETENTION_MS: str(settings.topic_retention_dlq_ms)}),
        TopicSpec(settings.topic_status, "status", count, replication, {
            **common, RETENTION_MS: str(settings.topic_retention_status_ms)}),
        TopicSpec(settings.topic_central_state, "central state", 1, replication, {
            **common, CLEANUP_POLICY: "compact", SEGMENT_MS: CENTRAL_STATE_SEGMENT_MS}),
    ]


def drift(spec: TopicSpec, found: TopicState | None) -> list[str]:
    """One line per way the topic differs from `spec`, each naming the fix; [] if it matches.
    More partitions or replicas than asked for are not drift."""
    where = f"topic {spec.name} ({spec.role})"
    if found is None:
        return [f"{where}: missing (create it with `mutagg topics create`)"]
    lines = []
    if found.partitions < spec.partitions:
        lines.append(f"{where}: {found.partitions} partitions, expected at least {spec.partitions} "
                     f"(kafka-topics.sh --alter --topic {spec.name} --partitions {spec.partitions}; "
                     "adding partitions re-maps entities: README \"Scale\")")
    if spec.replication and found.replication < spec.replication:
        lines.append(f"{where}: replication factor {found.replication}, expected {spec.replication} "
                     "(kafka-reassign-partitions.sh)")
    for key, wanted in spec.config.items():
        value = found.config.get(key)
        if value != wanted:
            lines.append(f"{where}: {key} is {value if value is not None else 'unset'}, expected {wanted} "
                         f"(kafka-configs.sh --alter --entity-type topics --entity-name {spec.name} "
                         f"--add-config {key}={wanted})")
    return lines


def ensure_output_topics(settings: Settings) -> list[str]:
    """Before a run: the DLQ, status and central-state topics must exist, or no ack could ever
    be delivered."""
    try:
        return create_topics(settings, outputs_only=True)
    except (KafkaException, AuthorizationError) as exc:  # e.g. no permission to create: the producer says more
        log.warning("could not create output topics", extra={"error": str(exc)})
        return []


def create_topics(
    settings: Settings,
    partitions: int | None = None,
    outputs_only: bool = False,
    timestamp_type: str = LOG_APPEND_TIME,
) -> list[str]:
    """Create missing topics as `topic_specs` describes them; return the names created.

    The input topic's `message.timestamp.type` is `timestamp_type`: `LogAppendTime` in
    production; `CreateTime` only for tests that produce explicit Kafka timestamps.
    An existing topic is left as it is (`mutagg topics check` reports how it differs).
    """
    if timestamp_type not in (LOG_APPEND_TIME, "CreateTime"):
        raise ValueError(f"timestamp_type must be LogAppendTime or CreateTime, not {timestamp_type!r}")
    admin = AdminClient(settings.kafka_client_config())
    specs = topic_specs(settings, partitions, timestamp_type)
    if outputs_only:
        specs = [spec for spec in specs if spec.role not in ("input", LANE_ROLE)]
    try:
        existing = set(admin.list_topics(timeout=min(30.0, settings.service_deadline_s)).topics)
    except KafkaException as exc:
        raise ServiceUnavailable(f"Kafka unreachable at {settings.kafka_bootstrap}: {exc}") from exc
    missing = [NewTopic(spec.name, spec.partitions, spec.replication or -1, config=spec.config)
               for spec in specs if spec.name not in existing]
    if not missing:
        return []
    created = []
    for name, future in admin.create_topics(missing, operation_timeout=30).items():
        try:
            future.result(timeout=60)
            created.append(name)
        except KafkaException as exc:
            code = exc.args[0].code()
            if code in (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED):
                raise AuthorizationError(
                    f"broker {settings.kafka_bootstrap} denied {_who(settings)} creating topic {name!r}: "
                    f"{exc.args[0].str()} (topics are created by the cluster's admin: `mutagg topics create` "
                    "with the admin's credentials, before the job starts; README \"Kafka ACLs\")"
                ) from exc
            if code != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
    for name in created:  # wait until the metadata shows them
        list_partitions(settings.kafka_client_config(), name, settings.service_deadline_s, must_exist=False)
    return created


def check_topics(settings: Settings, partitions: int | None = None) -> list[str]:
    """Every way the four topics differ from `topic_specs` (`drift`), read from the broker."""
    admin = AdminClient(settings.kafka_client_config())
    timeout = min(30.0, settings.service_deadline_s)
    try:
        metadata = admin.list_topics(timeout=timeout).topics
    except KafkaException as exc:
        raise ServiceUnavailable(f"Kafka unreachable at {settings.kafka_bootstrap}: {exc}") from exc
    lines = []
    for spec in topic_specs(settings, partitions):
        described = metadata.get(spec.name)
        found = None
        if described is not None and described.error is None:
            replicas = [len(p.replicas) for p in described.partitions.values()]
            found = TopicState(len(described.partitions), min(replicas, default=0), _configs(admin, spec, timeout))
        lines += drift(spec, found)
    return lines


def _configs(admin: AdminClient, spec: TopicSpec, timeout: float) -> dict[str, str]:
    resource = ConfigResource(ResourceType.TOPIC, spec.name)
    try:
        entries = admin.describe_configs([resource], request_timeout=timeout)[resource].result(timeout=timeout)
    except KafkaException as exc:
        if exc.args[0].code() in (KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED):
            raise AuthorizationError(f"the Kafka user may not read the configs of topic {spec.name} "
                                     f"(DescribeConfigs ACL; README \"Kafka ACLs\"): {exc}") from exc
        raise ServiceUnavailable(f"reading the configs of topic {spec.name} failed: {exc}") from exc
    return {key: entry.value for key, entry in entries.items()}


def _who(settings: Settings) -> str:
    return f"user {settings.kafka_sasl_username!r}" if settings.kafka_sasl_username else "this client"


def _input_config(settings: Settings, key: str) -> str:
    """One config of the input topic as the broker reports it (raises as `describe_configs` does)."""
    admin = AdminClient(settings.kafka_client_config())
    resource = ConfigResource(ResourceType.TOPIC, settings.topic_mutations)
    timeout = min(30.0, settings.service_deadline_s)
    future = admin.describe_configs([resource], request_timeout=timeout)[resource]
    return future.result(timeout=timeout)[key].value


def input_timestamp_type(settings: Settings) -> str | None:
    """The input topic's `message.timestamp.type`, or None (logged) when it cannot be read."""
    try:
        return _input_config(settings, TIMESTAMP_TYPE)
    except (KafkaException, KeyError, TimeoutError) as exc:  # e.g. no DescribeConfigs permission
        log.warning(
            "could not read the input topic's message.timestamp.type; make sure it is LogAppendTime",
            extra={"topic": settings.topic_mutations, "error": str(exc)[:300]},
        )
        return None


def input_retention_s(settings: Settings) -> float | None:
    """The input topic's `retention.ms` in seconds (inf for -1, kept forever), or None (logged)
    when it cannot be read: how long the job may lag before unread input is deleted."""
    try:
        retention_ms = int(_input_config(settings, RETENTION_MS))
    except (KafkaException, KeyError, TimeoutError, ValueError) as exc:
        log.warning("could not read the input topic's retention.ms",
                    extra={"topic": settings.topic_mutations, "error": str(exc)[:300]})
        return None
    return math.inf if retention_ms < 0 else retention_ms / 1000


def warn_unless_log_append_time(settings: Settings) -> str | None:
    """One warning when the input topic lets producers set the Kafka timestamp; return its type."""
    kind = input_timestamp_type(settings)
    if kind is not None and kind != LOG_APPEND_TIME:
        log.warning(
            f"input topic {settings.topic_mutations} has {TIMESTAMP_TYPE}={kind}: edge nodes set the Kafka "
            "timestamps that order last_writer_wins, age and dependency timeouts, so a wrong edge clock can "
            f"win every comparison; set it to {LOG_APPEND_TIME} (kafka-configs.sh --alter --entity-type topics "
            f"--entity-name {settings.topic_mutations} --add-config {TIMESTAMP_TYPE}={LOG_APPEND_TIME})",
            extra={"topic": settings.topic_mutations, "timestamp_type": kind, "expected": LOG_APPEND_TIME},
        )
    return kind
