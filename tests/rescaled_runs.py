"""A backlog decided by a cluster whose process count changes in the middle of it (issue 21,
part 4): the path every scale event takes in Kubernetes (k8s/overlays/prod-autoscale), run
here on one host. Each stage but the last is a streaming run (no `--until-idle`) of its own
number of processes, stopped by SIGTERM to every process once the ledger has grown past the
stage's share of the backlog; the next stage resumes from the same Bytewax recovery
directory and the shard tables; the last stage runs to the end of the input.

A stage's stop is the rescale's stop: nothing is killed, so nothing may be decided, applied
or acknowledged twice, and what waits for a dependency crosses the stop in the snapshots.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

from mutagg.settings import Settings
from tests.backlog import Backlog, production_order
from tests.integration.conftest import cluster_commands, query, run_cluster, settings_env, wait_for
from tests.kube_stand_in import JOB, PODS, TARGET, KubeStandIn
from tests.replay import JobConfig, Replay, cleanup, decided_by_model, fresh_settings, produce_records
from tests.replay_compare import differences, expected_outcome, observed_outcome


@dataclass(frozen=True)
class Stage:
    """What one stage of a rescaled run did."""

    processes: int
    rows_at_stop: int | None
    """Ledger rows once every process had exited after its SIGTERM; None for the last stage."""
    seconds: float


def replay_rescaled(base: Settings, backlog: Backlog, config: JobConfig, processes: tuple[int, ...],
                    stop_fractions: tuple[float, ...] | None = None) -> tuple[Replay, list[Stage], list]:
    """Produce `backlog` (one segment) to fresh topics and schema, decide it with `run_rescaled`
    (stops evenly spread over the backlog unless `stop_fractions` says), compare with the oracle
    (acks counted: a graceful stop repeats none). Returns the replay, the stages and Bytewax's
    executions (`executions`)."""
    if len(backlog.segments) != 1:
        raise ValueError("a rescaled replay takes one segment")
    started = time.monotonic()
    expected = expected_outcome(decided_by_model(backlog, round(config.dependency_timeout_s * 1000)), backlog)
    fractions = stop_fractions or tuple(n / len(processes) for n in range(1, len(processes)))
    settings = fresh_settings(base, backlog.spec.partitions)
    try:
        produce_records(settings, production_order(backlog.segments[0]))
        stages = run_rescaled(settings, config, processes, fractions, len(expected.ledger))
        actual = observed_outcome(settings, backlog)
        runs = executions(recovery_dir(settings))
    finally:
        cleanup(base, settings)
    found = differences(expected, actual, backlog)
    notes = [f"{s.processes} process(es): {s.seconds:.1f} s" + (f", stopped at {s.rows_at_stop} ledger rows"
                                                                  if s.rows_at_stop is not None else ", to the end")
             for s in stages]
    return Replay(config, found, expected, actual, time.monotonic() - started, notes), stages, runs


def run_rescaled(
    settings: Settings, config: JobConfig, processes: tuple[int, ...], stop_fractions: tuple[float, ...],
    expected_rows: int, stage_timeout_s: float = 120.0,
) -> list[Stage]:
    """Run the backlog already produced to `settings`' input topic through `processes[0]`, then
    `processes[1]`, ... processes (each `config.workers` workers), stopping stage i once the
    ledger holds `stop_fractions[i] * expected_rows` rows; the last stage runs until idle."""
    if len(stop_fractions) != len(processes) - 1:
        raise ValueError("one stop fraction per stage but the last")
    env = {**config.env(), "MUTAGG_SNAPSHOT_INTERVAL_S": "0.5", "MUTAGG_RECOVERY_DIR": recovery_dir(settings)}
    _init_recovery(settings, env, max(processes) * config.workers)
    stages = []
    for count, fraction in zip(processes, stop_fractions, strict=False):
        started = time.monotonic()
        rows = _stopped_stage(settings, config, count, env, round(fraction * expected_rows), stage_timeout_s)
        stages.append(Stage(count, rows, time.monotonic() - started))
    started = time.monotonic()
    run_cluster(settings, processes[-1], *config.args(), timeout=stage_timeout_s * 2, **env)
    stages.append(Stage(processes[-1], None, time.monotonic() - started))
    return stages


def executions(recovery_dir: str) -> list[tuple[int, int]]:
    """(worker count, resume epoch) of every execution Bytewax recorded in the recovery
    partitions, oldest first: a resume epoch above 1 is a run that resumed from snapshots."""
    found = set()
    for part in sorted(Path(recovery_dir).glob("part-*.sqlite3")):
        with closing(sqlite3.connect(part)) as connection:
            found |= set(connection.execute("SELECT ex_num, worker_count, resume_epoch FROM exs").fetchall())
    return [(workers, epoch) for _, workers, epoch in sorted(found)]


def run_autoscaled(
    settings: Settings, config: JobConfig, processes: tuple[int, ...], change_fractions: tuple[float, ...],
    expected_rows: int, account_dir: Path, stage_timeout_s: float = 120.0,
) -> tuple[list[Stage], list[tuple[str, str, object]]]:
    """As `run_rescaled`, but each change comes the way it comes in Kubernetes: the harness plays
    KEDA (it sets the DataflowScale's replicas to the next count once the ledger holds the
    stage's share) and the kubelet (it SIGTERMs the processes when process 0's rescaler deletes
    "the pods"), and starts the next stage with the count the rescaler patched into "the Job".
    Returns the stages and every write the rescaler made to the stand-in API."""
    if len(change_fractions) != len(processes) - 1:
        raise ValueError("one change fraction per stage but the last")
    stand_in = KubeStandIn()
    stand_in.objects[TARGET] = {"spec": {"replicas": processes[0]}}
    running: list[subprocess.Popen] = []
    stand_in.on_call[("DELETE", PODS)] = lambda _body: [job.send_signal(signal.SIGTERM) for job in running
                                                         if job.poll() is None]
    resized: list[int] = []
    stand_in.on_call[("PATCH", JOB)] = lambda body: resized.append(body["spec"]["completions"])
    env = {**config.env(), "MUTAGG_SNAPSHOT_INTERVAL_S": "0.5", "MUTAGG_RECOVERY_DIR": recovery_dir(settings),
           "MUTAGG_SCALE_TARGET": "mutagg", "MUTAGG_SCALE_JOB": "mutagg", "MUTAGG_SCALE_MIN_PROCESSES": "1",
           "MUTAGG_SCALE_MAX_PROCESSES": str(max(processes)), "MUTAGG_SCALE_COOLDOWN_S": "0",
           "MUTAGG_SCALE_CHECK_INTERVAL_S": "0.2", "MUTAGG_KUBE_API_URL": stand_in.url,
           "MUTAGG_KUBE_SERVICE_ACCOUNT_DIR": str(account_dir)}
    _init_recovery(settings, env, max(processes) * config.workers)
    stages = []
    try:
        count = processes[0]
        for following, fraction in zip(processes[1:], change_fractions, strict=True):
            started = time.monotonic()

            def ask_for_the_next_count(rows: int, following: int = following) -> None:
                stand_in.objects[TARGET] = {"spec": {"replicas": following}}

            rows = _stopped_stage(settings, config, count, env, round(fraction * expected_rows), stage_timeout_s,
                                  started=running, stop=ask_for_the_next_count)
            assert resized and resized[-1] == following, f"the rescaler patched the Job to {resized}"
            stages.append(Stage(count, rows, time.monotonic() - started))
            count = resized[-1]
            running.clear()
        started = time.monotonic()
        run_cluster(settings, count, *config.args(), timeout=stage_timeout_s * 2, **env)
        stages.append(Stage(count, None, time.monotonic() - started))
        return stages, stand_in.writes()
    finally:
        stand_in.close()


def recovery_dir(settings: Settings) -> str:
    """The run's Bytewax recovery partitions, beside its audit files."""
    return os.path.join(settings.audit_uri, "recovery")


def ledger_rows(settings: Settings) -> int:
    return query(settings, "SELECT count(*) FROM mutation_log")[0][0]


def _init_recovery(settings: Settings, env: dict[str, str], partitions: int) -> None:
    """The recovery partitions, created once for the whole run: as many as the largest worker
    count of any stage (README "Scale")."""
    subprocess.run([sys.executable, "-m", "mutagg.cli", "recovery", "init", "--partitions", str(partitions)],
                   env=settings_env(settings, **env), check=True, capture_output=True)


def _terminate(jobs: list[subprocess.Popen]) -> None:
    """SIGTERM to every process, as deleting its pods does."""
    for job in jobs:
        if job.poll() is None:
            job.send_signal(signal.SIGTERM)


def _stopped_stage(settings: Settings, config: JobConfig, processes: int, env: dict[str, str], stop_at: int,
                   timeout_s: float, started: list[subprocess.Popen] | None = None,
                   stop: Callable[[int], None] | None = None) -> int:
    """A streaming cluster of `processes` (appended to `started`), stopped once the ledger holds
    `stop_at` rows: by `stop(rows)`, which must lead to a SIGTERM of every process, or else by
    the SIGTERMs themselves. Each process must exit 0. Returns the ledger rows then."""
    with tempfile.TemporaryFile() as log:
        jobs = started if started is not None else []
        jobs += [subprocess.Popen(command, env=settings_env(settings, **env), stdout=subprocess.DEVNULL, stderr=log)
                 for command in cluster_commands(processes, *config.args())]
        try:
            wait_for(lambda: ledger_rows(settings) >= stop_at or any(job.poll() is not None for job in jobs),
                     timeout_s, f"{stop_at} ledger rows from {processes} process(es)", interval_s=0.05)
            if stop is None:
                _terminate(jobs)
            else:
                stop(ledger_rows(settings))
            codes = [job.wait(timeout=timeout_s) for job in jobs]
        finally:
            for job in jobs:
                if job.poll() is None:
                    job.kill()
                    job.wait()
        if codes != [0] * processes:
            log.seek(0)
            raise AssertionError(f"{processes} process(es) exited {codes}:\n{log.read().decode()[-4000:]}")
    return ledger_rows(settings)
