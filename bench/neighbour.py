"""Is the job a good neighbour to the ERP's database? (`python -m bench.neighbour`, README "Throttle")

An ERP-like load, `pgbench` with a script of our own (an account update, a read and a history
insert per transaction, at a fixed rate, on tables in a schema of their own), runs on the same
PostgreSQL server three times, in one run, for the same duration each:
1. alone (the ERP's own latency);
2. beside `mutagg run` draining a backlog, throttle off;
3. beside `mutagg run` draining the same backlog into a fresh schema, with the limiter on
   (the commit-latency signal only: `--target-ms`).
With `--rounds N` the three repeat, interleaved, and the medians close the table: on a shared
machine the ERP's own p99 moves between minutes more than the job moves it.
Reported per phase: the ERP's p50/p99 transaction latency (pgbench's per-transaction log,
schedule lag included: an open-loop load), and the job's throughput over the same window.
The target: p99 with the limiter within 1.5 x p99 alone. Never a timed test (the CI smoke
test only checks that the rows come out).
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bench.pipeline import job_env
from bench.workspace import Workspace
from mutagg.producer import produce
from mutagg.settings import Settings, load_settings, with_overrides
from mutagg.workload import Workload
from operators.strategies import CUSTOM_STRATEGIES
from schemas.registry import load_registry

ERP_SCRIPT = """\\set aid random(1, {accounts})
\\set delta random(-5000, 5000)
BEGIN;
UPDATE {schema}.account SET balance = balance + :delta, updated_at = now() WHERE id = :aid;
SELECT balance FROM {schema}.account WHERE id = :aid;
INSERT INTO {schema}.history (account_id, delta, at) VALUES (:aid, :delta, now());
END;
"""


@dataclass(frozen=True)
class Phase:
    name: str
    transactions: int
    p50_ms: float
    p99_ms: float
    job_rate: float | None  # mutations committed per second over the window; None: no job
    drained: bool = False  # the job ran out of backlog inside the window (its rate is a floor)


def pgbench_binary() -> str:
    found = shutil.which("pgbench") or next(iter(sorted(glob.glob("/usr/lib/postgresql/*/bin/pgbench"),
                                                         reverse=True)), None)
    if found is None:
        raise SystemExit("bench.neighbour: pgbench not found (PostgreSQL client binaries)")
    return found


def erp_schema(settings: Settings, schema: str, accounts: int) -> None:
    with psycopg.connect(settings.database_url, autocommit=True) as connection:
        connection.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        connection.execute(f'CREATE SCHEMA "{schema}"')
        connection.execute(f"CREATE TABLE {schema}.account (id int PRIMARY KEY, balance bigint NOT NULL, "
                           "updated_at timestamptz NOT NULL DEFAULT now())")
        connection.execute(f"CREATE TABLE {schema}.history (id bigserial PRIMARY KEY, account_id int NOT NULL, "
                           "delta int NOT NULL, at timestamptz NOT NULL)")
        connection.execute(f"INSERT INTO {schema}.account (id, balance) SELECT g, 0 FROM generate_series(1, %s) g",
                           (accounts,))


def run_pgbench(url: str, script: Path, seconds: float, rate: float, clients: int, scratch: Path) -> list[float]:
    """The latencies (ms) of every transaction of one pgbench run."""
    logs = scratch / f"pgbench-{time.monotonic_ns()}"
    logs.mkdir()
    subprocess.run(
        [pgbench_binary(), "-n", "-f", str(script), "-T", str(int(seconds)), "-R", str(rate), "-c", str(clients),
         "-j", str(min(clients, 2)), "-l", "--log-prefix", str(logs / "tx"), url],
        check=True, capture_output=True, text=True, timeout=seconds + 120, cwd=scratch)
    latencies = []
    for log_file in logs.glob("tx*"):
        for line in log_file.read_text().splitlines():
            fields = line.split()
            if len(fields) >= 3 and fields[2].isdigit():
                latencies.append(int(fields[2]) / 1000)  # microseconds -> ms (schedule lag included)
    return sorted(latencies)


def percentile(values: list[float], fraction: float) -> float:
    return values[min(len(values) - 1, int(fraction * len(values)))] if values else float("nan")


def ledger_rows(settings: Settings) -> int:
    with psycopg.connect(settings.database_url) as connection:
        return connection.execute("SELECT count(*) FROM mutation_log").fetchone()[0]


def beside_job(job_settings: Settings, total: int, erp: dict, scratch: Path, extra_env: dict[str, str]) -> Phase:
    """The ERP load while `mutagg run` drains the backlog; the job's rate over the same window."""
    env = job_env(job_settings, str(scratch / f"audit-{time.monotonic_ns()}"))
    env.update(MUTAGG_METRICS_PORT="0", **extra_env)
    job = subprocess.Popen([sys.executable, "-m", "mutagg.cli", "run"], env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while ledger_rows(job_settings) == 0:  # the job is up and writing: the window starts
            if job.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"bench.neighbour: the job did not start:\n{job.stderr.read()[-3000:]}")
            time.sleep(0.2)
        before, began = ledger_rows(job_settings), time.monotonic()
        latencies = run_pgbench(**erp, scratch=scratch)
        after, seconds = ledger_rows(job_settings), time.monotonic() - began
    finally:
        os.killpg(job.pid, signal.SIGTERM)
        job.wait(120)
    return Phase("", len(latencies), percentile(latencies, 0.5), percentile(latencies, 0.99),
                 (after - before) / seconds, after >= total)


def run(settings: Settings, mutations: int, seconds: float, rate: float, clients: int, target_ms: float,
        rounds: int = 1, keep: bool = False) -> list[Phase]:
    registry = load_registry(settings.registry, custom_strategies=CUSTOM_STRATEGIES)
    workspace = Workspace(settings, registry, keep=keep)
    scratch = Path(tempfile.mkdtemp(prefix="bench-neighbour-"))
    erp_name = f"bench_{workspace.run_id}_erp"
    workspace.schemas.append(erp_name)
    try:
        accounts = 10_000
        erp_schema(settings, erp_name, accounts)
        script = scratch / "erp.sql"
        script.write_text(ERP_SCRIPT.format(schema=erp_name, accounts=accounts))
        erp = {"url": settings.database_url, "script": script, "seconds": seconds, "rate": rate, "clients": clients}
        messages = Workload(seed=7, invalid_rate=0, duplicate_rate=0).generate(mutations)
        topics = workspace.job_topics(settings, "neighbour", 4)
        produce(topics, messages)
        print(f"[neighbour] produced {len(messages):,} mutations; ERP load {rate:g} tx/s x {clients} clients, "
              f"{seconds:g} s per phase", file=sys.stderr, flush=True)
        phases = []
        off = {"MUTAGG_THROTTLE_SAMPLE_MS": "0", "MUTAGG_THROTTLE_COMMIT_LATENCY_S": "0"}
        on = {"MUTAGG_THROTTLE_SAMPLE_MS": "500", "MUTAGG_THROTTLE_COMMIT_LATENCY_S": str(target_ms / 1000),
              "MUTAGG_THROTTLE_REPLICATION_LAG_MAX_S": "0", "MUTAGG_THROTTLE_ACTIVE_BACKENDS_MAX": "0"}
        for round_number in range(1, rounds + 1):  # interleaved: the shared machine's noise falls on all three
            latencies = run_pgbench(**erp, scratch=scratch)
            phases.append(Phase(f"{round_number}. ERP alone", len(latencies), percentile(latencies, 0.5),
                                percentile(latencies, 0.99), None))
            for part, name, extra in ((f"off{round_number}", "ERP + job, throttle off", off),
                                      (f"on{round_number}", f"ERP + job, limiter on ({target_ms:g} ms)", on)):
                job_settings = with_overrides(workspace.schema(part), topic_mutations=topics.topic_mutations,
                                              topic_status=topics.topic_status, topic_dlq=topics.topic_dlq)
                phase = beside_job(job_settings, len(messages), erp, scratch, extra)
                phases.append(Phase(f"{round_number}. {name}", phase.transactions, phase.p50_ms, phase.p99_ms,
                                    phase.job_rate, phase.drained))
        return phases
    finally:
        workspace.close()
        shutil.rmtree(scratch, ignore_errors=True)


def format_phases(phases: list[Phase]) -> str:
    """One row per phase and round, then the median p99 of each phase over the rounds."""
    header = f"{'phase':<40} {'ERP tx':>8} {'p50 ms':>8} {'p99 ms':>8} {'p99/alone':>9} {'job mut/s':>10}"
    lines = [header]
    alone: dict[str, float] = {}
    for phase in phases:
        round_number = phase.name.split(".")[0]
        alone.setdefault(round_number, phase.p99_ms)
        rate = "-" if phase.job_rate is None else f"{phase.job_rate:,.0f}{'*' if phase.drained else ''}"
        lines.append(f"{phase.name:<40} {phase.transactions:>8} {phase.p50_ms:>8.1f} {phase.p99_ms:>8.1f} "
                     f"{phase.p99_ms / alone[round_number]:>9.2f} {rate:>10}")
    kinds = dict.fromkeys(p.name.split(". ", 1)[1] for p in phases)
    median_alone = statistics.median(p.p99_ms for p in phases if p.job_rate is None)
    for kind in kinds:
        same = [p for p in phases if p.name.split(". ", 1)[1] == kind]
        p99 = statistics.median(p.p99_ms for p in same)
        rates = [p.job_rate for p in same if p.job_rate is not None]
        rate = f"{statistics.median(rates):,.0f}" if rates else "-"
        lines.append(f"{'median: ' + kind:<40} {sum(p.transactions for p in same):>8} "
                     f"{statistics.median(p.p50_ms for p in same):>8.1f} {p99:>8.1f} {p99 / median_alone:>9.2f} "
                     f"{rate:>10}")
    if any(p.drained for p in phases):
        lines.append("* the backlog ran out inside the window: a floor (use more --mutations)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.neighbour", description=__doc__.splitlines()[0])
    parser.add_argument("--mutations", type=int, default=200_000, help="the job's backlog (default 200,000)")
    parser.add_argument("--seconds", type=float, default=20.0, help="each phase's ERP load (default 20)")
    parser.add_argument("--rate", type=float, default=200.0, help="ERP transactions/s (default 200)")
    parser.add_argument("--clients", type=int, default=4, help="pgbench clients (default 4)")
    parser.add_argument("--target-ms", type=float, default=20.0,
                        help="the limiter's commit-latency target, MUTAGG_THROTTLE_COMMIT_LATENCY_S (default 20 ms)")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the three phases, interleaved (default 1)")
    parser.add_argument("--keep", action="store_true", help="keep the schemas and topics")
    args = parser.parse_args(argv)
    settings = load_settings()
    phases = run(settings, args.mutations, args.seconds, args.rate, args.clients, args.target_ms, args.rounds,
                 args.keep)
    print(format_phases(phases), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
