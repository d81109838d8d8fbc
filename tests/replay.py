"""A generated backlog (tests/backlog.py) through the real broker, job and database,
compared with the oracle (tests/model.py).

Each replay gets its own schema and topics. The input topic is created with
`CreateTime` (the backlog sets every Kafka timestamp; the job warns about it, as it
should), unlimited retention and no limit on timestamps ahead of the broker.

Long form: `python -m tests.backlog --messages 20000 --partitions 6 --seed 1`
(exit 1 on any difference; `--help` for the job settings it can vary).
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import psycopg
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic
from psycopg import sql

from mutagg.producer import signature_headers
from mutagg.settings import Settings, load_settings, with_overrides
from mutagg.topics import create_topics
from operators.entity_state import Provenance
from schemas.signature import Signer
from sources.kafka import list_partitions
from tests import model
from tests.backlog import Backlog, BacklogSpec, Record, generate, model_types, production_order
from tests.integration.conftest import (
    REPO,
    cluster_commands,
    delete_topics,
    drop_schema,
    new_schema,
    query,
    run_cluster,
    settings_env,
)
from tests.integration.test_semantics import REGISTRY
from tests.replay_compare import differences, expected_outcome, observed_outcome, report

TYPES = model_types(REGISTRY)
ERP_COLUMNS = {"customer": ("name", "ERP-{}"), "article": ("name", "ERP-{}"), "stock_level": ("reorder_point", None),
               "sales_order": ("status", "ERP-{}"), "order_line": ("sku", "ERP-{}")}


@dataclass(frozen=True)
class JobConfig:
    """The settings a replay varies; none of them may change what is decided (DESIGN section 4)."""

    workers: int = 1
    batch_size: int = 5000
    window_ms: int = 100
    read_chunk: int = 10_000
    dependency_timeout_s: float = 600.0
    kills: int = 0
    """SIGKILLs of the job at random moments of each segment's run, before the run that finishes it."""
    recovery: bool = False
    """Run with Bytewax recovery data (otherwise a restart resumes from the offsets in the database)."""
    shards: int = 1
    """Shards of the input partitions, each committing its own (MUTAGG_SHARDS)."""
    processes: int = 1
    """Processes of one Bytewax cluster (`workers` each)."""

    def args(self) -> list[str]:
        return ["--workers", str(self.workers)]

    def commands(self, *args: str) -> list[list[str]]:
        """`mutagg run` once per process of the cluster."""
        return cluster_commands(self.processes, *args, *self.args())

    def env(self) -> dict[str, str]:
        return {"MUTAGG_BATCH_SIZE": str(self.batch_size), "MUTAGG_WINDOW_MS": str(self.window_ms),
                "MUTAGG_READ_CHUNK": str(self.read_chunk),
                "MUTAGG_DEPENDENCY_TIMEOUT_S": repr(self.dependency_timeout_s), "MUTAGG_SHARDS": str(self.shards)}


@dataclass
class Replay:
    """One replay's result: the differences by kind, and both sides for anything else."""

    config: JobConfig
    found: dict[str, list[str]]
    expected: object
    actual: object
    seconds: float
    notes: list[str] = field(default_factory=list)


def fresh_settings(base: Settings, partitions: int) -> Settings:
    suffix = uuid.uuid4().hex[:10]
    settings = with_overrides(
        new_schema(base, f"b_{suffix}"), topic_mutations=f"b-{suffix}.in", topic_dlq=f"b-{suffix}.dlq",
        topic_status=f"b-{suffix}.status", topic_partitions=partitions,
        audit_uri=tempfile.mkdtemp(prefix=f"mutagg-backlog-{suffix}-"),  # never the checkout's audit/
    )
    admin = AdminClient(settings.kafka_client_config())  # kept: a dropped client fails its futures
    admin.create_topics([NewTopic(
        settings.topic_mutations, partitions, -1,
        config={"message.timestamp.type": "CreateTime", "retention.ms": "-1",
                "message.timestamp.after.max.ms": str(2**63 - 1), "max.message.bytes": str(4 << 20)},
    )])[settings.topic_mutations].result(timeout=60)
    list_partitions(settings.kafka_client_config(), settings.topic_mutations, 60, must_exist=False)
    create_topics(settings)  # the DLQ and status topics
    return settings


def cleanup(base: Settings, settings: Settings) -> None:
    suffix = settings.topic_mutations.split("-", 1)[1].split(".", 1)[0]
    drop_schema(base, f"b_{suffix}")
    delete_topics(settings, f"b-{suffix}.")
    shutil.rmtree(settings.audit_uri, ignore_errors=True)


def produce_records(settings: Settings, records: list[Record], signer: Signer | None = None) -> None:
    """Each record to its own partition with its own timestamp; its offset must be the one planned.
    With a `signer` (the job checks signatures), each record is signed as the node it names,
    except a forged one, which carries its own headers."""
    producer = Producer({**settings.kafka_client_config(), "enable.idempotence": True, "linger.ms": 20,
                         "compression.type": "lz4", "message.max.bytes": 8 << 20})
    wrong: list[str] = []

    def delivered(record: Record) -> Callable:
        def report_delivery(error, message) -> None:
            if error is not None or message.offset() != record.offset:
                wrong.append(f"p{record.partition}@{record.offset}: {error or message.offset()}")
        return report_delivery

    for record in records:
        while True:
            try:
                headers = record.forged_headers if record.forged_headers is not None else signature_headers(
                    signer, record.value)
                producer.produce(settings.topic_mutations, key=record.key, value=record.value,
                                 partition=record.partition, timestamp=record.timestamp_ms,
                                 headers=list(headers) if headers else None, on_delivery=delivered(record))
                break
            except BufferError:
                producer.poll(0.05)
    remaining = producer.flush(60)
    assert not remaining and not wrong, f"produced out of plan: {remaining} pending, {wrong[:5]}"


def erp_writes(settings: Settings, reference: model.Model, rng: random.Random, count: int) -> list[model.ForeignWrite]:
    """UPDATEs by the central ERP, straight into PostgreSQL (the trigger bumps the version and
    records foreign provenance); the last one writes a column's own value (a version bump only)."""
    keys = sorted(reference.entities)
    writes = []
    for number, (entity_type, entity_id) in enumerate(rng.sample(keys, min(count, len(keys)))):
        table = REGISTRY.entity_types[entity_type]
        column, text = ERP_COLUMNS[entity_type]
        value = sql.Identifier(column) if number == count - 1 else sql.Literal(
            text.format(number) if text else 900 + number)
        with psycopg.connect(settings.database_url) as connection:
            provenance, version = connection.execute(
                sql.SQL("UPDATE {} SET {} = {} WHERE {} = %s RETURNING mutagg_provenance, version").format(
                    sql.Identifier(table.table), sql.Identifier(column), value, sql.Identifier(table.key)),
                (entity_id,),
            ).fetchone()
        entry = Provenance.from_json(provenance[column]) if isinstance(provenance.get(column), list) else None
        if entry is None or entry.version != version:  # the value did not change: only the version moved
            writes.append(model.ForeignWrite(entity_type, entity_id, {}, datetime.now(UTC)))
        else:
            written = query(settings, sql.SQL("SELECT {} FROM {} WHERE {} = %s").format(
                sql.Identifier(column), sql.Identifier(table.table), sql.Identifier(table.key)).as_string(),
                (entity_id,))[0][0]
            writes.append(model.ForeignWrite(entity_type, entity_id, {column: written}, entry.timestamp))
    return writes


def run_live(
    settings: Settings, config: JobConfig, records: list[Record], first: int, expected_ids: int,
    signer: Signer | None = None, rng: random.Random | None = None,
) -> int:
    """A tailing job (no --until-idle): partition `first` is produced and decided as far as it can
    be before the other partitions get anything; then the rest; stopped once all is decided.
    With `config.kills`, the tailing job is SIGKILLed that often (every process at once, a random
    0-1 s after it committed something new) and started again, the first half of the kills while
    only partition `first` has input. Returns the kills made."""
    env = _kill_env(settings, config) if config.kills else config.env()
    rng = rng or random.Random(0)

    def start() -> list[subprocess.Popen]:  # stderr to a file: a pipe nobody reads can fill and stop the job
        jobs = []
        for command in config.commands():
            log = tempfile.TemporaryFile()
            jobs.append(subprocess.Popen(command, cwd=REPO, env=settings_env(settings, **env),
                                         stdout=subprocess.DEVNULL, stderr=log, start_new_session=True))
            jobs[-1].log = log
        return jobs

    jobs, killed = start(), 0
    try:
        produce_records(settings, [r for r in records if r.partition == first], signer)
        for _ in range(config.kills // 2):
            jobs, killed = _kill_tailing(settings, jobs, rng, start), killed + 1
        _wait_stable(settings, lambda n: n > 0, 90)
        produce_records(settings, [r for r in records if r.partition != first], signer)
        for _ in range(config.kills - config.kills // 2):
            jobs, killed = _kill_tailing(settings, jobs, rng, start), killed + 1
        _wait_stable(settings, lambda n: n >= expected_ids, 240)
    finally:
        for job in jobs:
            job.terminate()
        for job in jobs:
            job.wait(timeout=120)
    for job in jobs:
        assert job.returncode == 0, f"tailing job failed ({job.returncode}):\n{_stderr(job)}"
    return killed


def _stderr(job: subprocess.Popen) -> str:
    """The end of what a job started by `run_live` wrote to its stderr (a file)."""
    job.log.seek(0)
    return job.log.read().decode(errors="replace")[-4000:]


def _kill_tailing(settings: Settings, jobs: list[subprocess.Popen], rng: random.Random,
                  start: Callable[[], list[subprocess.Popen]]) -> list[subprocess.Popen]:
    """SIGKILL a tailing job a random 0-1 s after it commits something new (or after 20 s without);
    the jobs started again."""
    before, started = _ledger_rows(settings), time.monotonic()
    while _ledger_rows(settings) == before and time.monotonic() - started < 20:
        for job in jobs:
            assert job.poll() is None, f"tailing job exited ({job.returncode}):\n{_stderr(job)}"
        time.sleep(0.02)
    deadline = time.monotonic() + rng.uniform(0.0, 1.0)
    while time.monotonic() < deadline:  # the kill's moment; a job that dies meanwhile is a failure
        for job in jobs:
            assert job.poll() is None, f"tailing job exited ({job.returncode}):\n{_stderr(job)}"
        time.sleep(0.02)
    for job in jobs:  # every process of the cluster at once, as a node failure would
        if job.poll() is None:
            os.killpg(job.pid, signal.SIGKILL)
    for job in jobs:
        job.wait()
        job.log.close()
    return start()


def _kill_env(settings: Settings, config: JobConfig) -> dict[str, str]:
    """The job's environment for runs that are SIGKILLed: snapshots often, recovery data if asked for."""
    env = {**config.env(), "MUTAGG_SNAPSHOT_INTERVAL_S": "0.5"}
    if config.recovery:
        env["MUTAGG_RECOVERY_DIR"] = os.path.join(settings.audit_uri, "recovery")
        if not os.path.isdir(env["MUTAGG_RECOVERY_DIR"]):
            subprocess.run([sys.executable, "-m", "mutagg.cli", "recovery", "init", "--partitions", "2"],
                           env=settings_env(settings, **env), check=True, capture_output=True)
    return env


def _wait_stable(settings: Settings, enough: Callable[[int], bool], limit_s: float) -> None:
    """Until the ledger holds `enough` rows and has not grown for 2 s (or `limit_s` passed)."""
    give_up, last, since = time.monotonic() + limit_s, -1, time.monotonic()
    while time.monotonic() < give_up:
        rows = _ledger_rows(settings)
        if rows != last:
            last, since = rows, time.monotonic()
        elif enough(rows) and time.monotonic() - since > 2:
            return
        time.sleep(0.3)


def _ledger_rows(settings: Settings) -> int:
    return query(settings, "SELECT count(*) FROM mutation_log")[0][0] if _migrated(settings) else 0


def _migrated(settings: Settings) -> bool:
    return bool(query(settings, "SELECT to_regclass('mutation_log') IS NOT NULL")[0][0])


_DECIDED: dict[tuple[int, int], tuple[Backlog, model.Model]] = {}


def run_with_kills(settings: Settings, config: JobConfig, rng: random.Random) -> int:
    """`config.kills` runs of the job each SIGKILLed (with every process it started), unless it
    finished first; then a run to the end. Returns the kills made. Most kills come a random
    0-1 s after the run committed something new (so each lands in the middle of the work, not
    only in start-up, however fast the machine); every third a random 0.3-3 s after its start."""
    env = _kill_env(settings, config)
    killed = 0
    for attempt in range(config.kills):
        with tempfile.TemporaryFile() as log:
            jobs = [subprocess.Popen(command, env=settings_env(settings, **env), stdout=subprocess.DEVNULL,
                                     stderr=log, start_new_session=True)
                    for command in config.commands("--until-idle")]
            before, started = _ledger_rows(settings), time.monotonic()
            if attempt % 3 == 2:
                deadline = started + rng.uniform(0.3, 3.0)
            else:
                while _ledger_rows(settings) == before and any(job.poll() is None for job in jobs):
                    assert time.monotonic() - started < 300, "the job committed nothing in 300 s"
                    time.sleep(0.02)
                deadline = time.monotonic() + rng.uniform(0.0, 1.0)
            while time.monotonic() < deadline and any(job.poll() is None for job in jobs):
                time.sleep(0.02)
            if any(job.poll() is None for job in jobs):
                for job in jobs:  # every process of the cluster at once, as a node failure would
                    if job.poll() is None:
                        os.killpg(job.pid, signal.SIGKILL)
                for job in jobs:
                    job.wait()
                killed += 1
                continue
            if any(job.returncode != 0 for job in jobs):
                log.seek(0)
                codes = [job.returncode for job in jobs]
                raise AssertionError(f"job failed ({codes}):\n{log.read().decode()[-4000:]}")
            break  # it finished before the kill: the segment is done
    run_cluster(settings, config.processes, *config.args(), timeout=600, **env)
    return killed


def decided_by_model(backlog: Backlog, timeout_ms: int) -> model.Model:
    """The oracle's decisions on every segment of `backlog` (no ERP writes); kept per backlog."""
    key = (id(backlog), timeout_ms)
    if key not in _DECIDED or _DECIDED[key][0] is not backlog:
        reference = model.Model(TYPES)
        for number in range(len(backlog.segments)):
            reference.apply_log(backlog.model_log(number), timeout_ms)
        _DECIDED[key] = (backlog, reference)
    return _DECIDED[key][1]


def replay(
    base: Settings, backlog: Backlog, config: JobConfig, first_partition: int | None = None,
    erp: int = 0, keep: bool = False,
) -> Replay:
    """Produce each segment, run the job on it (`erp` ERP writes between segments), compare."""
    started = time.monotonic()
    settings = fresh_settings(base, backlog.spec.partitions)
    signer = None
    if any(r.forged_headers is not None for r in backlog.records):  # the job checks signatures
        master_file = os.path.join(settings.audit_uri, "edge-master-key")
        with open(master_file, "w") as key_file:
            key_file.write(f"backlog master key {backlog.spec.seed}\n")
        settings = with_overrides(settings, edge_master_key_file=master_file)
        signer = Signer(settings.edge_master_key())
    timeout_ms = round(config.dependency_timeout_s * 1000)
    reference = model.Model(TYPES) if erp else decided_by_model(backlog, timeout_ms)
    rng = random.Random(backlog.spec.seed)
    ids: set[str] = set()
    kills = 0
    try:
        for number, segment in enumerate(backlog.segments):
            ids |= {m.id for m in backlog.model_log(number)}
            if erp:
                reference.apply_log(backlog.model_log(number), timeout_ms)
            if first_partition is None:
                produce_records(settings, production_order(segment), signer)
                kills += run_with_kills(settings, config, rng)
            else:
                kills += run_live(settings, config, segment, first_partition, len(ids), signer, rng)
            if erp and number + 1 < len(backlog.segments):
                for write in erp_writes(settings, reference, rng, erp):
                    reference.apply(write)
        expected = expected_outcome(reference, backlog)
        actual = observed_outcome(settings, backlog)
        found = differences(expected, actual, backlog, repeats_allowed=config.kills > 0)
    finally:
        if not keep:
            cleanup(base, settings)
    notes = [f"job SIGKILLed {kills} times"] if config.kills else []
    if keep:
        notes.append(f"schema and topics kept: {settings.topic_mutations}")
    return Replay(config, found, expected, actual, time.monotonic() - started, notes)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.backlog", description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000, help="per segment (default 20000)")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--segments", type=int, default=1, help="with --erp: ERP writes between segments")
    parser.add_argument("--erp", type=int, default=0, help="ERP UPDATEs between two segments")
    parser.add_argument("--span-minutes", type=int, default=180, help="Kafka time one segment spans")
    parser.add_argument("--first-partition", type=int, help="tailing job; this partition produced first")
    parser.add_argument("--workers", type=int, default=1, help="per process")
    parser.add_argument("--shards", type=int, default=1, help="shards of the input partitions (MUTAGG_SHARDS)")
    parser.add_argument("--processes", type=int, default=1, help="processes of one Bytewax cluster on this host")
    parser.add_argument("--batch-size", type=int, default=5000)
    parser.add_argument("--window-ms", type=int, default=100)
    parser.add_argument("--read-chunk", type=int, default=10_000)
    parser.add_argument("--dependency-timeout-s", type=float, default=600.0)
    parser.add_argument("--kills", type=int, default=0, help="SIGKILL the job this often per segment, at random")
    parser.add_argument("--recovery", action="store_true", help="with Bytewax recovery data (MUTAGG_RECOVERY_DIR)")
    parser.add_argument("--rescale", metavar="COUNTS",
                        help="process counts, e.g. 1,2,1: each stage but the last is stopped by SIGTERM in the "
                             "middle of the backlog and the next resumes from the recovery data with its count")
    parser.add_argument("--forged-rate", type=float, default=0.0,
                        help="forged messages per message (then the job holds a master key)")
    parser.add_argument("--limit", type=int, default=20, help="differences shown per kind")
    parser.add_argument("--keep", action="store_true", help="keep the schema and topics")
    args = parser.parse_args(argv)
    spec = BacklogSpec(
        seed=args.seed, messages=args.messages, partitions=args.partitions, segments=args.segments,
        span_ms=args.span_minutes * 60_000, dependency_timeout_ms=round(args.dependency_timeout_s * 1000),
        closing=args.first_partition is not None, forged_rate=args.forged_rate,
    )
    config = JobConfig(args.workers, args.batch_size, args.window_ms, args.read_chunk, args.dependency_timeout_s,
                       args.kills, args.recovery, args.shards, args.processes)
    subprocess.run(["bash", str(REPO / "services" / "services.sh"), "start"], check=True, stdout=subprocess.DEVNULL)
    os.environ.setdefault("MUTAGG_LOG_LEVEL", "WARNING")
    backlog = generate(spec)
    records = backlog.records
    span = (max(r.timestamp_ms for r in records) - min(r.timestamp_ms for r in records)) / 3_600_000
    print(f"backlog: seed {spec.seed}, {len(records)} messages over {spec.partitions} partitions, "
          f"{len(backlog.segments)} segment(s), Kafka time spanning {span:.2f} h; job: {config}", flush=True)
    base = load_settings(overrides={"service_deadline_s": 60.0})
    if args.rescale:
        from tests.rescaled_runs import replay_rescaled

        result, _stages, _runs = replay_rescaled(base, backlog, config, tuple(int(n) for n in args.rescale.split(",")))
    else:
        result = replay(base, backlog, config, args.first_partition, args.erp, args.keep)
    print(f"model: {result.expected.summary()}\njob:   {result.actual.summary()}\n"
          f"{report(result.found, args.limit)}\n({result.seconds:.0f} s)", *result.notes, sep="\n")
    return 1 if result.found else 0
