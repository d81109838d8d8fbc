"""What `mutagg verify` checks about the input and the acknowledgements.

- `check_gaps`: every input offset below a partition's resume point (`source_offsets`)
  is accounted for: a ledger row (`mutation_log`, or `mutation_log_history` once a DLQ
  replay decided its id anew), a later copy (`mutation_duplicates`), a DLQ record (its
  `mutagg.source.*` headers: messages with no readable id, or unauthenticated, are only
  there), or a recorded lost range (`input_gaps`). An offset nobody accounts for is read
  back from the input topic first: a transaction marker or a compacted-away record holds
  no message and is no gap.
- `check_acks`: every settled ledger row with an edge node has an ack on the status topic
  equal to it (status, reason, entity version: the rule of the integration tests), and no
  ack contradicts the ledger; an ack equal to a revised row (`mutation_log_history`, a
  DLQ replay decided the id anew) is the one allowed difference.

A row is *settled* when its input offset is below its partition's resume point: the job
records that point only once everything below it is committed, exported and acknowledged,
so a running job never makes verify report its batch in flight.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime

import orjson
import psycopg

from mutagg.verify_topics import Span, TopicReader, header

SAMPLES = 3
"""Examples shown per kind of problem."""
Ack = tuple[str, str | None, int | None]
"""What an ack must agree on with the ledger: status, reason, entity version."""


@dataclass
class Finding:
    """One check's result: problems by kind, informational counts, a few examples."""

    name: str
    checked: int = 0
    problems: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)
    repairable: set[str] = field(default_factory=set)
    """What `--repair` can fix: mutation ids to re-acknowledge, or batch ids to re-export."""

    def problem(self, kind: str, count: int = 1, sample: str | None = None) -> None:
        self.problems[kind] += count
        if sample is not None and sum(s.startswith(f"{kind}: ") for s in self.samples) < SAMPLES:
            self.samples.append(f"{kind}: {sample}")

    @property
    def total(self) -> int:
        return sum(self.problems.values())

    def merged(self, other: Finding) -> Finding:
        """This finding and `other` (the same check on another input topic) as one."""
        return Finding(self.name, self.checked + other.checked, self.problems + other.problems,
                       self.notes + other.notes, (self.samples + other.samples)[: 2 * SAMPLES],
                       self.repairable | other.repairable)


@dataclass(frozen=True)
class Scope:
    """What one verification covers: the input topic, its resume points read first, a start time."""

    topic: str
    resume: dict[int, int]
    since: datetime | None

    @property
    def since_ms(self) -> int | None:
        return None if self.since is None else int(self.since.timestamp() * 1000)

    def settled(self, partition: int | None, offset: int | None) -> bool:
        return partition is not None and offset is not None and offset < self.resume.get(partition, 0)


@dataclass(frozen=True, slots=True)
class LedgerRow:
    mutation_id: str
    status: str
    reason: str | None
    version: int | None
    edge_node_id: str | None
    batch_id: str | None
    decided_at: datetime

    @property
    def ack(self) -> Ack:
        return (self.status, self.reason, self.version)


def resume_points(connection: psycopg.Connection, topic: str) -> dict[int, int]:
    return dict(connection.execute(
        "SELECT kafka_partition, next_offset FROM source_offsets WHERE kafka_topic = %s", (topic,)).fetchall())


def settled_ledger(connection: psycopg.Connection, scope: Scope) -> list[LedgerRow]:
    """Ledger rows decided since the scope's start whose input offsets are below the resume points."""
    rows = connection.execute(
        "SELECT mutation_id, status, reason, version, edge_node_id, batch_id, decided_at, kafka_partition, "
        "kafka_offset FROM mutation_log WHERE kafka_topic = %s AND (%s::timestamptz IS NULL OR decided_at >= %s)",
        (scope.topic, scope.since, scope.since),
    ).fetchall()
    return [LedgerRow(*row[:7]) for row in rows if scope.settled(row[7], row[8])]


# -- gaps ------------------------------------------------------------------------------------

_ACCOUNTED = """
SELECT kafka_partition, array_agg(kafka_offset) FROM (
    SELECT kafka_partition, kafka_offset FROM mutation_log WHERE kafka_topic = %(topic)s
    UNION ALL SELECT kafka_partition, kafka_offset FROM mutation_log_history WHERE kafka_topic = %(topic)s
    UNION ALL SELECT kafka_partition, kafka_offset FROM mutation_duplicates WHERE kafka_topic = %(topic)s
) accounted JOIN unnest(%(partitions)s::int[], %(starts)s::bigint[], %(ends)s::bigint[]) AS bounds(p, first, after)
    ON kafka_partition = bounds.p AND kafka_offset >= bounds.first AND kafka_offset < bounds.after
GROUP BY 1
"""


def lost_ranges(connection: psycopg.Connection, topic: str) -> dict[int, list[tuple[int, int]]]:
    """Input ranges [from, to) the job recorded as lost to retention (`input_gaps`, when migrated)."""
    if connection.execute("SELECT to_regclass('input_gaps')").fetchone()[0] is None:
        return {}
    ranges: dict[int, list[tuple[int, int]]] = {}
    for partition, first, end in connection.execute(
        "SELECT kafka_partition, from_offset, to_offset FROM input_gaps WHERE kafka_topic = %s", (topic,)
    ).fetchall():
        ranges.setdefault(partition, []).append((first, end))
    return ranges


def unaccounted(start: int, end: int, offsets: list[int], ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The runs [a, b) of [start, end) that neither `offsets` nor `ranges` cover. Pure."""
    covered = sorted([(o, o + 1) for o in offsets if start <= o < end] + ranges)
    runs, position = [], start
    for first, after in covered:
        if first > position:
            runs.append((position, min(first, end)))
        position = max(position, after)
        if position >= end:
            break
    if position < end:
        runs.append((position, end))
    return [(a, b) for a, b in runs if a < b]


def dlq_sources(dlq: TopicReader, spans: dict[int, Span], input_topic: str) -> tuple[dict[int, list[int]], int]:
    """Input offsets the DLQ holds, per input partition, and how many DLQ records were read."""
    found: dict[int, set[int]] = {}
    records = 0
    for message in dlq.records(spans):
        records += 1
        if header(message, "mutagg.source.topic") != input_topic:
            continue
        partition, offset = header(message, "mutagg.source.partition"), header(message, "mutagg.source.offset")
        if partition is not None and offset is not None:
            found.setdefault(int(partition), set()).add(int(offset))
    return {p: sorted(o) for p, o in found.items()}, records


def check_gaps(
    connection: psycopg.Connection, scope: Scope, source: TopicReader, dlq: TopicReader
) -> tuple[Finding, dict[str, float]]:
    """Unaccounted input offsets below the resume points; also the DLQ's repeat factor."""
    finding = Finding("gaps")
    source_spans = source.spans(scope.since_ms)
    bounds = {p: (0 if scope.since is None or p not in source_spans else min(source_spans[p].start, end), end)
              for p, end in scope.resume.items()}
    partitions = sorted(bounds)
    accounted = dict(connection.execute(_ACCOUNTED, {
        "topic": scope.topic, "partitions": partitions, "starts": [bounds[p][0] for p in partitions],
        "ends": [bounds[p][1] for p in partitions]}).fetchall())
    lost = lost_ranges(connection, scope.topic)
    dlq_spans = dlq.spans(scope.since_ms)
    on_dlq, dlq_records = dlq_sources(dlq, dlq_spans, scope.topic)
    dlq_horizon = dlq.horizon_ms(dlq_spans)
    distinct = sum(len(o) for o in on_dlq.values())
    stats = {"dlq_records": dlq_records, "dlq_messages": distinct,
             "dlq_repeat_factor": round(dlq_records / distinct, 2) if distinct else 1.0}
    for partition, (start, end) in sorted(bounds.items()):
        span = source_spans.get(partition)
        finding.checked += max(0, end - start)
        offsets = (accounted.get(partition) or []) + on_dlq.get(partition, [])
        for first, after in unaccounted(start, end, offsets, lost.get(partition, [])):
            _confirm(finding, source, span, partition, first, after, dlq_horizon)
    return finding, stats


def _confirm(
    finding: Finding, source: TopicReader, span: Span | None, partition: int, first: int, after: int,
    dlq_horizon: int | None,
) -> None:
    """Read an unaccounted run back from the input: what holds a message is a gap (or, older
    than what the DLQ still holds, unverifiable); what is below the broker's low watermark
    is a gap unless the DLQ lost records too."""
    low = span.low if span is not None else after
    if first < low:
        below = min(after, low) - first
        if dlq_horizon is None:
            finding.problem("unaccounted", below, f"{source.topic}[{partition}] offsets {first}..{first + below - 1}")
        else:
            finding.notes["unverifiable (input and DLQ past retention)"] += below
        first = min(after, low)
    if first >= after:
        return
    present = source.records({partition: Span(partition, low, after, first)})
    run: list[int] = []
    for message in present:
        if dlq_horizon is not None and message.timestamp()[1] < dlq_horizon:
            finding.notes["unverifiable (DLQ past retention)"] += 1
            continue
        run.append(message.offset())
    if run:
        where = f"{source.topic}[{partition}] offsets {run[0]}..{run[-1]}" if len(run) > 1 else \
            f"{source.topic}[{partition}] offset {run[0]}"
        finding.problem("unaccounted", len(run), where)


# -- acks ------------------------------------------------------------------------------------


def read_acks(status: TopicReader, since_ms: int | None) -> tuple[dict[str, Ack], dict[str, set[Ack]], int]:
    """Acks on the status topic since `since_ms`: the first per id, every other variant per id
    (rare: acks repeat the same decision), and how many records were read."""
    first: dict[str, Ack] = {}
    others: dict[str, set[Ack]] = {}
    records = 0
    for message in status.records(status.spans(since_ms)):
        records += 1
        try:
            ack = orjson.loads(message.value())
            mutation_id, decided = ack["mutation_id"], (ack["status"], ack["reason"], ack["entity_version"])
        except (orjson.JSONDecodeError, KeyError, TypeError):
            others.setdefault("", set()).add(("UNREADABLE", None, None))
            continue
        seen = first.setdefault(mutation_id, decided)
        if seen != decided:
            others.setdefault(mutation_id, set()).add(decided)
    return first, others, records


def check_acks(
    connection: psycopg.Connection, scope: Scope, rows: list[LedgerRow], status: TopicReader
) -> Finding:
    """Settled ledger rows without an equal ack (repairable), and acks that contradict the ledger."""
    finding = Finding("acks")
    margin_ms = 10 * 60 * 1000  # an ack is produced after its decision; clocks of hosts differ a little
    spans = status.spans(None if scope.since_ms is None else scope.since_ms - margin_ms)
    horizon = status.horizon_ms(spans)
    first, others, records = read_acks(status, None if scope.since_ms is None else scope.since_ms - margin_ms)
    finding.notes["acks read"] = records
    unreadable = len(others.pop("", ()))
    if unreadable:
        finding.problem("unreadable ack", unreadable)
    ledger = {row.mutation_id: row.ack for row in rows}
    for row in rows:
        if row.edge_node_id is None:
            finding.notes["no edge node (never acknowledged)"] += 1
            continue
        if horizon is not None and row.decided_at.timestamp() * 1000 < horizon:
            finding.notes["older than the status topic's retention"] += 1
            continue
        finding.checked += 1
        if first.get(row.mutation_id) != row.ack and row.ack not in others.get(row.mutation_id, ()):
            finding.problem("missing", 1, row.mutation_id)
            finding.repairable.add(row.mutation_id)
    # Acks of ids outside the settled rows: decided earlier, later, or not at all.
    ledger.update(_ledger_acks(connection, sorted(set(first) - set(ledger))))
    history = _history_acks(connection, sorted(
        i for i in set(first) | set(others)
        if i not in ledger or first[i] != ledger[i] or i in others))
    for mutation_id, decided in first.items():
        for ack in (decided, *others.get(mutation_id, ())):
            if mutation_id not in ledger and ack not in history.get(mutation_id, ()):
                finding.problem("ack without a ledger row", 1, f"{mutation_id} {ack}")
            elif mutation_id in ledger and ack != ledger[mutation_id] and ack not in history.get(mutation_id, ()):
                finding.problem("contradicts the ledger", 1, f"{mutation_id} acked {ack}, ledger {ledger[mutation_id]}")
    return finding


def _ledger_acks(connection: psycopg.Connection, ids: list[str]) -> dict[str, Ack]:
    found: dict[str, Ack] = {}
    for start in range(0, len(ids), 50_000):
        for mutation_id, *decided in connection.execute(
            "SELECT mutation_id, status, reason, version FROM mutation_log WHERE mutation_id = ANY(%s)",
            (ids[start:start + 50_000],),
        ).fetchall():
            found[mutation_id] = tuple(decided)
    return found


def _history_acks(connection: psycopg.Connection, ids: list[str]) -> dict[str, set[Ack]]:
    found: dict[str, set[Ack]] = {}
    for start in range(0, len(ids), 50_000):
        for mutation_id, *decided in connection.execute(
            "SELECT mutation_id, status, reason, version FROM mutation_log_history WHERE mutation_id = ANY(%s)",
            (ids[start:start + 50_000],),
        ).fetchall():
            found.setdefault(mutation_id, set()).add(tuple(decided))
    return found
