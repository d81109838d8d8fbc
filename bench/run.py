"""One benchmark run: the same generated workload through the pipeline, the
limit (database alone, Kafka alone), the naive baseline and the peer; or the
latency mode. Components run one after another, never side by side."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass

import psycopg

from bench import limit, naive, peer, peer_records
from bench.cpu import CpuMeter
from bench.critical import CriticalOptions, critical_bench
from bench.latency import PacedProducer, log_append_time, utc_now, wait_until
from bench.pipeline import Job, count_rows, ledger_latency
from bench.report import Report, Result
from bench.rows import Replayer, decoded, row_chunks
from bench.steady import steady_seconds
from bench.workspace import Workspace
from mutagg.producer import produce
from mutagg.settings import Settings
from mutagg.workload import Workload
from operators.strategies import CUSTOM_STRATEGIES
from schemas.registry import Registry, load_registry


@dataclass(frozen=True)
class BenchOptions:
    mutations: int = 1_000_000
    naive_slice: int = 20_000
    peer: bool = False
    partitions: int = 4
    workers: int = 1
    recovery: bool = False
    seed: int = 7
    keep: bool = False
    latency: bool = False
    rate: float = 10_000.0
    duration_s: float = 30.0
    warmup: int = 2_000
    profile: str | None = None  # py-spy raw output of the pipeline run


def progress(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    memory_kib = next(int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal"))
    return f"{os.cpu_count()} CPUs ({cpu}), {memory_kib / 1024 / 1024:.1f} GiB RAM, Python {platform.python_version()}"


def _header(settings: Settings, options: BenchOptions, title: str) -> list[str]:
    with psycopg.connect(settings.database_url) as connection:
        server = connection.execute("SHOW server_version").fetchone()[0]
    return [
        title,
        f"machine: {machine()}; PostgreSQL {server}; Kafka at {settings.kafka_bootstrap}",
        f"job: {options.partitions} partitions, batch_size {settings.batch_size}, window {settings.window_ms} ms, "
        f"{options.workers} worker(s), recovery {'on' if options.recovery else 'off'}; workload seed {options.seed}",
    ]


def run_bench(settings: Settings, options: BenchOptions) -> Report:
    registry = load_registry(settings.registry, custom_strategies=CUSTOM_STRATEGIES)
    workspace = Workspace(settings, registry, keep=options.keep)
    try:
        if options.latency:
            return _latency(workspace, registry, options)
        return _throughput(workspace, registry, options)
    finally:
        workspace.close()


def run_critical(settings: Settings, options: CriticalOptions, keep: bool = False) -> Report:
    """`mutagg bench --critical` (bench/critical.py)."""
    registry = load_registry(settings.registry, custom_strategies=CUSTOM_STRATEGIES)
    workspace = Workspace(settings, registry, keep=keep)
    try:
        header = _header(settings, BenchOptions(partitions=options.partitions, workers=options.workers,
                                                seed=options.seed), "mutagg bench --critical")
        header.append(f"lane: MUTAGG_PRIORITY_LANE={settings.priority_lane or '(empty)'}, "
                      f"lane_batch_size {settings.lane_batch_size}")
        return critical_bench(workspace, options, header, progress)
    finally:
        workspace.close()


def _throughput(workspace: Workspace, registry: Registry, options: BenchOptions) -> Report:
    settings = workspace.base
    meter = CpuMeter(settings.database_url, settings.kafka_bootstrap)
    report = Report(_header(settings, options, f"mutagg bench: {options.mutations:,} mutations, one workload"))
    began = time.perf_counter()
    messages = Workload(seed=options.seed).generate(options.mutations)
    progress(f"generated {len(messages):,} messages in {time.perf_counter() - began:.1f}s")

    # 1. The pipeline: the real job over a fresh schema and fresh topics, from a produced backlog.
    job_settings = workspace.job_topics(workspace.schema("pipeline"), "pipeline", options.partitions)
    began = time.perf_counter()
    produce(job_settings, messages)
    progress(f"produced to {job_settings.topic_mutations} in {time.perf_counter() - began:.1f}s; running the job")
    wrapper = _py_spy(options.profile) if options.profile else None
    with meter.measure() as cpu:
        job = Job(job_settings, until_idle=True, workers=options.workers, recovery=options.recovery, wrapper=wrapper)
        run = job.wait(timeout_s=max(900.0, len(messages) / 500))
    if run.returncode != 0:
        raise RuntimeError(f"mutagg run failed ({run.returncode}):\n{run.stderr_tail}")
    latency = ledger_latency(job_settings)
    first_commit = latency.first_decided.timestamp() - run.started_at if latency.first_decided else float("nan")
    first, last = latency.first_decided, latency.last_decided
    span = steady_seconds(first.timestamp(), last.timestamp()) if first and last else None
    report.results["pipeline"] = Result(
        "pipeline (mutagg run --until-idle)", len(messages), run.seconds, "mutations",
        latency.p50_ms, latency.p95_ms, latency.p99_ms,
        # Under py-spy the launcher's children are py-spy, not the job: no honest RSS/CPU then.
        None if wrapper else run.peak_rss_mib, None if wrapper else run.cpu_s, None if wrapper else cpu(),
        note=f"wall time of the job process incl. start-up (first commit {first_commit:.1f}s after spawn); "
             "steady from the first batch's decided_at to the last; "
             "latency here includes the time a message waited in the pre-produced backlog: see --latency"
             + (f"; PROFILED with py-spy into {options.profile}: rate includes its overhead; RSS/CPU not measured"
                if wrapper else ""),
        steady_seconds=span,
    )
    progress(f"pipeline: {report.results['pipeline'].rate:,.0f} mutations/s")

    # 2b. Kafka alone: a raw consume of the same topic.
    with meter.measure() as cpu:
        records, timing = limit.kafka_limit(job_settings, job_settings.topic_mutations)
    report.results["limit_kafka"] = Result("limit: raw Kafka consume, same topic", records, timing.seconds,
                                           "records", cpu_s=cpu().own_s, cpu_use=cpu(),
                                           steady_seconds=timing.steady_seconds)
    progress(f"raw consume: {records / timing.seconds:,.0f} records/s")

    # 2a. The database alone: the same rows, rendered before the clock starts.
    began = time.perf_counter()
    chunks, expected = row_chunks(messages, registry, settings.batch_size)
    progress(f"rendered {len(chunks)} batches of rows in {time.perf_counter() - began:.1f}s")
    limit_settings = workspace.schema("limit")
    with meter.measure() as cpu:
        timing = limit.database_limit(limit_settings, registry, chunks)
    report.results["limit_db"] = Result(
        "limit: database alone (COPY+upsert+ledger)", len(messages), timing.seconds, "mutations",
        cpu_s=cpu().own_s, cpu_use=cpu(), steady_seconds=timing.steady_seconds,
        note=f"{len(chunks)} transactions of {settings.batch_size} messages: "
             f"{sum(c.entity_rows for c in chunks):,} entity rows upserted, "
             f"{sum(c.ledger_rows for c in chunks):,} ledger rows; no locks, look-ups, conflicts or Python decisions",
    )
    progress(f"database limit: {len(messages) / timing.seconds:,.0f} mutations/s")
    del chunks

    # 3. The naive baseline, on a slice.
    part = messages[: options.naive_slice]
    naive_settings = workspace.schema("naive")
    with meter.measure() as cpu:
        applied, timing = naive.naive_apply(naive_settings, registry, part)
    naive_rate = len(part) / timing.seconds
    report.results["naive"] = Result(
        f"naive: row by row, slice {len(part):,}", len(part), timing.seconds, "mutations",
        cpu_s=cpu().own_s, cpu_use=cpu(), steady_seconds=timing.steady_seconds,
        note=f"first {len(part):,} messages only ({applied:,} valid applied); extrapolated, all "
             f"{len(messages):,} would take ~{len(messages) / naive_rate:,.0f}s at the slice's rate",
    )
    progress(f"naive: {naive_rate:,.0f} mutations/s")

    # 4. The peer.
    if options.peer:
        try:
            _peer(workspace, registry, options, messages, report, meter)
        except (OSError, RuntimeError, subprocess.CalledProcessError) as exc:
            # The rest of the table still stands; the missing ratio says why.
            report.notes.append(f"peer NOT measured: {type(exc).__name__}: {str(exc)[:1500]}")
            progress(f"peer failed: {exc}")

    # Consistency (never speed).
    report.check("pipeline: ledger rows == distinct readable ids", count_rows(job_settings, "mutation_log"),
                 expected.ledger_rows)
    report.check("pipeline: duplicate deliveries recorded", count_rows(job_settings, "mutation_duplicates"),
                 expected.duplicates)
    report.check("limit: ledger rows == distinct readable ids", count_rows(limit_settings, "mutation_log"),
                 expected.ledger_rows)
    report.check("limit: entity rows", {t: count_rows(limit_settings, t) for t in expected.entities},
                 expected.entities)
    report.check("raw consume: records == messages produced", records, len(messages))
    return report


def _py_spy(path: str) -> list[str]:
    py_spy = os.path.join(os.path.dirname(sys.executable), "py-spy")
    # --idle --threads: where each thread waits (PostgreSQL, Kafka, the GIL) shows too
    return [
        py_spy if os.path.exists(py_spy) else "py-spy",
        "record", "--idle", "--threads", "-r", "200", "-o", path, "-f", "raw", "--",
    ]


def _peer(
    workspace: Workspace, registry: Registry, options: BenchOptions, messages, report: Report, meter: CpuMeter
) -> None:
    peer_settings = workspace.schema("peer", migrated=False)
    peer_records.create_tables(peer_settings, registry)
    prefix = f"bench-{workspace.run_id}.peer"
    topics = [f"{prefix}.{t.table}" for t in registry]
    workspace.plain_topics(topics, options.partitions)
    records, replayer, finals = peer_records.peer_records(messages, registry, prefix, options.partitions)
    began = time.perf_counter()
    count = peer_records.produce_records(peer_settings, records)
    expected = replayer.finish()
    progress(f"produced {count:,} JSON-with-schema records for the peer in {time.perf_counter() - began:.1f}s; "
             "starting Kafka Connect")
    tuning = peer.at_its_best(options.partitions)
    with meter.measure() as cpu:
        run = peer.run_connect(
            peer_settings, workspace.schema_name("peer"), topics, registry, expected, finals, count,
            timeout_s=max(600.0, count / 1000), tuning=tuning,
        )
    first_row = "-" if run.first_row_s is None else f"{run.first_row_s:.1f}s"
    report.results["peer"] = Result(
        "peer: Debezium JDBC sink (Connect standalone)", count, run.seconds, "rows",
        peak_rss_mib=run.peak_rss_mib, cpu_s=run.cpu_s, cpu_use=cpu(), steady_seconds=run.steady_seconds,
        note=f"one upsert record per valid mutation; {tuning.describe()}; wall time from starting the worker "
             f"(JVM start-up incl.; first row written after {first_row}); steady from the first row written "
             "to the last (within 0.1 s); no ledger, no conflict handling",
    )
    report.check("peer: entity rows", run.entities, expected.entities)
    report.check("peer: sum of final versions", run.version_sums, expected.version_sums)
    progress(f"peer: {count / run.seconds:,.0f} rows/s wall, {report.results['peer'].steady_rate or 0:,.0f} steady")


def _latency(workspace: Workspace, registry: Registry, options: BenchOptions) -> Report:
    settings = workspace.base
    timed = int(options.rate * options.duration_s)
    report = Report(_header(settings, options, (
        f"mutagg bench --latency: {options.rate:,.0f} mutations/s offered for {options.duration_s:g}s "
        f"({timed:,} mutations, after a warm-up of {options.warmup:,})"
    )))
    messages = Workload(seed=options.seed).generate(options.warmup + timed)
    warmup, rest = messages[: options.warmup], messages[options.warmup :]
    replayer = Replayer(registry)
    warmup_ids = 0
    for index, result in enumerate(decoded(messages, registry)):
        replayer.feed(result)
        if index == len(warmup) - 1:
            warmup_ids = replayer.expected.ledger_rows
    expected = replayer.finish()
    job_settings = workspace.job_topics(workspace.schema("latency"), "latency", options.partitions)
    log_append_time(job_settings, job_settings.topic_mutations)  # latency from the broker's append
    job = Job(job_settings, until_idle=False, workers=options.workers, recovery=options.recovery)
    meter = CpuMeter(job_settings.database_url, job_settings.kafka_bootstrap)
    try:
        producer = PacedProducer(job_settings)
        producer.warm_up(warmup)  # the producer's own start-up is paid here, outside the timed records
        wait_until(lambda: count_rows(job_settings, "mutation_log") >= warmup_ids, 180, "warm-up decided")
        progress(f"job warm; producing {len(rest):,} mutations at {options.rate:,.0f}/s")
        since = utc_now()
        with meter.measure(job_pid=job.pid) as cpu:  # the offered load and its drain (the bench's producer too)
            seconds = producer.paced(rest, options.rate)
            wait_until(lambda: count_rows(job_settings, "mutation_log") >= expected.ledger_rows,
                       max(120.0, timed / 1000), "every mutation decided")
    finally:
        job.stop()
        run = job.wait(timeout_s=120)
    if run.returncode != 0:
        raise RuntimeError(f"mutagg run failed on SIGTERM ({run.returncode}):\n{run.stderr_tail}")
    latency = ledger_latency(job_settings, since=since)
    report.results["latency"] = Result(
        f"pipeline at {options.rate:,.0f}/s offered", len(rest), seconds, "mutations",
        latency.p50_ms, latency.p95_ms, latency.p99_ms, run.peak_rss_mib, run.cpu_s, cpu(),
        note=f"'per second' is the achieved produce rate; latency = decided_at - kafka_timestamp over "
             f"{latency.rows:,} ledger rows appended after the warm-up (max {latency.max_ms:,.0f} ms); "
             "decided_at is stamped in the batch's transaction just before its rows are written",
    )
    report.check("latency: ledger rows == distinct readable ids", count_rows(job_settings, "mutation_log"),
                 expected.ledger_rows)
    report.check("latency: job exit code after SIGTERM", run.returncode, 0)
    return report
