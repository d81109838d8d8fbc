"""Summaries read back from the database: what the demo prints and `mutagg status` shows."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

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
