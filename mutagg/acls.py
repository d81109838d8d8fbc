"""Kafka ACLs for the job's topics: which principal may do what (README "Kafka ACLs").

Edge principals write only the input topic and read only the status and central-state
topics; the job's principal is the only one that writes the status, DLQ and central-state
topics. `mutagg topics acls`
prints the bindings (as `kafka-acls.sh` commands a platform team can review and run) or
applies them with the Admin API; the broker ignores a binding that already exists, so
applying is idempotent. It grants, never revokes: bindings on the job's topics that are
not in the plan are reported, for a person to remove.

Consumer groups: the job and the edge's ack listener read with manual assignment and keep
their offsets elsewhere (recovery snapshots and the database; the outbox), never in a
group. Their consumers still carry a `group.id`, and librdkafka then asks for the group's
coordinator, which needs `Describe` on the group (without it the consumer reports
GROUP_AUTHORIZATION_FAILED, and the job stops on it). So each client gets `Describe` on the groups it names, not
`Read`: no one can join a group or commit offsets. No client is transactional, and an
idempotent producer needs no cluster right since Kafka 3.0 (`Write` on a topic suffices):
there are no transactional-id or cluster ACLs.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from mutagg import security
from mutagg.settings import Settings
from schemas.errors import ConfigError, MutaggError, ServiceUnavailable

DEFAULT_JOB_PRINCIPAL = "User:mutagg-job"
EDGE_PRINCIPAL_PREFIX = "edge-"
"""An edge node `van-3` authenticates as `User:edge-van-3` unless told otherwise."""
EDGE_GROUP_PREFIX = "mutagg-edge-"
"""`edge/acks.py` names its consumer group after the node: `mutagg-edge-<node id>`."""

# The job's group ids (their offsets are never committed: the groups stay empty).
JOB_GROUPS = (
    ("mutagg-metadata", "LITERAL", "run: partition metadata (sources/kafka.py)"),
    ("mutagg-unused", "LITERAL", "run: input partitions, manually assigned (sources/kafka.py)"),
    ("mutagg-metrics", "LITERAL", "run: consumer lag for /metrics (mutagg/metrics.py)"),
    ("mutagg-status", "LITERAL", "status: topic watermarks (mutagg/report.py)"),
    ("mutagg-dlq-", "PREFIXED", "dlq list|replay: one group per scan (mutagg/dlq.py)"),
    ("mutagg-verify-", "PREFIXED", "verify: one group per read (mutagg/verify_topics.py)"),
)


@dataclass(frozen=True, slots=True)
class Acl:
    """One `Allow` binding: `principal` may do `operation` on the resource, from any host."""

    principal: str  # "User:mutagg-job"
    resource: str  # "topic" or "group"
    name: str
    operation: str  # "READ", "WRITE", "DESCRIBE", "DESCRIBE_CONFIGS"
    pattern: str = "LITERAL"  # or "PREFIXED": every resource whose name starts with `name`
    why: str = ""

    def binding(self) -> AclBinding:
        return AclBinding(
            ResourceType[self.resource.upper()], self.name, ResourcePatternType[self.pattern], self.principal,
            "*", AclOperation[self.operation], AclPermissionType.ALLOW,
        )

    def command(self, bootstrap: str) -> str:
        """The same binding as a `kafka-acls.sh` command (Kafka's own CLI)."""
        words = [
            "kafka-acls.sh", "--bootstrap-server", bootstrap, "--command-config", "admin.properties", "--add",
            "--allow-principal", self.principal, "--operation", _camel(self.operation), f"--{self.resource}", self.name,
        ]
        if self.pattern != "LITERAL":
            words += ["--resource-pattern-type", self.pattern.lower()]
        return " ".join(shlex.quote(w) for w in words)


def _camel(operation: str) -> str:
    return "".join(part.capitalize() for part in operation.split("_"))


def principal(name: str) -> str:
    """`name` as a Kafka principal: a bare SASL user name gets the `User:` type."""
    if not name or name.strip() != name:
        raise ConfigError(f"Kafka principal {name!r}: empty or padded with spaces")
    return name if ":" in name else f"User:{name}"


def edge_principal(node_id: str) -> str:
    return f"User:{EDGE_PRINCIPAL_PREFIX}{node_id}"


def job_acls(settings: Settings, job: str = DEFAULT_JOB_PRINCIPAL) -> list[Acl]:
    """What the job's principal needs: `mutagg run`, and the operator commands that speak for
    the job (they write acks or mutations it decides, so they use its credentials)."""
    job = principal(job)
    inputs, status, dlq = settings.topic_mutations, settings.topic_status, settings.topic_dlq
    acls = [
        Acl(job, "topic", inputs, "READ", why="run: reads the mutations"),
        Acl(job, "topic", inputs, "DESCRIBE_CONFIGS",
            why="run, topics create: checks message.timestamp.type; run: reads retention.ms (metrics)"),
        Acl(job, "topic", inputs, "WRITE", why="conflicts resolve, dlq replay: submit mutations"),
        Acl(job, "topic", status, "WRITE", why="run, verify --repair: acks to edge nodes"),
        Acl(job, "topic", status, "READ", why="verify: reads the acks back"),
        Acl(job, "topic", dlq, "WRITE", why="run: rejected messages"),
        Acl(job, "topic", dlq, "READ", why="dlq list|replay, verify"),
        Acl(job, "topic", settings.topic_central_state, "WRITE", why="run: its state for the edge nodes"),
    ]
    if settings.lane_on:  # the priority lane is an input like the other (README "Priority lane")
        lane = settings.lane_topic
        acls += [
            Acl(job, "topic", lane, "READ", why="run: reads the priority lane's mutations"),
            Acl(job, "topic", lane, "DESCRIBE_CONFIGS", why="topics check: the lane's configs"),
            Acl(job, "topic", lane, "WRITE", why="conflicts resolve, dlq replay: submit lane mutations"),
        ]
    acls += [Acl(job, "group", name, "DESCRIBE", pattern, why) for name, pattern, why in JOB_GROUPS]
    return acls


def edge_acls(settings: Settings, node_id: str, who: str | None = None) -> list[Acl]:
    """What one edge node's principal needs: write mutations, read its acks."""
    if not node_id:
        raise ConfigError("an edge node id is empty")
    who = principal(who) if who else edge_principal(node_id)
    return [
        Acl(who, "topic", settings.topic_mutations, "WRITE", why="edge sender: mutations"),
        *([Acl(who, "topic", settings.lane_topic, "WRITE", why="edge sender: mutations of the priority lane's types")]
          if settings.lane_on else []),
        Acl(who, "topic", settings.topic_status, "READ", why="edge ack listener: acks"),
        Acl(who, "topic", settings.topic_central_state, "READ", why="edge: how far behind the job is"),
        Acl(who, "group", f"{EDGE_GROUP_PREFIX}{node_id}", "DESCRIBE", why="edge ack listener (edge/acks.py)"),
    ]


def parse_edge(spec: str) -> tuple[str, str | None]:
    """`NODE` or `NODE=PRINCIPAL` (e.g. `van-3=User:CN=van-3` for a TLS client certificate)."""
    node, _, who = spec.partition("=")
    if not node:
        raise ConfigError(f"--edge {spec!r}: expected NODE or NODE=PRINCIPAL")
    return node, who or None


def plan(settings: Settings, job: str = DEFAULT_JOB_PRINCIPAL, edges: Iterable[str] = ()) -> list[Acl]:
    """Every binding for the job and the edge nodes `edges` (`NODE` or `NODE=PRINCIPAL`)."""
    acls = job_acls(settings, job)
    job = principal(job)
    for spec in edges:
        node, who = parse_edge(spec)
        edge = edge_acls(settings, node, who)
        if edge[0].principal == job:
            raise ConfigError(f"edge node {node!r} must not use the job's principal {job}: "
                              "only the job's principal may write the status, DLQ and central-state topics")
        acls += edge
    return list(dict.fromkeys(acls))


def _key(binding: AclBinding) -> tuple:
    return (binding.restype, binding.name, binding.resource_pattern_type, binding.principal, binding.host,
            binding.operation, binding.permission_type)


ANY_BINDING = AclBindingFilter(ResourceType.ANY, None, ResourcePatternType.ANY, None, None, AclOperation.ANY,
                               AclPermissionType.ANY)


def _describe(admin: AdminClient, wanted: AclBindingFilter, timeout_s: float) -> list[AclBinding]:
    return admin.describe_acls(wanted, request_timeout=timeout_s).result(timeout=timeout_s)


def _topic_bindings(admin: AdminClient, topics: Iterable[str], timeout_s: float) -> list[AclBinding]:
    """Every binding that applies to these topics: literal, prefixed or wildcard, any principal."""
    found: list[AclBinding] = []
    for topic in topics:
        found += _describe(admin, AclBindingFilter(
            ResourceType.TOPIC, topic, ResourcePatternType.MATCH, None, None, AclOperation.ANY,
            AclPermissionType.ANY), timeout_s)
    return sorted({_key(b): b for b in found}.values(), key=_key)


@dataclass(frozen=True)
class Applied:
    created: list[Acl]  # not there before
    present: list[Acl]  # there already
    unplanned: list[AclBinding]  # on the job's topics, not in the plan: review, remove by hand


def apply(settings: Settings, acls: list[Acl], wait_s: float = 30.0) -> Applied:
    """Create the bindings (as the principal of `settings`, which needs `Alter` on the cluster),
    then wait until the broker enforces them."""
    timeout_s = min(30.0, settings.service_deadline_s)
    admin = AdminClient(settings.kafka_client_config())
    planned = {_key(a.binding()): a for a in acls}
    try:
        before = {_key(b) for b in _describe(admin, ANY_BINDING, timeout_s)}
        missing = [a for k, a in planned.items() if k not in before]
        if missing:
            for future in admin.create_acls([a.binding() for a in missing], request_timeout=timeout_s).values():
                future.result(timeout=timeout_s)
        give_up_at = time.monotonic() + wait_s
        # DescribeAcls answers from the broker's own authorizer: once shown, they are enforced.
        while not planned.keys() <= {_key(b) for b in _describe(admin, ANY_BINDING, timeout_s)}:
            if time.monotonic() > give_up_at:
                raise ServiceUnavailable(f"Kafka ACLs created but not shown by the broker after {wait_s:.0f}s")
            time.sleep(0.1)
        on_topics = _topic_bindings(admin, sorted({a.name for a in acls if a.resource == "topic"}), timeout_s)
    except KafkaException as exc:
        raise _failure(settings, exc.args[0]) from exc
    except TimeoutError as exc:
        raise ServiceUnavailable(f"Kafka at {settings.kafka_bootstrap} did not answer an ACL request "
                                 f"within {timeout_s:.0f}s") from exc
    return Applied(
        created=missing,
        present=[a for k, a in planned.items() if k in before],
        unplanned=[b for b in on_topics if _key(b) not in planned],
    )


def _failure(settings: Settings, error: KafkaError) -> MutaggError:
    """The error to report for a refused or failed ACL request."""
    who = settings.kafka_sasl_username or "this client"
    if error.code() == KafkaError.CLUSTER_AUTHORIZATION_FAILED:
        return ConfigError(
            f"Kafka at {settings.kafka_bootstrap} refused to let {who!r} manage ACLs ({error.str()}): "
            "reading and creating ACLs needs Describe and Alter on the cluster; run as the cluster's admin"
        )
    if error.code() == KafkaError.SECURITY_DISABLED:
        return ConfigError(
            f"Kafka at {settings.kafka_bootstrap} has no authorizer ({error.str()}): set authorizer.class.name "
            "on the brokers first, or every client may do everything"
        )
    return ServiceUnavailable(f"Kafka ACLs at {settings.kafka_bootstrap}: {error.str()}")


def _show(binding: AclBinding) -> str:
    return (f"{binding.permission_type.name} {binding.principal} {binding.operation.name} "
            f"{binding.restype.name.lower()} {binding.name!r} ({binding.resource_pattern_type.name.lower()}, "
            f"host {binding.host})")


def run_command(settings: Settings, job: str, edges: list[str], do_apply: bool) -> int:
    """`mutagg topics acls`: print the plan as `kafka-acls.sh` commands, or apply it."""
    acls = plan(settings, job, edges)
    if not do_apply:
        for acl in acls:
            print(f"# {acl.principal}: {acl.why}")
            print(acl.command(settings.kafka_bootstrap))
        return 0
    security.check_kafka(settings)
    applied = apply(settings, acls)
    for acl in applied.created:
        print(f"created  {acl.principal} {acl.operation} {acl.resource} {acl.name} ({acl.pattern.lower()})")
    print(f"{len(applied.created)} ACLs created, {len(applied.present)} already there")
    for binding in applied.unplanned:
        print(f"not in the plan (review; remove with kafka-acls.sh --remove): {_show(binding)}")
    return 0
