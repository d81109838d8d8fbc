"""The naive baseline: the original design's pseudo-code, row by row.

For each message: parse it, then one UPDATE of the entity row (or, when no row
was there, one INSERT), then one INSERT into the log; a COMMIT every 100
mutations. Every statement is its own round trip (psycopg `execute`). It reads
no Kafka and decides no conflicts, so it is a generous baseline.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from bench.steady import OutputClock, Timing
from mutagg.settings import Settings
from mutagg.workload import Message
from schemas.mutation import Mutation, Operation, RawMessage, decode
from schemas.registry import EntityType, Registry

TRANSACTION_SIZE = 100


def _value(attribute_type: str, value):
    return Jsonb(value) if attribute_type == "json" and value is not None else value


def naive_apply(settings: Settings, registry: Registry, messages: list[Message]) -> tuple[int, Timing]:
    """(mutations applied, timing) for the row-by-row path over `messages` on a migrated schema;
    steady: first commit to last."""
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    applied = 0
    with psycopg.connect(settings.database_url) as connection, connection.cursor() as cursor:
        # As the job: the foreign-writer trigger (a feature of this project, not of the seed) is skipped.
        cursor.execute("SELECT set_config('mutagg.writer', 'job', false)")
        connection.commit()
        began = time.perf_counter()
        commits = OutputClock()
        in_transaction = 0
        for offset, message in enumerate(messages):
            mutation = decode(RawMessage("naive", 0, offset, message.key, message.value, now_ms), registry)
            if not isinstance(mutation, Mutation):
                continue
            _apply_one(cursor, registry.entity_types[mutation.entity_type], mutation)
            cursor.execute(
                "INSERT INTO mutation_log (mutation_id, status, entity_type, entity_id, edge_node_id, "
                "operation, base_version, kafka_topic, kafka_partition, kafka_offset) "
                "VALUES (%s, 'APPLIED', %s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (mutation_id) DO NOTHING",
                (mutation.id, mutation.entity_type, mutation.entity_id, mutation.edge_node_id,
                 mutation.operation.value, mutation.base_version, "naive", 0, offset),
            )
            applied += 1
            in_transaction += 1
            if in_transaction == TRANSACTION_SIZE:
                connection.commit()
                commits.mark()
                in_transaction = 0
        if in_transaction:
            connection.commit()
            commits.mark()
        return applied, Timing(time.perf_counter() - began, commits.seconds)


def _apply_one(cursor: psycopg.Cursor, entity_type: EntityType, mutation: Mutation) -> None:
    table, key = sql.Identifier(entity_type.table), sql.Identifier(entity_type.key)
    if mutation.operation is Operation.DELETE:
        cursor.execute(
            sql.SQL("UPDATE {} SET deleted = true, version = version + 1 WHERE {} = %s").format(table, key),
            (mutation.entity_id,),
        )
        return
    names = list(mutation.attributes)
    values = [_value(entity_type.attributes[n].type, mutation.attributes[n]) for n in names]
    assignments = sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(n)) for n in names)
    cursor.execute(
        sql.SQL("UPDATE {} SET {}{}version = version + 1, deleted = false WHERE {} = %s").format(
            table, assignments, sql.SQL(", ") if names else sql.SQL(""), key
        ),
        (*values, mutation.entity_id),
    )
    if cursor.rowcount == 0:
        columns = sql.SQL(", ").join(map(sql.Identifier, [entity_type.key, *names]))
        placeholders = sql.SQL(", ").join(sql.Placeholder() * (len(names) + 1))
        cursor.execute(
            sql.SQL("INSERT INTO {} ({}, version) VALUES ({}, 1)").format(table, columns, placeholders),
            (mutation.entity_id, *values),
        )
