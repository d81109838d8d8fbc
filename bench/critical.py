"""`mutagg bench --critical`: critical changes while a backlog drains (issue 21 part 1).

Three phases in one run, each on a fresh schema and fresh topics, the job tailing:
  (a) the backlog alone: `backlog` standard mutations already in the input; its drain rate;
  (b) the same backlog, and critical mutations (stock_level) produced at `rate` per second to
      the priority lane's topic while it drains: their Kafka-append-to-commit percentiles, and
      the backlog's drain rate against (a)'s;
  (c) the baseline: the same, the critical mutations produced to the standard topic and the
      lane off (as before the lane): their percentiles (they wait for the backlog).
The drain rate is the backlog's ledger rows over the span from its first decided_at to its
last; the critical percentiles are over those appended before the backlog's last commit.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import orjson
import psycopg

from bench.latency import PacedProducer, wait_until
from bench.pipeline import Job
from bench.report import Report, Result
from bench.workspace import Workspace
from mutagg.producer import produce
from mutagg.settings import Settings, with_overrides
from mutagg.workload import Message

CRITICAL_TYPE = "stock_level"  # criticality `critical` in the example registry
NODES = [f"{kind}-{i:02d}" for i, kind in zip(range(12), ["shop", "warehouse", "van"] * 4, strict=True)]
TARGET_P99_MS = 1000.0
TARGET_DRAIN_RATIO = 0.9


@dataclass(frozen=True)
class CriticalOptions:
    backlog: int = 500_000
    rate: float = 200.0
    partitions: int = 4
    workers: int = 1
    seed: int = 7
    rounds: int = 1


def backlog_messages(count: int, seed: int) -> list[Message]:
    """`count` standard mutations (customer and article: neither in the lane), over 20,000
    entities, each created once and then updated, spread over 12 edge nodes."""
    messages = []
    versions: dict[tuple[str, str], int] = {}
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    for serial in range(count):
        number = (serial * 7919 + seed) % 10_000
        entity_type, attributes = ("customer", {"notes": f"n{serial}"}) if serial % 2 else \
            ("article", {"price": f"{serial % 900 + 1}.{serial % 100:02d}"})
        entity_id = f"{'C' if serial % 2 else 'A'}{number:05d}"
        version = versions.get((entity_type, entity_id), 0)
        versions[(entity_type, entity_id)] = version + 1
        document = {
            "id": f"b-{seed}-{serial:08d}", "edge_node_id": NODES[serial % len(NODES)], "entity_type": entity_type,
            "entity_id": entity_id, "operation_type": "UPDATE" if version else "CREATE", "attributes": attributes,
            "base_version": version, "timestamp": stamp, "priority": 5, "dependencies": [],
        }
        messages.append(Message(f"{entity_type}:{entity_id}".encode(), orjson.dumps(document)))
    return messages


def critical_messages(count: int, tag: str) -> list[Message]:
    """`count` stock-level changes over 500 entities (created, then updated)."""
    messages = []
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    for serial in range(count):
        entity_id = f"S{serial % 500:04d}"
        version = serial // 500
        document = {
            "id": f"c-{tag}-{serial:07d}", "edge_node_id": NODES[serial % len(NODES)], "entity_type": CRITICAL_TYPE,
            "entity_id": entity_id, "operation_type": "UPDATE" if version else "CREATE",
            "attributes": {"quantity": serial % 97}, "base_version": version, "timestamp": stamp, "priority": 5,
            "dependencies": [],
        }
        messages.append(Message(f"{CRITICAL_TYPE}:{entity_id}".encode(), orjson.dumps(document)))
    return messages


@dataclass
class Phase:
    drained: int
    drain_s: float
    critical: int = 0
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    misrouted_note: str = ""

    @property
    def drain_rate(self) -> float:
        return self.drained / self.drain_s if self.drain_s > 0 else 0.0


def _query(settings: Settings, statement: str, params=None):
    with psycopg.connect(settings.database_url) as connection:
        return connection.execute(statement, params).fetchone()


def _backlog_decided(settings: Settings) -> int:
    return _query(settings, "SELECT count(*) FROM mutation_log WHERE entity_type <> %s", (CRITICAL_TYPE,))[0]


def _wait(predicate: Callable[[], bool], timeout_s: float, what: str, job: Job) -> None:
    """`wait_until`, failing at once if the job exits meanwhile."""

    def reached() -> bool:
        if predicate():
            return True
        if job.process.process.poll() is not None:
            raise RuntimeError(f"the job exited while waiting for {what}")
        return False

    wait_until(reached, timeout_s, what)


def run_phase(workspace: Workspace, name: str, backlog: list[Message], options: CriticalOptions,
              critical: str | None, progress: Callable[[str], None], **overrides) -> Phase:
    """One phase: `critical` None (backlog alone), "lane" or "standard" (where they are produced)."""
    # The lane is opt-in (README "Priority lane"): on here unless the phase is the job without it.
    lane = "" if critical == "standard" else (workspace.base.priority_lane or "critical")
    settings = with_overrides(workspace.schema(name), priority_lane=lane)
    settings = with_overrides(workspace.job_topics(settings, name, options.partitions), **overrides)
    began = time.perf_counter()
    produce(settings, backlog)
    expected = len(backlog)
    progress(f"{name}: {expected:,} backlog mutations produced in {time.perf_counter() - began:.1f}s; starting the job")
    # Enough for the slowest drain in reason; made before the clock starts.
    messages = critical_messages(int(options.rate * (expected / 2000 + 120)), name) if critical else []
    job = Job(settings, until_idle=False, workers=options.workers)
    produced = 0
    try:
        _wait(lambda: _backlog_decided(settings) > 0, 300, "the first commit", job)
        if critical is not None:
            producer = PacedProducer(settings, topic=settings.lane_topic if critical == "lane" else None)
            drained = threading.Event()
            stopper = threading.Thread(target=lambda: (
                _wait(lambda: _backlog_decided(settings) >= expected, max(600.0, expected / 500), "the drain", job),
                drained.set()), daemon=True)
            stopper.start()
            produced = producer.until(messages, options.rate, drained.is_set)
            stopper.join()
            progress(f"{name}: backlog drained; {produced:,} critical mutations produced meanwhile")
            _wait(lambda: _query(settings, "SELECT count(*) FROM mutation_log WHERE entity_type = %s",
                                 (CRITICAL_TYPE,))[0] >= produced, 600, "every critical mutation decided", job)
        else:
            _wait(lambda: _backlog_decided(settings) >= expected, max(600.0, expected / 500), "the drain", job)
    finally:
        job.stop()
        run = job.wait(timeout_s=120)
    if run.returncode != 0:
        raise RuntimeError(f"{name}: mutagg run failed ({run.returncode}):\n{run.stderr_tail}")
    count, first, last = _query(settings, "SELECT count(*), min(decided_at), max(decided_at) FROM mutation_log "
                                          "WHERE entity_type <> %s", (CRITICAL_TYPE,))
    phase = Phase(count, (last - first).total_seconds())
    if critical is not None:
        rows, percentiles, worst = _query(settings, (
            "SELECT count(*), percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP "
            "(ORDER BY extract(epoch FROM decided_at - kafka_timestamp)), "
            "max(extract(epoch FROM decided_at - kafka_timestamp)) FROM mutation_log "
            "WHERE entity_type = %s AND kafka_timestamp <= %s"), (CRITICAL_TYPE, last))
        phase.critical = rows
        if percentiles is not None:
            phase.p50_ms, phase.p95_ms, phase.p99_ms = (v * 1000 for v in percentiles)
            phase.max_ms = float(worst) * 1000
    progress(f"{name}: drained {phase.drained:,} in {phase.drain_s:.1f}s = {phase.drain_rate:,.0f}/s"
             + (f"; critical p50 {phase.p50_ms:,.0f} ms, p99 {phase.p99_ms:,.0f} ms" if phase.p99_ms else ""))
    return phase


KINDS = ("alone", "lane", "unshrunk", "standard")


def critical_bench(workspace: Workspace, options: CriticalOptions, header: list[str],
                   progress: Callable[[str], None]) -> Report:
    report = Report([*header, f"mutagg bench --critical: a backlog of {options.backlog:,} standard mutations, "
                                f"{options.rate:g}/s critical ({CRITICAL_TYPE}) produced while it drains, "
                                f"{options.rounds} round(s) of (a), (b), (b'), (c); the machine is shared and "
                                "noisy: compare within a round"])
    began = time.perf_counter()
    backlog = backlog_messages(options.backlog, options.seed)
    progress(f"generated {len(backlog):,} backlog messages in {time.perf_counter() - began:.1f}s")
    titles = {"alone": "(a) backlog alone (lane topic empty)", "lane": "(b) backlog + critical on the lane",
              "unshrunk": f"(b') as (b), standard parts never shrunk ({workspace.base.batch_size})",
              "standard": "(c) baseline: critical on the standard topic, lane off"}
    rounds: list[dict[str, Phase]] = []
    for number in range(1, options.rounds + 1):
        def phase(kind: str, critical: str | None, number: int = number, **overrides) -> Phase:
            return run_phase(workspace, f"{kind}{number}", backlog, options, critical, progress, **overrides)

        phases = {
            "alone": phase("alone", None),
            "lane": phase("lane", "lane"),
            # The levers of smaller standard parts while the lane is busy (the cap and the commit-time
            # target), off: what they buy.
            "unshrunk": phase("unshrunk", "lane", lane_batch_size=workspace.base.batch_size,
                              lane_commit_target_s=3600.0),
            "standard": phase("standard", "standard"),
        }
        rounds.append(phases)
        suffix = f" [round {number}]" if options.rounds > 1 else ""
        for key, result in phases.items():
            report.results[f"{key}_backlog{number}"] = Result(
                f"{titles[key]}: backlog drain{suffix}", result.drained, result.drain_s, "mutations")
            if result.critical:
                report.results[f"{key}_critical{number}"] = Result(
                    f"{titles[key]}: critical, append to commit{suffix}", result.critical, result.drain_s,
                    "mutations", result.p50_ms, result.p95_ms, result.p99_ms,
                    note=f"max {result.max_ms:,.0f} ms; those appended before the backlog's last commit")
        for key, result in phases.items():
            report.check(f"{key}{number}: every backlog mutation decided", result.drained, options.backlog)
    report.notes.append("")
    for number, phases in enumerate(rounds, 1):
        alone, lane, unshrunk, standard = (phases[k] for k in KINDS)
        ratio = lane.drain_rate / alone.drain_rate if alone.drain_rate else 0.0
        ratio_unshrunk = unshrunk.drain_rate / alone.drain_rate if alone.drain_rate else 0.0
        report.notes += [
            f"Round {number}: drain (a) {alone.drain_rate:,.0f}/s, (b) {lane.drain_rate:,.0f}/s, "
            f"(b') {unshrunk.drain_rate:,.0f}/s, (c) {standard.drain_rate:,.0f}/s; (b)/(a) = {ratio:.2f} "
            f"(target >= {TARGET_DRAIN_RATIO:g}: {'met' if ratio >= TARGET_DRAIN_RATIO else 'NOT met'}), "
            f"(b')/(a) = {ratio_unshrunk:.2f}",
            f"  critical p99 append-to-commit: (b) {_ms(lane.p99_ms)} ms (target <= {TARGET_P99_MS:,.0f} ms: "
            f"{'met' if lane.p99_ms is not None and lane.p99_ms <= TARGET_P99_MS else 'NOT met'}), "
            f"(b') {_ms(unshrunk.p99_ms)} ms, (c) baseline {_ms(standard.p99_ms)} ms",
        ]
    if len(rounds) > 1:
        ratios = sorted(r["lane"].drain_rate / r["alone"].drain_rate for r in rounds if r["alone"].drain_rate)
        p99s = sorted(r["lane"].p99_ms for r in rounds if r["lane"].p99_ms is not None)
        report.notes.append(f"Median over rounds: (b)/(a) {statistics.median(ratios):.2f}, (b) critical p99 "
                            f"{_ms(statistics.median(p99s)) if p99s else '-'} ms")
    return report


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"
