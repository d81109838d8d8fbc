"""`mutagg verify [--repair] [--since WHEN]`: is everything accounted for?

Steps (in this order, so a job running meanwhile cannot make a false alarm):
1. Read the resume points (`source_offsets`) of the input topic: everything below them
   is committed, exported and acknowledged by the job. Only that is checked.
2. Read the settled ledger rows; then the topics, each up to the end it has now.
3. Check gaps, acks, audit and entity versions (mutagg/verify_checks.py, verify_audit.py).
4. With `--repair`: re-send the missing acks built from the ledger exactly as the job
   builds them (`from_ledger`, `AckProducer`), re-export the batches missing from the
   audit (`AuditExporter`), then verify again.
5. Record the result in `verify_runs`; the job's metrics refresher exports the latest
   one as `mutagg_verify_problems` and `mutagg_verify_last_success_timestamp_seconds`.

Exit codes: 0 no problem (after `--repair`: none left), 6 problems found (or left after
`--repair`), 2 configuration or unmigrated database, 3 Kafka or PostgreSQL unreachable.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
import psycopg

from mutagg.settings import Settings
from mutagg.verify_audit import check_audit, check_versions
from mutagg.verify_checks import Finding, Scope, check_acks, check_gaps, resume_points, settled_ledger
from mutagg.verify_topics import TopicReader
from schemas.errors import ConfigError
from schemas.registry import Registry
from sinks import ledger
from sinks.acks import AckProducer
from sinks.audit import AuditExporter
from sinks.audit_store import AuditStore
from sinks.database import connect
from sinks.outcomes import from_ledger

PROBLEMS_EXIT = 6  # 5 is `mutagg run`'s InputGap
RECORD_DAYS = 30


@dataclass(frozen=True, slots=True)
class AckTarget:
    """Who a re-sent ack goes to: the edge node the ledger names (what `from_ledger` reads)."""

    edge_node_id: str | None


@dataclass
class Verification:
    started_at: datetime
    scope: Scope
    findings: list[Finding]
    stats: dict[str, float]
    seconds: float

    @property
    def problems(self) -> int:
        return sum(f.total for f in self.findings)

    def finding(self, name: str) -> Finding:
        return next(f for f in self.findings if f.name == name)


def verify(settings: Settings, registry: Registry, since: datetime | None = None) -> Verification:
    """Run every check once (see the module docstring); nothing is changed."""
    began, started_at = time.perf_counter(), datetime.now(UTC)
    readers = [TopicReader(settings, topic) for topic in
               (settings.topic_mutations, settings.topic_dlq, settings.topic_status)]
    lane = _lane_reader(settings)  # the priority lane's input topic, if it exists
    try:
        source, dlq, status = readers
        with connect(settings.database_url, settings.service_deadline_s, "mutagg-verify") as connection:
            connection.autocommit = True  # every query sees what has committed by then
            scope = Scope(settings.topic_mutations, resume_points(connection, settings.topic_mutations), since)
            rows = settled_ledger(connection, scope)
            gaps, stats = check_gaps(connection, scope, source, dlq)
            if lane is not None:
                lane_scope = Scope(lane.topic, resume_points(connection, lane.topic), since)
                rows += settled_ledger(connection, lane_scope)
                lane_gaps, lane_stats = check_gaps(connection, lane_scope, lane, dlq)
                gaps = gaps.merged(lane_gaps)
                stats.update({"dlq_records": lane_stats["dlq_records"], "dlq_messages":
                              stats["dlq_messages"] + lane_stats["dlq_messages"]})  # the same DLQ read twice
                total = stats["dlq_messages"]
                stats["dlq_repeat_factor"] = round(stats["dlq_records"] / total, 2) if total else 1.0
            acks = check_acks(connection, scope, rows, status)
            findings = [gaps, acks]
            if settings.audit_uri:
                store = AuditStore(settings.audit_uri)
                findings.append(check_audit(connection, store, rows, since.astimezone(UTC).date() if since else None))
            findings.append(check_versions(connection, registry))
    finally:
        for reader in readers + ([lane] if lane is not None else []):
            reader.close()
    stats["ledger rows settled"] = len(rows)
    return Verification(started_at, scope, findings, stats, time.perf_counter() - began)


def _lane_reader(settings: Settings) -> TopicReader | None:
    if not settings.lane_on:
        return None
    try:
        return TopicReader(settings, settings.lane_topic)
    except ConfigError:  # no lane topic: the job reads the standard one alone
        return None


def repair(settings: Settings, verification: Verification, registry: Registry) -> dict[str, int]:
    """Re-send missing acks and re-export missing audit batches; what was done, by kind."""
    done = {"acks re-sent": 0, "audit batches re-exported": 0, "audit files written": 0}
    missing = sorted(verification.finding("acks").repairable)
    if missing:
        producer = AckProducer(settings.kafka_client_config(), settings.topic_status, settings.topic_dlq,
                               settings.service_deadline_s)
        with connect(settings.database_url, settings.service_deadline_s, "mutagg-verify") as connection:
            for start in range(0, len(missing), 10_000):
                with connection.cursor() as cursor:
                    entries = ledger.lookup(cursor, missing[start:start + 10_000])
                outcomes = [from_ledger(AckTarget(e.edge_node_id), e, "replayed", None)  # type: ignore[arg-type]
                            for e in entries.values()]
                done["acks re-sent"] += producer.send(outcomes)
    audit = next((f for f in verification.findings if f.name == "audit"), None)
    if audit is not None and audit.repairable:
        exporter = AuditExporter(settings.database_url, settings.audit_uri, settings.service_deadline_s,
                                 entity_types=(t.name for t in registry))
        try:
            done["audit files written"] = len(exporter.export(sorted(audit.repairable)))
        finally:
            exporter.close()
        done["audit batches re-exported"] = len(audit.repairable)
    return done


def record(settings: Settings, verification: Verification, repaired: dict[str, int] | None) -> bool:
    """Store the result for the metrics refresher (and prune old runs); False if not migrated for it."""
    counts = {f.name: dict(f.problems) for f in verification.findings}
    try:
        with psycopg.connect(settings.database_url, connect_timeout=10) as connection:
            connection.execute(
                "INSERT INTO verify_runs (run_id, started_at, problems, counts, repaired) VALUES (%s, %s, %s, %s, %s)",
                (str(uuid.uuid4()), verification.started_at, verification.problems,
                 orjson.dumps(counts).decode(), orjson.dumps(repaired).decode() if repaired is not None else None),
            )
            connection.execute(
                "DELETE FROM verify_runs WHERE started_at < clock_timestamp() - make_interval(days => %s)",
                (RECORD_DAYS,))
    except psycopg.errors.UndefinedTable:
        return False
    return True


def format_verification(verification: Verification) -> str:
    scope = verification.scope
    where = ", ".join(f"{p}:{o}" for p, o in sorted(scope.resume.items())) or "none recorded"
    since = scope.since.isoformat(timespec="seconds") if scope.since else "the beginning"
    lines = [f"Verified {scope.topic} since {since} in {verification.seconds:.1f}s (resume points {where})"]
    units = {"gaps": "input offsets", "acks": "ledger rows", "audit": "rows", "versions": "entities"}
    for finding in verification.findings:
        kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(finding.problems.items()))
        lines.append(f"  {finding.name:<9} checked {finding.checked:>9,} {units[finding.name]:<14} "
                     f"problems {finding.total:>6,}" + (f"  ({kinds})" if kinds else ""))
        for note, count in sorted(finding.notes.items()):
            lines.append(f"  {'':<9} {note}: {count:,}")
        for sample in finding.samples:
            lines.append(f"  {'':<9} e.g. {sample}")
    stats = verification.stats
    lines.append(f"  DLQ: {stats['dlq_records']:,} records for {stats['dlq_messages']:,} input messages "
                 f"(repeat factor {stats['dlq_repeat_factor']})")
    verdict = "OK: no problem" if not verification.problems else f"PROBLEMS: {verification.problems:,}"
    lines.append(verdict)
    return "\n".join(lines)
