"""The limit: what the database and the broker can do alone for the same work.

* Database: the rows of every micro-batch, rendered as COPY text before the
  clock starts; per batch one transaction that COPYs each entity type's touched
  rows into a staging table, upserts them with one statement per type (the
  job's own statement shape), and COPYs the ledger rows. No Python decisions,
  no row locks, no ledger look-up, no conflict rows: a ceiling, not a target.
* Kafka: a raw confluent-kafka consumer reading every partition of the input
  topic to its end, touching each record's key and value.
"""

from __future__ import annotations

import time
import uuid

import psycopg
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition
from psycopg import sql

from bench.rows import RowChunk
from bench.steady import OutputClock, Timing
from mutagg.settings import Settings
from schemas.ddl import LEDGER_COLUMNS
from schemas.registry import EntityType, Registry
from sinks import entity_rows


def database_limit(settings: Settings, registry: Registry, chunks: list[RowChunk]) -> Timing:
    """Seconds to land every chunk, one transaction each, on a migrated schema; steady: first
    commit to last."""
    with psycopg.connect(settings.database_url) as connection, connection.cursor() as cursor:
        statements = {t.name: _statements(t, _stamp_column(cursor, t.table)) for t in registry}
        connection.commit()
        began = time.perf_counter()
        commits = OutputClock()
        for chunk in chunks:
            with connection.transaction():
                cursor.execute("SET LOCAL mutagg.writer = 'job'")  # as the job: the foreign-writer trigger skips
                for type_name, (columns, csv) in sorted(chunk.entity_csv.items()):
                    create_stage, copy_stage, upsert, staging = statements[type_name]
                    cursor.execute(create_stage)
                    staging.filled(csv.count(b"\n"))  # rows, but for quoted line breaks: enough to choose
                    with cursor.copy(copy_stage(columns)) as copy:
                        copy.write(csv)
                    cursor.execute(upsert(columns))
                    cursor.execute(staging.emptying())
                with cursor.copy(_copy(sql.Identifier("mutation_log"), LEDGER_COLUMNS)) as copy:
                    copy.write(chunk.ledger_csv)
            commits.mark()
        return Timing(time.perf_counter() - began, commits.seconds)


def _copy(table: sql.Composable, columns: tuple[str, ...]) -> sql.Composable:
    return sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT csv)").format(
        table, sql.SQL(", ").join(map(sql.Identifier, columns))
    )


def _stamp_column(cursor: psycopg.Cursor, table: str) -> str | None:
    """The row's last-write stamp column, as the job's upsert sets it (its name has changed over versions)."""
    cursor.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = %s AND column_name IN ('mutagg_updated_at', 'updated_at') ORDER BY column_name",
        (table,),
    )
    names = [row[0] for row in cursor.fetchall()]
    return names[0] if names else None


def _statements(entity_type: EntityType, stamp: str | None) -> tuple:
    """The staging table, its COPY, the set-based upsert and how the staging table is emptied, as
    `sinks.entity_rows.plan` builds them."""
    table = sql.Identifier(entity_type.table)
    stage = sql.Identifier(f"_stage_{entity_type.table}")
    create = entity_rows.stage_statement(stage, table)

    def upsert(columns: tuple[str, ...]) -> sql.Composable:
        names = sql.SQL(", ").join(map(sql.Identifier, columns))
        updates = sql.SQL(", ").join(
            sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in columns if c != entity_type.key
        )
        if stamp:
            updates = sql.SQL("{}, {} = now()").format(updates, sql.Identifier(stamp))
        return sql.SQL(
            "INSERT INTO {table} ({cols}) SELECT {cols} FROM {stage} ON CONFLICT ({key}) DO UPDATE SET {updates}"
        ).format(table=table, cols=names, stage=stage, key=sql.Identifier(entity_type.key), updates=updates)

    return create, lambda columns: _copy(stage, columns), upsert, entity_rows.staging(stage)


def kafka_limit(settings: Settings, topic: str, deadline_s: float = 600.0) -> tuple[int, Timing]:
    """(records, timing) for one consumer to read every partition of `topic` from the start to its
    end; steady: from the first record received to the last."""
    consumer = Consumer({
        **settings.kafka_client_config(), "group.id": f"bench-raw-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False, "enable.partition.eof": True,
    })
    try:
        began = time.perf_counter()
        partitions = sorted(consumer.list_topics(topic, timeout=30).topics[topic].partitions)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        records, finished, size = 0, set(), 0
        received = OutputClock()
        give_up = time.monotonic() + deadline_s
        while len(finished) < len(partitions) and time.monotonic() < give_up:
            batch = consumer.consume(num_messages=10_000, timeout=1.0)
            arrived, before = time.perf_counter(), records
            for message in batch:
                error = message.error()
                if error is None:
                    records += 1
                    size += len(message.key() or b"") + len(message.value() or b"")
                elif error.code() == KafkaError._PARTITION_EOF:
                    finished.add(message.partition())
                else:
                    raise RuntimeError(f"raw consume of {topic}: {error}")
            if records > before:
                if received.first is None:
                    received.mark(arrived)  # the first records received...
                received.mark()  # ... to the last ones read and touched
        seconds = time.perf_counter() - began
    finally:
        consumer.close()
    if len(finished) < len(partitions):
        raise RuntimeError(f"raw consume of {topic} did not reach the end within {deadline_s:.0f}s")
    return records, Timing(seconds, received.seconds)
