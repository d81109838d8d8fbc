"""Create the job's Kafka topics (input, DLQ, status); idempotent."""

from __future__ import annotations

import logging

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


def ensure_output_topics(settings: Settings) -> list[str]:
    """Before a run: the DLQ and status topics must exist, or no ack could ever be delivered."""
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
    """Create missing topics; return the names created.

    Replication factor and `min.insync.replicas` are `topic_replication` and
    `topic_min_insync_replicas`, or the broker's defaults where those are 0.

    A new input topic gets `message.timestamp.type=timestamp_type`: `LogAppendTime` in
    production; `CreateTime` only for tests that produce explicit Kafka timestamps.
    An existing topic is left as it is (`input_timestamp_type` reads it).
    """
    if timestamp_type not in (LOG_APPEND_TIME, "CreateTime"):
        raise ValueError(f"timestamp_type must be LogAppendTime or CreateTime, not {timestamp_type!r}")
    admin = AdminClient(settings.kafka_client_config())
    wanted = {
        settings.topic_mutations: partitions or settings.topic_partitions,
        settings.topic_dlq: 1,
        settings.topic_status: partitions or settings.topic_partitions,
    }
    if outputs_only:
        del wanted[settings.topic_mutations]
    try:
        existing = set(admin.list_topics(timeout=min(30.0, settings.service_deadline_s)).topics)
    except KafkaException as exc:
        raise ServiceUnavailable(f"Kafka unreachable at {settings.kafka_bootstrap}: {exc}") from exc
    min_insync = settings.topic_min_insync_replicas
    replicated = {MIN_INSYNC_REPLICAS: str(min_insync)} if min_insync else {}
    missing = [
        NewTopic(name, count, settings.topic_replication or -1, config={
            **replicated, **({TIMESTAMP_TYPE: timestamp_type} if name == settings.topic_mutations else {}),
        })
        for name, count in wanted.items() if name not in existing
    ]
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


def _who(settings: Settings) -> str:
    return f"user {settings.kafka_sasl_username!r}" if settings.kafka_sasl_username else "this client"


def input_timestamp_type(settings: Settings) -> str | None:
    """The input topic's `message.timestamp.type`, or None (logged) when it cannot be read."""
    admin = AdminClient(settings.kafka_client_config())
    resource = ConfigResource(ResourceType.TOPIC, settings.topic_mutations)
    try:
        future = admin.describe_configs([resource], request_timeout=min(30.0, settings.service_deadline_s))[resource]
        return future.result(timeout=min(30.0, settings.service_deadline_s))[TIMESTAMP_TYPE].value
    except (KafkaException, KeyError, TimeoutError) as exc:  # e.g. no DescribeConfigs permission
        log.warning(
            "could not read the input topic's message.timestamp.type; make sure it is LogAppendTime",
            extra={"topic": settings.topic_mutations, "error": str(exc)[:300]},
        )
        return None


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
