"""The peer: Kafka Connect standalone with the Debezium JDBC sink connector,
upserting the same entity rows into the same PostgreSQL (records and tables:
`bench.peer_records`), configured as its own documentation allows for
throughput (`at_its_best`; the comparison with its defaults is
`python -m bench.peer_tuning`, figures in BENCHMARKS.md).

Done when the last record of every partition has landed (its entity at its
final version), checked by key every 0.1 s; the table counts and version sums
are checked after that. Steady span: from the first row written (its
`peer_written_at` stamp) to that moment.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from bench.peer_records import WRITTEN_AT, Finals
from bench.pipeline import Measured
from bench.rows import Expected
from bench.steady import steady_seconds
from mutagg.ports import free_port
from mutagg.settings import Settings
from schemas.registry import Registry

CONNECT_SCRIPT = Path(__file__).resolve().parent.parent / "services" / "connect" / "connect.sh"
DONE_POLL_S = 0.1  # the last row's moment is known to within this
HEALTH_POLL_S = 1.0  # the worker's process and its task status (a REST call) are checked this often


@dataclass(frozen=True)
class PeerTuning:
    """The Debezium JDBC sink's throughput settings, as its documentation names them."""

    batch_size: int  # batch.size: records per flush
    reduction_buffer: bool  # use.reduction.buffer: the last record per key in a batch, like our coalescing
    max_poll_records: int  # consumer.override.max.poll.records
    tasks: int  # tasks.max

    def properties(self) -> dict[str, str]:
        return {
            "tasks.max": str(self.tasks), "batch.size": str(self.batch_size),
            "use.reduction.buffer": str(self.reduction_buffer).lower(),
            "consumer.override.max.poll.records": str(self.max_poll_records),
        }

    def describe(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.properties().items())


CONNECTOR_DEFAULTS = PeerTuning(batch_size=500, reduction_buffer=False, max_poll_records=500, tasks=1)


def at_its_best(partitions: int) -> PeerTuning:
    """The fastest measured on the bench's workload (BENCHMARKS.md, "The peer at its best"):
    large batches reduced per key, large polls, and a task per input partition."""
    return PeerTuning(batch_size=5000, reduction_buffer=True, max_poll_records=5000, tasks=partitions)


@dataclass
class PeerRun:
    records: int
    seconds: float  # from starting the worker until every row is there
    first_row_s: float | None  # from starting the worker until the first row was written
    steady_seconds: float | None  # from the first row written until every row is there
    peak_rss_mib: float
    cpu_s: float
    entities: dict[str, int]
    version_sums: dict[str, int]


def connect_libs() -> str:
    result = subprocess.run(["bash", str(CONNECT_SCRIPT), "libs"], check=True, capture_output=True, text=True)
    return result.stdout.strip()


def _properties(path: Path, values: dict[str, str]) -> None:
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))


def run_connect(
    settings: Settings, schema: str, topics: list[str], registry: Registry, expected: Expected, finals: Finals,
    records: int, timeout_s: float, tuning: PeerTuning,
) -> PeerRun:
    """Start the worker with the connector, wait until every row is there, stop it."""
    libs = connect_libs()
    db = conninfo_to_dict(settings.database_url)
    jdbc_url = (f"jdbc:postgresql://{db.get('host', '127.0.0.1')}:{db.get('port', 5432)}/{db['dbname']}"
                f"?currentSchema={schema}&stringtype=unspecified")
    port = free_port()
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
            # Lets the connector set its own consumer's max.poll.records (consumer.override.*).
            "connector.client.config.override.policy": "All",
        })
        _properties(folder / "connector.properties", {
            "name": name, "connector.class": "io.debezium.connector.jdbc.JdbcSinkConnector",
            "topics": ",".join(topics), "connection.url": jdbc_url,
            "connection.username": db.get("user", "postgres"), "connection.password": db.get("password", ""),
            "insert.mode": "upsert", "primary.key.mode": "record_key", "delete.enabled": "false",
            "schema.evolution": "none",
            # Qualified: unqualified names are looked up in every schema (it found other runs' tables).
            "collection.name.format": f"{schema}.${{topic}}",
            "transforms": "route", "transforms.route.type": "org.apache.kafka.connect.transforms.RegexRouter",
            "transforms.route.regex": r".*\.peer\.(.*)", "transforms.route.replacement": "$1",
            **tuning.properties(),
        })
        started = time.time()
        process = Measured(
            ["java", "-Xmx1g", f"-Dlog4j2.configurationFile={folder / 'log4j2.properties'}",
             "-cp", f"{libs}/*", "org.apache.kafka.connect.cli.ConnectStandalone",
             str(folder / "worker.properties"), str(folder / "connector.properties")],
            None, subprocess.DEVNULL, cwd=scratch,
        )
        health = _Health(process, port, name, started + timeout_s, folder)
        try:
            done = _wait_for_rows(settings, registry, expected, finals, health)
        finally:
            process.stop()
            usage = process.wait(60)
    counts, sums = _table_state(settings, expected)
    first = _first_written(settings, expected)
    return PeerRun(records, done - started, None if first is None else first - started,
                   steady_seconds(first, done), usage.peak_rss_mib, usage.cpu_s, counts, sums)


def _table_state(settings: Settings, expected: Expected) -> tuple[dict[str, int], dict[str, int]]:
    counts, sums = {}, {}
    with psycopg.connect(settings.database_url) as connection:
        for type_name in expected.entities:
            count, total = connection.execute(
                f'SELECT count(*), coalesce(sum(version), 0) FROM "{type_name}"'
            ).fetchone()
            counts[type_name], sums[type_name] = count, int(total)
    return counts, sums


def _first_written(settings: Settings, expected: Expected) -> float | None:
    """Epoch seconds of the first row the sink wrote (its insert stamp)."""
    union = sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT min({}) FROM {}").format(sql.Identifier(WRITTEN_AT), sql.Identifier(table))
        for table in expected.entities
    )
    with psycopg.connect(settings.database_url) as connection:
        first = connection.execute(sql.SQL("SELECT extract(epoch FROM min(m)) FROM ({}) AS f(m)").format(union))
        value = first.fetchone()[0]
    return None if value is None else float(value)


@dataclass
class _Health:
    """The worker's process and its connector's task status, checked every `HEALTH_POLL_S`."""

    process: Measured
    port: int
    name: str
    give_up: float  # epoch seconds
    folder: Path
    next_check: float = 0.0

    def check(self, now: float) -> None:
        if now < self.next_check:
            return
        self.next_check = now + HEALTH_POLL_S
        if self.process.poll() is not None:
            raise RuntimeError(f"Kafka Connect exited ({self.process.poll()}):\n{_log_tail(self.folder)}")
        failure = _task_failure(self.port, self.name)
        if failure:
            raise RuntimeError(f"Debezium JDBC sink task failed: {failure[:3000]}")
        if now > self.give_up:
            raise RuntimeError(f"peer did not land every row in time:\n{_log_tail(self.folder)}")


def _wait_for_rows(
    settings: Settings, registry: Registry, expected: Expected, finals: Finals, health: _Health
) -> float:
    """Epoch seconds when the last record of every partition was seen landed: a look-up by key
    every `DONE_POLL_S` (cheap next to the sink's work). Then the whole tables are checked, and
    waited for should a flush have landed a partition's last record before its earlier ones."""
    wanted = finals.expected()
    keys = {t.table: t.key for t in registry}
    query = sql.SQL(" UNION ALL ").join(
        sql.SQL("SELECT {table}, {key}, version FROM {ident} WHERE {key} = ANY(%s)").format(
            table=sql.Literal(table), key=sql.Identifier(keys[table]), ident=sql.Identifier(table))
        for table in wanted
    )
    arguments = [list(ids) for ids in wanted.values()]
    with psycopg.connect(settings.database_url, autocommit=True) as connection:
        while True:
            landed = {}
            for table, entity_id, version in connection.execute(query, arguments):
                landed.setdefault(table, {})[entity_id] = version
            done = time.time()
            if landed == wanted:
                break
            health.check(done)
            time.sleep(DONE_POLL_S)
    while _table_state(settings, expected) != (expected.entities, expected.version_sums):
        health.check(time.time())
        time.sleep(0.5)
        done = time.time()
    return done


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
