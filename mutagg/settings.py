"""Configuration flows in once (file, then environment, then flags) into a frozen
`Settings` that is passed down; no other module reads the environment."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import yaml

from mutagg.security import kafka_security_config
from schemas.errors import ConfigError
from schemas.routing import Routing, parse_lane
from schemas.signature import read_master_key

DEFAULT_REGISTRY = Path(__file__).resolve().parent.parent / "schemas" / "example_registry.yaml"


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = "127.0.0.1:19092"
    database_url: str = "postgresql://postgres@127.0.0.1:15432/mutagg"
    # The PostgreSQL schema of every table (MUTAGG_SCHEMA); folded into `database_url` as its
    # search_path when the settings are loaded. None: the URL's own search_path, or the server's.
    schema: str | None = None
    registry: str = str(DEFAULT_REGISTRY)
    audit_uri: str = "audit"
    topic_mutations: str = "edge.mutations"
    # The priority lane (README "Priority lane", schemas/routing.py): entity types whose registry
    # criticality is in `priority_lane` (comma-separated: critical, important; empty: no lane) are
    # produced to `topic_critical`, every other type to `topic_mutations`; the job reads both and
    # commits the lane first. A missing lane topic: the job runs on the standard topic alone.
    # None: `<topic_mutations>.critical` (edge.mutations.critical), so renamed inputs get their own lane.
    topic_critical: str | None = None
    priority_lane: str = ""  # opt-in: off by default (README "Priority lane": what the lane costs the drain)
    # While lane mutations were read in the last seconds, standard batches are at most this big, and
    # sized to commit in about `lane_commit_target_s` (from the last commits' time per mutation): a
    # lane mutation waits for at most the two standard batches in flight (README "Priority lane").
    # The default caps nothing below the default batch size: the time target alone shrinks them.
    lane_batch_size: int = 5000
    lane_commit_target_s: float = 0.35
    topic_dlq: str = "edge.mutations.dlq"
    topic_status: str = "edge.mutation-status"
    # Compacted: the job's state for the edge nodes (how far behind, throttled), one record per
    # process, published every `central_state_interval_s` seconds (0: off). README "Central state".
    topic_central_state: str = "edge.central-state"
    central_state_interval_s: float = 10.0
    central_state_key: str = "mutagg"  # the record key's prefix: one job (cluster) per key prefix
    recovery_dir: str | None = None
    max_message_bytes: int = 1 << 20
    batch_size: int = 5000
    # How long a batch waits for more messages under light load (a full batch goes at once).
    # 100 ms, measured (BENCHMARKS.md): p99 at 2,000/s 260 -> 191 ms, at 7,000/s 1,477 -> 870 ms;
    # the price is CPU at light load (twice the transactions: +55 % at 2,000/s, +1 % at 7,000/s).
    window_ms: int = 100
    read_chunk: int = 10_000  # records read ahead per partition poll (more than a batch: fairness sees many nodes)
    prepare_ahead: bool = True  # decide the next batch while one writes (sinks/prepare_ahead.py)
    # Shards of the input partitions, each committed by its own apply step (README "Scale"):
    # fixed for the life of the recovery snapshots; 1 is one committer for the whole input.
    shards: int = 1
    metrics_port: int = 9464  # Prometheus endpoint; 0 turns it off
    # Autoscaling (README "Autoscaling", k8s/overlays/prod-autoscale): the DataflowScale resource whose
    # replica count KEDA sets from the lag, and the Indexed Job whose processes follow it. Unset: off.
    scale_target: str | None = None
    scale_job: str | None = None  # the Job's name (its pods' batch.kubernetes.io/job-name label)
    scale_min_processes: int = 1  # the bounds are checked against the shards at start: mutagg/process_count.py
    scale_max_processes: int = 1
    scale_cooldown_s: float = 600.0  # a cluster runs at least this long before its count changes again
    scale_check_interval_s: float = 30.0  # how often process 0 reads the desired count
    scale_join_timeout_s: float = 300.0  # how long a starting pod waits for the cluster it replaces to stop
    kube_api_url: str = "https://kubernetes.default.svc"
    kube_service_account_dir: str = "/var/run/secrets/kubernetes.io/serviceaccount"  # token, ca.crt, namespace
    node_share: float = 0.5  # at most this share of a batch for one edge node while others wait
    dependency_timeout_s: float = 600.0
    # Event time (what the dependency timeout is measured in) is the Kafka timestamps, which
    # producers set. With a lead > 0, a timestamp more than `lead` seconds after its record was
    # read counts only as read time + lead: one edge clock a year ahead then cannot time out every
    # waiting dependency. 0 (default): the log alone decides, as DESIGN section 4 specifies, so a
    # replay decides the same even for a log stamped ahead of the clock.
    event_time_lead_s: float = 0.0
    snapshot_interval_s: float = 10.0
    service_deadline_s: float = 120.0
    # Liveness (/healthz): the dataflow's worker loop must have turned within this many seconds,
    # unless it waits on a named dependency (for at most service_deadline_s + this). README "Probes".
    heartbeat_timeout_s: float = 120.0
    # After SIGTERM the batch in flight may finish for this long; past it the process exits 143
    # without it (its transaction rolls back, the restart decides it again, as after a crash).
    # Kubernetes kills at terminationGracePeriodSeconds (60 s): keep it well below (BENCHMARKS.md).
    stop_deadline_s: float = 30.0
    # The job turns Python's automatic cyclic garbage collection off and collects in full this often
    # instead (mutagg/collector.py, BENCHMARKS.md "The collector"); 0: Python's automatic collection.
    gc_interval_s: float = 300.0
    # What the job does when the next offset of an input partition is no longer on the broker
    # (retention deleted it): "stop" (default) records the lost range in `input_gaps` and exits 5;
    # "skip" records and counts it too, then continues from the earliest offset still there.
    on_input_gap: str = "stop"
    topic_partitions: int = 12
    # Replication of the topics `mutagg topics create` makes (0: the broker's default). Production
    # on a cluster: 3 and 2, so a broker lost neither stops writes (acks=all) nor loses one.
    topic_replication: int = 0
    topic_min_insync_replicas: int = 0
    # `retention.ms` that `mutagg topics create` sets and `mutagg topics check` expects (-1: keep
    # forever). Input: how long an unread mutation survives a stopped job (past it: an input gap);
    # status: how long a van may stay offline and still read its acks (the verify CronJob reads 8 d);
    # DLQ: how long an operator has to replay a rejected message.
    topic_retention_input_ms: int = 7 * 24 * 3600 * 1000
    topic_retention_status_ms: int = 7 * 24 * 3600 * 1000
    topic_retention_dlq_ms: int = 30 * 24 * 3600 * 1000
    # `mutagg migrate` waits at most this long for any one lock (PostgreSQL `lock_timeout`): an
    # ERP transaction holding a table it must change makes it give up and retry, instead of
    # queueing, which would stall every writer of that table behind it. It tries `migrate_attempts`
    # times, waiting `migrate_retry_backoff_s` after the first failure, doubling each time.
    migrate_lock_timeout_s: float = 5.0
    migrate_attempts: int = 5
    migrate_retry_backoff_s: float = 2.0
    # The job's least-privileged login role: `mutagg migrate` (run as the owner) grants it exactly
    # what `mutagg run` needs (as `--grant-to`). None: grant nothing.
    job_role: str | None = None
    # The throttle (README "Throttle", operators/throttle.py): the database's signals are read at
    # most every `throttle_sample_ms` on a thread of their own. Over a limit the job halves its
    # batch-size cap and waits; it probes back up by a tenth of batch_size per clean commit. A limit
    # of 0 turns its signal off; `throttle_sample_ms` 0 turns the sampler (and `mutagg throttle`) off.
    throttle_sample_ms: int = 1000
    throttle_replication_lag_max_s: float = 30.0  # max replay lag of the standbys (pg_stat_replication)
    throttle_active_backends_max: int = 64  # active sessions on the server, the job's own not counted
    throttle_commit_latency_s: float = 10.0  # a batch transaction slower than this halves the cap
    throttle_pause_s: float = 1.0  # the wait after a slow commit; the re-check interval while held
    throttle_min_batch: int = 100  # the cap never goes below this
    log_level: str = "INFO"
    fault_point: str | None = None  # crash tests only: "after_commit:3" kills the job there
    kafka_config: dict[str, Any] = field(default_factory=dict)
    # Kafka security (mutagg/security.py maps them to librdkafka; README "Security")
    kafka_security_protocol: str | None = None  # PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL
    kafka_sasl_mechanism: str | None = None  # default SCRAM-SHA-512 with a SASL protocol
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = field(default=None, repr=False)
    kafka_ssl_ca_file: str | None = None  # PEM bundle of the CA(s) that signed the broker's certificate
    # Edge signatures (DESIGN section 2, README "Edge signatures"): the file holding the master key
    # (a mounted secret). Unset: unsigned messages are accepted and counted (mutagg_unsigned_total).
    edge_master_key_file: str | None = None
    # An edge node's own key (`python -m edge.node`): the file `mutagg edge-key` wrote.
    edge_node_key_file: str | None = None

    def edge_master_key(self) -> bytes | None:
        """The master key (read from its file now: the key itself is never held in, logged
        or pickled with the settings); None without one. `ConfigError` if it cannot be read."""
        return read_master_key(self.edge_master_key_file) if self.edge_master_key_file else None

    def routing(self, criticality: dict[str, str]) -> Routing:
        """Which input topic each entity type goes to (`criticality`: type -> the registry's level)."""
        return Routing.of(self.topic_mutations, self.lane_topic, criticality, self.priority_lane)

    @property
    def lane_topic(self) -> str:
        """The priority lane's input topic (`topic_critical`, or derived from `topic_mutations`)."""
        return self.topic_critical or f"{self.topic_mutations}.critical"

    @property
    def lane_on(self) -> bool:
        """Some criticality is in the lane (the job then reads the lane topic, if it exists)."""
        return bool(parse_lane(self.priority_lane))

    def input_topics(self) -> tuple[str, ...]:
        """The input topics the job reads: the lane's first (if on), then the standard one."""
        return (self.lane_topic, self.topic_mutations) if self.lane_on else (self.topic_mutations,)

    def as_env(self) -> dict[str, str]:
        """The MUTAGG_* variables that make a child `mutagg` process use exactly these settings."""
        env = {}
        for variable, name in _ENV.items():
            value = getattr(self, name)
            if value is not None and name != "schema":  # the database URL carries it
                env[variable] = str(value)
        return env

    def kafka_client_config(self) -> dict[str, Any]:
        """librdkafka settings; its own logs go through Python logging (JSON, de-duplicated)."""
        import logging

        return {"bootstrap.servers": self.kafka_bootstrap, "logger": logging.getLogger("librdkafka"),
                **kafka_security_config(self), **self.kafka_config}


_ENV = {
    "MUTAGG_KAFKA_BOOTSTRAP": "kafka_bootstrap",
    "MUTAGG_DATABASE_URL": "database_url",
    "MUTAGG_SCHEMA": "schema",
    "MUTAGG_REGISTRY": "registry",
    "MUTAGG_AUDIT_URI": "audit_uri",
    "MUTAGG_TOPIC_MUTATIONS": "topic_mutations",
    "MUTAGG_TOPIC_CRITICAL": "topic_critical",
    "MUTAGG_PRIORITY_LANE": "priority_lane",
    "MUTAGG_LANE_BATCH_SIZE": "lane_batch_size",
    "MUTAGG_LANE_COMMIT_TARGET_S": "lane_commit_target_s",
    "MUTAGG_TOPIC_DLQ": "topic_dlq",
    "MUTAGG_TOPIC_STATUS": "topic_status",
    "MUTAGG_TOPIC_CENTRAL_STATE": "topic_central_state",
    "MUTAGG_CENTRAL_STATE_INTERVAL_S": "central_state_interval_s",
    "MUTAGG_CENTRAL_STATE_KEY": "central_state_key",
    "MUTAGG_RECOVERY_DIR": "recovery_dir",
    "MUTAGG_MAX_MESSAGE_BYTES": "max_message_bytes",
    "MUTAGG_BATCH_SIZE": "batch_size",
    "MUTAGG_WINDOW_MS": "window_ms",
    "MUTAGG_READ_CHUNK": "read_chunk",
    "MUTAGG_PREPARE_AHEAD": "prepare_ahead",
    "MUTAGG_SHARDS": "shards",
    "MUTAGG_NODE_SHARE": "node_share",
    "MUTAGG_METRICS_PORT": "metrics_port",
    "MUTAGG_SCALE_TARGET": "scale_target",
    "MUTAGG_SCALE_JOB": "scale_job",
    "MUTAGG_SCALE_MIN_PROCESSES": "scale_min_processes",
    "MUTAGG_SCALE_MAX_PROCESSES": "scale_max_processes",
    "MUTAGG_SCALE_COOLDOWN_S": "scale_cooldown_s",
    "MUTAGG_SCALE_CHECK_INTERVAL_S": "scale_check_interval_s",
    "MUTAGG_SCALE_JOIN_TIMEOUT_S": "scale_join_timeout_s",
    "MUTAGG_KUBE_API_URL": "kube_api_url",
    "MUTAGG_KUBE_SERVICE_ACCOUNT_DIR": "kube_service_account_dir",
    "MUTAGG_DEPENDENCY_TIMEOUT_S": "dependency_timeout_s",
    "MUTAGG_EVENT_TIME_LEAD_S": "event_time_lead_s",
    "MUTAGG_SNAPSHOT_INTERVAL_S": "snapshot_interval_s",
    "MUTAGG_SERVICE_DEADLINE_S": "service_deadline_s",
    "MUTAGG_HEARTBEAT_TIMEOUT_S": "heartbeat_timeout_s",
    "MUTAGG_STOP_DEADLINE_S": "stop_deadline_s",
    "MUTAGG_GC_INTERVAL_S": "gc_interval_s",
    "MUTAGG_ON_INPUT_GAP": "on_input_gap",
    "MUTAGG_TOPIC_PARTITIONS": "topic_partitions",
    "MUTAGG_TOPIC_REPLICATION": "topic_replication",
    "MUTAGG_TOPIC_MIN_INSYNC_REPLICAS": "topic_min_insync_replicas",
    "MUTAGG_TOPIC_RETENTION_INPUT_MS": "topic_retention_input_ms",
    "MUTAGG_TOPIC_RETENTION_STATUS_MS": "topic_retention_status_ms",
    "MUTAGG_TOPIC_RETENTION_DLQ_MS": "topic_retention_dlq_ms",
    "MUTAGG_MIGRATE_LOCK_TIMEOUT_S": "migrate_lock_timeout_s",
    "MUTAGG_MIGRATE_ATTEMPTS": "migrate_attempts",
    "MUTAGG_MIGRATE_RETRY_BACKOFF_S": "migrate_retry_backoff_s",
    "MUTAGG_JOB_ROLE": "job_role",
    "MUTAGG_THROTTLE_SAMPLE_MS": "throttle_sample_ms",
    "MUTAGG_THROTTLE_REPLICATION_LAG_MAX_S": "throttle_replication_lag_max_s",
    "MUTAGG_THROTTLE_ACTIVE_BACKENDS_MAX": "throttle_active_backends_max",
    "MUTAGG_THROTTLE_COMMIT_LATENCY_S": "throttle_commit_latency_s",
    "MUTAGG_THROTTLE_PAUSE_S": "throttle_pause_s",
    "MUTAGG_THROTTLE_MIN_BATCH": "throttle_min_batch",
    "MUTAGG_LOG_LEVEL": "log_level",
    "MUTAGG_FAULT_POINT": "fault_point",
    "MUTAGG_KAFKA_SECURITY_PROTOCOL": "kafka_security_protocol",
    "MUTAGG_KAFKA_SASL_MECHANISM": "kafka_sasl_mechanism",
    "MUTAGG_KAFKA_SASL_USERNAME": "kafka_sasl_username",
    "MUTAGG_KAFKA_SASL_PASSWORD": "kafka_sasl_password",
    "MUTAGG_KAFKA_SSL_CA_FILE": "kafka_ssl_ca_file",
    "MUTAGG_EDGE_MASTER_KEY_FILE": "edge_master_key_file",
    "MUTAGG_EDGE_NODE_KEY_FILE": "edge_node_key_file",
}

_OPTIONAL = (
    "schema", "topic_critical", "recovery_dir", "fault_point", "kafka_security_protocol", "kafka_sasl_mechanism",
    "kafka_sasl_username", "kafka_sasl_password", "kafka_ssl_ca_file", "job_role", "edge_master_key_file",
    "edge_node_key_file", "scale_target", "scale_job",
)

INPUT_GAP_POLICIES = ("stop", "skip")

_KINDS = {f.name: f.type for f in fields(Settings)}
_BOOLEANS = {"true": True, "1": True, "yes": True, "on": True, "false": False, "0": False, "no": False, "off": False}

# Secrets may come from mounted files: MUTAGG_DATABASE_URL_FILE=/var/run/secrets/...
_FILE_SUFFIX = "_FILE"


def parse_setting(name: str, value: Any) -> Any:
    """`value` (e.g. text from the environment) as setting `name`'s type; ConfigError if it is none."""
    if name not in _KINDS:
        raise ConfigError(f"no setting {name!r}")
    return _convert(name, value)


def _convert(name: str, value: Any) -> Any:
    kind = _KINDS[name]
    try:
        if kind == "int":
            return int(value)
        if kind == "float":
            return float(value)
        if kind == "bool":
            if isinstance(value, bool):
                return value
            if str(value).strip().lower() in _BOOLEANS:
                return _BOOLEANS[str(value).strip().lower()]
            raise ValueError("expected true or false")
        if kind == "dict[str, Any]":
            if not isinstance(value, dict):
                raise ValueError("expected a mapping")
            return dict(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name}: {value!r} is not a valid {kind}") from exc
    return None if value in (None, "") and name in _OPTIONAL else str(value)


def load_settings(
    config_file: str | None = None,
    environ: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Settings:
    """Defaults, then the YAML file (`--config` or MUTAGG_CONFIG), then MUTAGG_* variables, then flags."""
    environ = dict(os.environ if environ is None else environ)
    values: dict[str, Any] = {}
    config_file = config_file or environ.get("MUTAGG_CONFIG")
    if config_file:
        try:
            document = yaml.safe_load(Path(config_file).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config file {config_file}: {exc}") from exc
        unknown = set(document) - {f.name for f in fields(Settings)}
        if unknown:
            raise ConfigError(f"config file {config_file}: unknown settings {sorted(unknown)}")
        values.update(document)
    for variable, name in _ENV.items():
        if variable + _FILE_SUFFIX in environ:
            try:
                values[name] = Path(environ[variable + _FILE_SUFFIX]).read_text().strip()
            except OSError as exc:
                raise ConfigError(f"cannot read {variable}{_FILE_SUFFIX}: {exc}") from exc
        elif variable in environ:
            values[name] = environ[variable]
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    settings = Settings(**{name: _convert(name, value) for name, value in values.items()})
    if settings.read_chunk < 1:
        raise ConfigError("read_chunk must be positive")
    if min(settings.batch_size, settings.lane_batch_size, settings.max_message_bytes) < 1 or settings.window_ms < 0:
        raise ConfigError("batch_size, lane_batch_size and max_message_bytes must be positive, window_ms >= 0")
    if settings.lane_commit_target_s <= 0:
        raise ConfigError(f"lane_commit_target_s must be positive, not {settings.lane_commit_target_s}")
    try:
        parse_lane(settings.priority_lane)
    except ValueError as exc:
        raise ConfigError(f"priority_lane: {exc}") from exc
    if settings.shards < 1:
        raise ConfigError(f"shards must be positive, not {settings.shards}")
    if settings.scale_target:
        if not settings.scale_job:
            raise ConfigError("scale_target needs scale_job: the Indexed Job whose processes follow it")
        if settings.scale_cooldown_s < 0 or settings.scale_check_interval_s <= 0 or settings.scale_join_timeout_s <= 0:
            raise ConfigError("scale_cooldown_s must be >= 0, scale_check_interval_s and scale_join_timeout_s positive")
    if settings.shards > 1 and settings.lane_on:
        raise ConfigError("the priority lane is a single committer's: set shards to 1 or priority_lane empty")
    if settings.lane_on and settings.lane_topic == settings.topic_mutations:
        raise ConfigError("topic_critical must differ from topic_mutations (or priority_lane be empty)")
    if settings.on_input_gap not in INPUT_GAP_POLICIES:
        raise ConfigError(f"on_input_gap must be one of {'|'.join(INPUT_GAP_POLICIES)}, not {settings.on_input_gap!r}")
    if settings.stop_deadline_s <= 0:
        raise ConfigError(f"stop_deadline_s must be positive, not {settings.stop_deadline_s}")
    if settings.gc_interval_s < 0:
        raise ConfigError(f"gc_interval_s must be >= 0 (0: Python's own collection), not {settings.gc_interval_s}")
    if settings.central_state_interval_s < 0 or not settings.central_state_key:
        raise ConfigError("central_state_interval_s must be >= 0 (0: off) and central_state_key non-empty")
    if settings.heartbeat_timeout_s <= 0:
        raise ConfigError(f"heartbeat_timeout_s must be positive, not {settings.heartbeat_timeout_s}")
    if settings.event_time_lead_s < 0:
        raise ConfigError(f"event_time_lead_s must be >= 0 (0: off), not {settings.event_time_lead_s}")
    if settings.migrate_lock_timeout_s <= 0 or settings.migrate_attempts < 1 or settings.migrate_retry_backoff_s < 0:
        raise ConfigError("migrate_lock_timeout_s must be positive, migrate_attempts >= 1 and "
                          "migrate_retry_backoff_s >= 0")
    for name in ("topic_retention_input_ms", "topic_retention_status_ms", "topic_retention_dlq_ms"):
        if getattr(settings, name) < 1 and getattr(settings, name) != -1:
            raise ConfigError(f"{name} must be positive (milliseconds) or -1 (forever), not {getattr(settings, name)}")
    if settings.topic_min_insync_replicas > settings.topic_replication > 0:
        raise ConfigError(f"topic_min_insync_replicas ({settings.topic_min_insync_replicas}) exceeds "
                          f"topic_replication ({settings.topic_replication}): no write could ever succeed")
    throttle = ("throttle_sample_ms", "throttle_replication_lag_max_s", "throttle_active_backends_max",
                "throttle_commit_latency_s", "throttle_pause_s")
    if any(getattr(settings, name) < 0 for name in throttle) or settings.throttle_min_batch < 1:
        raise ConfigError(f"{', '.join(throttle)} must be >= 0 (0: off) and throttle_min_batch >= 1")
    kafka_security_config(settings)  # inconsistent Kafka security settings fail here, not at first use
    settings.edge_master_key()  # a missing, unreadable or empty key file fails here, not at the first message
    return _in_schema(settings)


def with_overrides(settings: Settings, **changes: Any) -> Settings:
    changed = replace(settings, **{k: v for k, v in changes.items() if v is not None})
    return _in_schema(changed) if changes.get("schema") is not None else changed


_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def _in_schema(settings: Settings) -> Settings:
    """`settings` with the schema setting folded into the database URL (every command then uses it)."""
    if settings.schema is None:
        return settings
    if not _SCHEMA_NAME.fullmatch(settings.schema):
        raise ConfigError(f"schema {settings.schema!r} must be a plain identifier (letters, digits, _)")
    return replace(settings, database_url=url_with_schema(settings.database_url, settings.schema))


def url_with_schema(url: str, schema: str) -> str:
    """The same database URL with `search_path` set to `schema` (other `options` kept)."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    options = " ".join(value for key, value in query if key == "options")
    options = re.sub(r"-c\s*search_path=\S*", "", options).strip()
    query = [(key, value) for key, value in query if key != "options"]
    query.append(("options", f"{options} -c search_path={schema}".strip()))
    return urlunsplit(parts._replace(query=urlencode(query, quote_via=quote)))
