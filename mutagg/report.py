"""Summaries read back from the database: what the demo prints and `mutagg status` shows."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from mutagg.dlq import dlq_census
from schemas.errors import MutaggError
from schemas.registry import Registry


def summary(connection: psycopg.Connection, registry: Registry) -> dict[str, Any]:
    by_status = connection.execute(
        "SELECT status, COALESCE(reason, ''), count(*) FROM mutation_log GROUP BY 1, 2 ORDER BY 1, 2"
    ).fetchall()
    conflicts = connection.execute(
        "SELECT strategy, status, COALESCE(winner, '-'), count(*) FROM conflicts GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    ).fetchall()
    rows = {}
    for entity_type in registry:
        live, deleted = connection.execute(
            sql.SQL("SELECT count(*) FILTER (WHERE NOT deleted), count(*) FILTER (WHERE deleted) FROM {}").format(
                sql.Identifier(entity_type.table)
            )
        ).fetchone()
        rows[entity_type.table] = {"live": live, "deleted": deleted}
    span = connection.execute(
        "SELECT count(*), min(decided_at), max(decided_at), "
        "percentile_cont(ARRAY[0.5, 0.95, 0.99]) "
        "WITHIN GROUP (ORDER BY extract(epoch FROM decided_at - kafka_timestamp)) "
        "FROM mutation_log WHERE kafka_timestamp IS NOT NULL"
    ).fetchone()
    duplicates = connection.execute("SELECT count(*) FROM mutation_duplicates").fetchone()[0]
    open_conflicts = connection.execute("SELECT count(*) FROM conflicts WHERE status = 'OPEN'").fetchone()[0]
    return {
        "by_status": by_status,
        "conflicts": conflicts,
        "rows": rows,
        "ledger_rows": span[0],
        "first_decision": span[1],
        "last_decision": span[2],
        "duplicates": duplicates,
        "open_conflicts": open_conflicts,
    }


def format_summary(
    report: dict[str, Any], elapsed_s: float | None = None, delivered: int | None = None,
    dead_lettered: int | None = None,
) -> str:
    lines = ["Mutations by status (ledger):"]
    for status, reason, count in report["by_status"]:
        lines.append(f"  {status:<9} {reason or '':<22} {count:>9}")
    lines.append(f"  {'DUPLICATE':<9} {'(re-delivered ids)':<22} {report['duplicates']:>9}")
    lines.append("Conflicts by strategy:")
    if not report["conflicts"]:
        lines.append("  (none)")
    for strategy, status, winner, count in report["conflicts"]:
        lines.append(f"  {strategy:<17} {status:<17} winner={winner:<9} {count:>7}")
    lines.append("Rows per table:")
    for table, counts in report["rows"].items():
        lines.append(f"  {table:<14} live={counts['live']:>7} deleted={counts['deleted']:>6}")
    lines.append(f"Open manual conflicts: {report['open_conflicts']}")
    if dead_lettered is not None:
        lines.append(f"Dead-lettered (DLQ, with reasons in headers): {dead_lettered}")
    if elapsed_s and delivered is not None:
        lines.append(
            f"Throughput: {delivered} messages in {elapsed_s:.2f}s = {delivered / elapsed_s:,.0f} messages/s "
            "(whole run: job start-up, Kafka read, commit, audit export, acknowledgement; see `mutagg bench`)"
        )
    return "\n".join(lines)


def live_view(connection: psycopg.Connection, settings) -> dict[str, Any]:
    """What an operator wants now: lag per partition, last minute's throughput, last commit, and the
    DLQ: its records and the distinct input messages they stand for (repeats after a crash count once)."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    view: dict[str, Any] = {}
    view["last_minute"] = connection.execute(
        "SELECT count(*) FROM mutation_log WHERE decided_at > clock_timestamp() - interval '1 minute'"
    ).fetchone()[0]
    view["last_commit"] = connection.execute("SELECT max(decided_at) FROM mutation_log").fetchone()[0]
    positions = {(topic, partition): offset for topic, partition, offset in connection.execute(
        "SELECT kafka_topic, kafka_partition, next_offset FROM source_offsets WHERE kafka_topic = ANY(%s)",
        (list(settings.input_topics()),),
    ).fetchall()}
    consumer = Consumer({**settings.kafka_client_config(), "group.id": "mutagg-status", "enable.auto.commit": False})
    try:
        view["lag"] = lag = {}
        view["lane_lag"] = lane = {}  # the priority lane's (README "Priority lane"), if its topic exists
        for topic in settings.input_topics():
            described = consumer.list_topics(topic, timeout=10).topics.get(topic)
            if described is not None and described.error is None:
                for partition in sorted(described.partitions):
                    low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
                    behind = high - max(positions.get((topic, partition), low), low)
                    (lag if topic == settings.topic_mutations else lane)[partition] = behind
    except KafkaException as exc:
        view["kafka_error"] = str(exc)
        return view
    finally:
        consumer.close()
    try:
        view["dlq"] = dlq_census(settings)
    except MutaggError as exc:  # no DLQ topic yet, or the broker went away meanwhile
        view["dlq_error"] = str(exc)
    return view


def format_live(view: dict[str, Any]) -> str:
    lines = [f"Decided in the last minute: {view['last_minute']} ({view['last_minute'] / 60:,.1f}/s)",
             f"Last commit: {view['last_commit']}"]
    if "kafka_error" in view:
        lines.append(f"Kafka: unreachable ({view['kafka_error']})")
        return "\n".join(lines)
    total = sum(view["lag"].values())
    per_partition = ", ".join(f"{p}:{n}" for p, n in view["lag"].items())
    lines.append(f"Consumer lag: {total} messages ({per_partition or 'no partitions'})")
    if view.get("lane_lag"):
        lane = view["lane_lag"]
        lines.append(f"Priority lane lag: {sum(lane.values())} messages "
                     f"({', '.join(f'{p}:{n}' for p, n in lane.items())})")
    if "dlq" in view:
        census = view["dlq"]
        lines.append(
            f"Dead-letter topic: {census.distinct} rejected messages in {census.records} records "
            f"(repeat factor {census.repeat_factor}: re-sent after crashes, each counted once)")
    else:
        lines.append(f"Dead-letter topic: unreadable ({view.get('dlq_error')})")
    return "\n".join(lines)
