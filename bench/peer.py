"""The peer: Kafka Connect standalone with the Debezium JDBC sink connector,
upserting the same entity rows into the same PostgreSQL.

Every valid mutation becomes one JSON-with-schema record on its entity type's
topic, keyed by the entity key, carrying the entity's full row after that
mutation (as replayed by `bench.rows.Replayer`); the connector upserts them
into tables made with the project's DDL (no foreign-writer trigger, no ledger,
no conflict handling). Done when every table holds every entity at its final
version (sum of versions per table), which only the last record of each
entity brings.
"""

from __future__ import annotations

import json
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import psycopg
from confluent_kafka import Producer
from psycopg.conninfo import conninfo_to_dict

from bench.pipeline import Measured
from bench.rows import Expected, Replayer, decoded
from mutagg.settings import Settings
from mutagg.workload import Message
from operators.entity_state import EntityState
from schemas import ddl
from schemas.mutation import Mutation
from schemas.registry import EntityType, Registry
from schemas.values import to_copy_text

CONNECT_SCRIPT = Path(__file__).resolve().parent.parent / "services" / "connect" / "connect.sh"
_CONNECT_TYPES = {
    "string": "string", "integer": "int64", "decimal": "string", "float": "double",
    "boolean": "boolean", "timestamp": "string", "date": "string", "json": "string",
}


@dataclass
class PeerRun:
    records: int
    seconds: float  # from starting the worker until every row is there
    first_row_s: float  # from starting the worker until the first row appeared
    peak_rss_mib: float
    cpu_s: float
    entities: dict[str, int]
    version_sums: dict[str, int]


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
    messages: list[Message], registry: Registry, topic_prefix: str
) -> tuple[Iterator[tuple[str, bytes, bytes]], Replayer]:
    """(topic, key, value) per valid mutation, and the replayer whose `finish()` says what must land."""
    replayer = Replayer(registry)
    schemas = {t.name: _schemas(t) for t in registry}

    def records() -> Iterator[tuple[str, bytes, bytes]]:
        for result in decoded(messages, registry):
            _, state = replayer.feed(result)
            if state is None:
                continue
            assert isinstance(result, Mutation)
            entity_type = registry.entity_types[result.entity_type]
            key_schema, value_schema = schemas[result.entity_type]
            key = _envelope(key_schema, orjson.dumps({entity_type.key: result.entity_id}))
            value = _envelope(value_schema, orjson.dumps(_payload(entity_type, result.entity_id, state)))
            yield f"{topic_prefix}.{entity_type.table}", key, value

    return records(), replayer


def produce_records(settings: Settings, records: Iterator[tuple[str, bytes, bytes]]) -> int:
    producer = Producer({**settings.kafka_client_config(), "linger.ms": 20, "compression.type": "lz4",
                         "enable.idempotence": True})
    count = 0
    for topic, key, value in records:
        while True:
            try:
                producer.produce(topic, value=value, key=key)
                break
            except BufferError:
                producer.poll(0.05)
        count += 1
    if producer.flush(settings.service_deadline_s):
        raise RuntimeError("could not deliver every peer record to Kafka")
    return count


def create_tables(settings: Settings, registry: Registry) -> None:
    """The project's entity tables (DDL from the registry), without the job's trigger."""
    with psycopg.connect(settings.database_url) as connection:
        for entity_type in registry:
            connection.execute(ddl.entity_table(entity_type))


def connect_libs() -> str:
    result = subprocess.run(["bash", str(CONNECT_SCRIPT), "libs"], check=True, capture_output=True, text=True)
    return result.stdout.strip()


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _properties(path: Path, values: dict[str, str]) -> None:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))


def run_connect(
    settings: Settings, schema: str, topics: list[str], expected: Expected, records: int, timeout_s: float
) -> PeerRun:
    """Start the worker with the connector, wait until every row is there, stop it."""
    libs = connect_libs()
    db = conninfo_to_dict(settings.database_url)
    jdbc_url = (f"jdbc:postgresql://{db.get('host', '127.0.0.1')}:{db.get('port', 5432)}/{db['dbname']}"
                f"?currentSchema={schema}&stringtype=unspecified")
    port = _free_port()
    name = f"bench-peer-{schema}"
    with tempfile.TemporaryDirectory(prefix="mutagg-connect-") as scratch:
        folder = Path(scratch)
        (folder / "log4j2.properties").write_text(
            "status = warn\nappender.file.type = File\nappender.file.name = FILE\n"
            f"appender.file.fileName = {folder / 'connect.log'}\n"
            "appender.file.layout.type = PatternLayout\nappender.file.layout.pattern = [%d] %p %m (%c)%n\n"
            "rootLogger.level = WARN\nrootLogger.appenderRef.file.ref = FILE\n"
        )
        _properties(folder / "worker.properties", {
            "bootstrap.servers": settings.kafka_bootstrap,
            "key.converter": "org.apache.kafka.connect.json.JsonConverter",
            "value.converter": "org.apache.kafka.connect.json.JsonConverter",
            "key.converter.schemas.enable": "true", "value.converter.schemas.enable": "true",
            "offset.storage.file.filename": str(folder / "connect.offsets"),
            "listeners": f"http://127.0.0.1:{port}",
            # ServiceLoader manifests only: scanning every jar by reflection costs ~30 s of start-up here.
            "plugin.discovery": "service_load",
        })
        _properties(folder / "connector.properties", {
            "name": name, "connector.class": "io.debezium.connector.jdbc.JdbcSinkConnector", "tasks.max": "1",
            "topics": ",".join(topics), "connection.url": jdbc_url,
            "connection.username": db.get("user", "postgres"), "connection.password": db.get("password", ""),
            "insert.mode": "upsert", "primary.key.mode": "record_key", "delete.enabled": "false",
            "schema.evolution": "none",
            # Qualified: unqualified names are looked up in every schema (it found other runs' tables).
            "collection.name.format": f"{schema}.${{topic}}",
            "transforms": "route", "transforms.route.type": "org.apache.kafka.connect.transforms.RegexRouter",
            "transforms.route.regex": r".*\.peer\.(.*)", "transforms.route.replacement": "$1",
        })
        began = time.perf_counter()
        process = Measured(
            ["java", "-Xmx1g", f"-Dlog4j2.configurationFile={folder / 'log4j2.properties'}",
             "-cp", f"{libs}/*", "org.apache.kafka.connect.cli.ConnectStandalone",
             str(folder / "worker.properties"), str(folder / "connector.properties")],
            None, subprocess.DEVNULL, cwd=scratch,
        )
        try:
            first_row, done = _wait_for_rows(settings, expected, process, port, name, began, timeout_s, folder)
        finally:
            process.stop()
            usage = process.wait(60)
    counts, sums = _table_state(settings, expected)
    return PeerRun(records, done, first_row, usage.peak_rss_mib, usage.cpu_s, counts, sums)


def _table_state(settings: Settings, expected: Expected) -> tuple[dict[str, int], dict[str, int]]:
    counts, sums = {}, {}
    with psycopg.connect(settings.database_url) as connection:
        for type_name in expected.entities:
            count, total = connection.execute(
                f'SELECT count(*), coalesce(sum(version), 0) FROM "{type_name}"'
            ).fetchone()
            counts[type_name], sums[type_name] = count, int(total)
    return counts, sums


def _wait_for_rows(settings, expected, process, port, name, began, timeout_s, folder) -> tuple[float, float]:
    first_row = None
    while True:
        elapsed = time.perf_counter() - began
        counts, sums = _table_state(settings, expected)
        if first_row is None and any(counts.values()):
            first_row = elapsed
        if counts == expected.entities and sums == expected.version_sums:
            return first_row or elapsed, time.perf_counter() - began
        if process.poll() is not None:
            raise RuntimeError(f"Kafka Connect exited ({process.poll()}):\n{_log_tail(folder)}")
        failure = _task_failure(port, name)
        if failure:
            raise RuntimeError(f"Debezium JDBC sink task failed: {failure[:3000]}")
        if elapsed > timeout_s:
            raise RuntimeError(f"peer did not land every row within {timeout_s:.0f}s:\n{_log_tail(folder)}")
        time.sleep(0.5)


def _task_failure(port: int, name: str) -> str | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/connectors/{name}/status", timeout=2) as response:
            status = json.load(response)
    except OSError:
        return None  # not up yet
    for task in status.get("tasks", []):
        if task.get("state") == "FAILED":
            return task.get("trace", "FAILED")
    if status.get("connector", {}).get("state") == "FAILED":
        return status["connector"].get("trace", "FAILED")
    return None


def _log_tail(folder: Path) -> str:
    log = folder / "connect.log"
    return log.read_text(errors="replace")[-3000:] if log.exists() else "(no log)"
