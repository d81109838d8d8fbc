"""The peer's input and its tables: what the Debezium JDBC sink is given to do.

Every valid mutation becomes one JSON-with-schema record on its entity type's
topic, keyed by the entity key, carrying the entity's full row after that
mutation (as replayed by `bench.rows.Replayer`). Each record goes to the
partition its entity key hashes to, chosen here, so the bench knows the last
record of every partition: when each of those has landed, every record before
it in that partition has too, and the peer is done (`Finals`).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import orjson
import psycopg
from confluent_kafka import Producer
from psycopg import sql

from bench.rows import Replayer, decoded
from mutagg.settings import Settings
from mutagg.workload import Message
from operators.entity_state import EntityState
from schemas import ddl
from schemas.mutation import Mutation
from schemas.registry import EntityType, Registry
from schemas.values import to_copy_text

# Stamped by PostgreSQL when the sink inserts a row (an upsert's update keeps it): the
# first row's moment, without a trigger. The upserts never name it, so they are unchanged.
WRITTEN_AT = "peer_written_at"
_CONNECT_TYPES = {
    "string": "string", "integer": "int64", "decimal": "string", "float": "double",
    "boolean": "boolean", "timestamp": "string", "date": "string", "json": "string",
}


class PeerRecord(NamedTuple):
    topic: str
    partition: int
    key: bytes
    value: bytes


@dataclass
class Finals:
    """Per table, per partition: the entity of that partition's last record and its version then
    (its final one: all of an entity's records are in one partition)."""

    tables: dict[str, dict[int, tuple[str, int]]] = field(default_factory=dict)

    def note(self, table: str, partition: int, entity_id: str, version: int) -> None:
        self.tables.setdefault(table, {})[partition] = (entity_id, version)

    def expected(self) -> dict[str, dict[str, int]]:
        """Per table, entity id -> the version the table must show when the peer is done."""
        return {table: dict(last.values()) for table, last in self.tables.items()}


def partition_of(entity_id: str, partitions: int) -> int:
    return zlib.crc32(entity_id.encode()) % partitions


def _schemas(entity_type: EntityType) -> tuple[bytes, bytes]:
    key = {"type": "struct", "optional": False, "name": f"{entity_type.table}.Key",
           "fields": [{"field": entity_type.key, "type": "string", "optional": False}]}
    fields = [{"field": entity_type.key, "type": "string", "optional": False}]
    fields += [{"field": a.name, "type": _CONNECT_TYPES[a.type], "optional": True}
               for a in entity_type.attributes.values()]
    fields += [{"field": "version", "type": "int64", "optional": False},
               {"field": "deleted", "type": "boolean", "optional": False}]
    value = {"type": "struct", "optional": False, "name": f"{entity_type.table}.Value", "fields": fields}
    return orjson.dumps(key), orjson.dumps(value)


def _payload(entity_type: EntityType, entity_id: str, state: EntityState) -> dict:
    row = {entity_type.key: entity_id}
    for name, attribute in entity_type.attributes.items():
        value = state.values.get(name)
        row[name] = value if _CONNECT_TYPES[attribute.type] != "string" else to_copy_text(attribute.type, value)
    row["version"], row["deleted"] = state.version, state.deleted
    return row


def _envelope(schema: bytes, payload: bytes) -> bytes:
    """JsonConverter's schemas.enable=true form, from pre-serialised parts."""
    return b'{"schema":' + schema + b',"payload":' + payload + b"}"


def peer_records(
    messages: list[Message], registry: Registry, topic_prefix: str, partitions: int
) -> tuple[Iterator[PeerRecord], Replayer, Finals]:
    """A record per valid mutation; the replayer whose `finish()` says what must land; and the
    last record of each partition (filled in as the records are drawn)."""
    replayer = Replayer(registry)
    finals = Finals()
    schemas = {t.name: _schemas(t) for t in registry}

    def records() -> Iterator[PeerRecord]:
        for result in decoded(messages, registry):
            _, state = replayer.feed(result)
            if state is None:
                continue
            assert isinstance(result, Mutation)
            entity_type = registry.entity_types[result.entity_type]
            key_schema, value_schema = schemas[result.entity_type]
            key = _envelope(key_schema, orjson.dumps({entity_type.key: result.entity_id}))
            value = _envelope(value_schema, orjson.dumps(_payload(entity_type, result.entity_id, state)))
            partition = partition_of(result.entity_id, partitions)
            finals.note(entity_type.table, partition, result.entity_id, state.version)
            yield PeerRecord(f"{topic_prefix}.{entity_type.table}", partition, key, value)

    return records(), replayer, finals


def produce_records(settings: Settings, records: Iterator[PeerRecord]) -> int:
    producer = Producer({**settings.kafka_client_config(), "linger.ms": 20, "compression.type": "lz4",
                         "enable.idempotence": True})  # idempotent: each partition keeps the order produced
    count = 0
    for record in records:
        while True:
            try:
                producer.produce(record.topic, value=record.value, key=record.key, partition=record.partition)
                break
            except BufferError:
                producer.poll(0.05)
        count += 1
    if producer.flush(settings.service_deadline_s):
        raise RuntimeError("could not deliver every peer record to Kafka")
    return count


def create_tables(settings: Settings, registry: Registry) -> None:
    """The project's entity tables (DDL from the registry), without the job's trigger, with
    the insert stamp `WRITTEN_AT`."""
    with psycopg.connect(settings.database_url) as connection:
        for entity_type in registry:
            connection.execute(ddl.entity_table(entity_type))
            connection.execute(sql.SQL(
                "ALTER TABLE {} ADD COLUMN {} timestamptz NOT NULL DEFAULT clock_timestamp()"
            ).format(sql.Identifier(entity_type.table), sql.Identifier(WRITTEN_AT)))
