"""The real job in a child process, measured from outside: wall time, peak RSS
and CPU seconds of exactly that process (RUSAGE_CHILDREN of a small launcher,
as bench/memory.py does), latency read from the ledger."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import psycopg

from mutagg.settings import Settings


@dataclass
class JobRun:
    """How one `mutagg run` process went."""

    returncode: int
    seconds: float
    started_at: float  # wall clock (time.time()) when it was spawned
    peak_rss_mib: float
    cpu_s: float  # user + system
    stderr_tail: str


@dataclass
class LedgerLatency:
    """decided_at - kafka_timestamp over ledger rows (milliseconds)."""

    rows: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    first_decided: datetime | None
    last_decided: datetime | None


def job_env(settings: Settings, audit_dir: str, recovery_dir: str | None = None) -> dict[str, str]:
    """The environment that makes `mutagg run` use exactly `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUTAGG_")}
    env.update(settings.as_env(), MUTAGG_AUDIT_URI=audit_dir, MUTAGG_LOG_LEVEL="WARNING")
    env.pop("MUTAGG_RECOVERY_DIR", None)
    if recovery_dir:
        env["MUTAGG_RECOVERY_DIR"] = recovery_dir
    return env


# A small interpreter between the driver and the measured process. Linux carries a
# process's peak RSS across exec, so a child forked straight from this (large)
# driver would report the driver's RSS as its own; the launcher is small, and its
# RUSAGE_CHILDREN is exactly the measured process. It forwards SIGTERM.
_LAUNCHER = """
import json, resource, signal, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
signal.signal(signal.SIGTERM, lambda signum, frame: child.send_signal(signal.SIGTERM))
code = child.wait()
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
with open(sys.argv[1], "w") as out:
    json.dump({"returncode": code, "maxrss_kib": usage.ru_maxrss, "cpu_s": usage.ru_utime + usage.ru_stime}, out)
"""


@dataclass
class ChildUsage:
    returncode: int
    peak_rss_mib: float
    cpu_s: float


class Measured:
    """`command` run through the launcher; `stop()` sends SIGTERM, `wait()` gives its own peak RSS and CPU."""

    def __init__(self, command: list[str], env: dict[str, str] | None, stderr, cwd: str | None = None):
        self.usage_file = tempfile.NamedTemporaryFile(prefix="mutagg-bench-usage-", suffix=".json", delete=False)
        self.usage_file.close()
        self.process = subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER, self.usage_file.name, *command],
            env=env, stdout=subprocess.DEVNULL, stderr=stderr, cwd=cwd, start_new_session=True,
        )

    def poll(self) -> int | None:
        return self.process.poll()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout_s: float) -> ChildUsage:
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.stop()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)  # the launcher's own group: it and what it started
                self.process.wait()
        try:
            with open(self.usage_file.name) as handle:
                usage = json.load(handle)
        except (OSError, ValueError):
            usage = {"returncode": self.process.returncode, "maxrss_kib": 0, "cpu_s": 0.0}
        finally:
            os.unlink(self.usage_file.name)
        return ChildUsage(usage["returncode"], usage["maxrss_kib"] / 1024, usage["cpu_s"])


class Job:
    """`mutagg run [--until-idle]` as a child process; `wait` returns its own resource usage."""

    def __init__(self, settings: Settings, until_idle: bool, workers: int = 1, recovery: bool = False,
                 wrapper: list[str] | None = None, args: tuple[str, ...] = ()):
        """`args`: more of `mutagg run`'s arguments (a cluster process's `--process-id`, `--addresses`)."""
        self.scratch = tempfile.TemporaryDirectory(prefix="mutagg-bench-")
        recovery_dir = None
        if recovery:
            from bytewax.recovery import init_db_dir

            recovery_dir = os.path.join(self.scratch.name, "recovery")
            os.makedirs(recovery_dir)
            init_db_dir(Path(recovery_dir), 1)
        command = [sys.executable, "-m", "mutagg.cli", "run", "--workers", str(workers), *args]
        if until_idle:
            command.append("--until-idle")
        self.stderr = open(os.path.join(self.scratch.name, "job.stderr"), "w+b")  # closed in wait()
        self.started_at = time.time()
        self.began = time.perf_counter()
        self.process = Measured(
            [*(wrapper or []), *command],
            job_env(settings, os.path.join(self.scratch.name, "audit"), recovery_dir), self.stderr,
        )

    @property
    def pid(self) -> int:
        """The launcher's: the job is its child."""
        return self.process.process.pid

    def stop(self) -> None:
        """Ask the job to finish its batch and exit (SIGTERM: it exits 0)."""
        self.process.stop()

    def wait(self, timeout_s: float) -> JobRun:
        usage = self.process.wait(timeout_s)
        seconds = time.perf_counter() - self.began
        self.stderr.seek(0)
        tail = self.stderr.read()[-4000:].decode(errors="replace")
        self.stderr.close()
        self.scratch.cleanup()
        return JobRun(usage.returncode, seconds, self.started_at, usage.peak_rss_mib, usage.cpu_s, tail)


def ledger_latency(settings: Settings, since: datetime | None = None) -> LedgerLatency:
    """Percentiles of decided_at - kafka_timestamp (rows appended at or after `since`, if given)."""
    where = "kafka_timestamp IS NOT NULL" + (" AND kafka_timestamp >= %s" if since else "")
    with psycopg.connect(settings.database_url) as connection:
        row = connection.execute(
            "SELECT count(*), percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP "
            "(ORDER BY extract(epoch FROM decided_at - kafka_timestamp)), "
            "max(extract(epoch FROM decided_at - kafka_timestamp)), min(decided_at), max(decided_at) "
            f"FROM mutation_log WHERE {where}",
            (since,) if since else None,
        ).fetchone()
    count, percentiles, worst, first, last = row
    p50, p95, p99 = (None, None, None) if percentiles is None else (v * 1000 for v in percentiles)
    return LedgerLatency(count, p50, p95, p99, None if worst is None else float(worst) * 1000, first, last)


def count_rows(settings: Settings, table: str) -> int:
    with psycopg.connect(settings.database_url) as connection:
        return connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
