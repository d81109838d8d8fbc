"""Run the dataflow in this process (`mutagg run`)."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from datetime import timedelta
from pathlib import Path

from bytewax._bytewax import cli_main
from bytewax.recovery import RecoveryConfig

from dataflows.aggregator import build_flow
from dataflows.runtime import RunStats, Runtime
from mutagg.central_state import start_central_state
from mutagg.collector import PeriodicCollector
from mutagg.heartbeat import HEARTBEAT
from mutagg.metrics import serve_job_metrics
from mutagg.process_count import ScaleBounds, check_bounds
from mutagg.rescaler import Rescaler, cluster_of
from mutagg.settings import Settings
from mutagg.topics import ensure_output_topics, warn_unless_log_append_time
from operators import compiled
from operators.strategies import CUSTOM_STRATEGIES
from schemas.errors import ConfigError, DatabaseBehind
from schemas.registry import load_registry
from sinks.fence import discard_snapshots

log = logging.getLogger(__name__)


STOPPED_PAST_DEADLINE = 143
"""The exit code when the batch in flight outlasts `stop_deadline_s` after SIGTERM: 128 + SIGTERM,
what Kubernetes would see had it killed the process, and a code the Job retries without counting."""


def _exit_past_stop_deadline(deadline_s: float) -> None:
    """Leave now, as a SIGKILL would, but before Kubernetes' grace period ends: nothing of the batch
    in flight is committed (its transaction rolls back with the connection) and the restart
    decides it again from the committed offsets, as after any crash."""
    log.error("the batch in flight did not finish within the stop deadline; exiting without it",
              extra={"stop_deadline_s": deadline_s, "exit_code": STOPPED_PAST_DEADLINE})
    logging.shutdown()
    os._exit(STOPPED_PAST_DEADLINE)


def recovery_config(settings: Settings) -> RecoveryConfig | None:
    if not settings.recovery_dir:
        return None
    directory = Path(settings.recovery_dir)
    if not directory.is_dir() or not any(directory.glob("part-*.sqlite3")):
        raise ConfigError(
            f"recovery directory {directory} has no partitions; create them once with "
            "`mutagg recovery init --partitions N`"
        )
    return RecoveryConfig(str(directory))


def run(
    settings: Settings,
    until_idle: bool,
    workers: int = 1,
    process_id: int | None = None,
    addresses: list[str] | None = None,
) -> RunStats:
    """Run until the input is drained (`until_idle`) or forever; return this process's counts."""
    compiled.require()  # the compiled core decodes: without it, say `make` before anything starts
    registry = load_registry(settings.registry, custom_strategies=CUSTOM_STRATEGIES)
    # Bounds the shards cannot use fail here (exit 2), before anything starts. A run until idle does
    # not follow the autoscaler: stopped, it exits 0, and an Indexed Job never restarts such an index.
    following = not process_id and not until_idle
    rescaler = rescaler_for(settings, workers, len(addresses) if addresses else 1) if following else None
    created = ensure_output_topics(settings)
    if created:
        log.info("created output topics", extra={"topics": created})
    if not process_id:  # one warning per cluster, not one per process
        warn_unless_log_append_time(settings)
        if settings.edge_master_key_file is None:
            log.info("edge signatures are not checked (no MUTAGG_EDGE_MASTER_KEY_FILE): unsigned messages "
                        "are accepted and counted in mutagg_unsigned_total")
    HEARTBEAT.reset()  # liveness and readiness count from this run's dataflow
    runtime = Runtime(settings, registry)
    flow = build_flow(runtime, stop_at_end=until_idle)
    stop_deadline = threading.Timer(settings.stop_deadline_s, _exit_past_stop_deadline, (settings.stop_deadline_s,))
    stop_deadline.daemon = True

    def request_stop(signum, _frame) -> None:
        log.info("stop requested; finishing the batch in flight", extra={"signal": signal.Signals(signum).name})
        runtime.stopping.set()
        if not stop_deadline.is_alive():
            stop_deadline.start()

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    # Processes on one host (addresses sharing a host) take port + index; pods each have their own IP.
    same_host = bool(addresses) and len({a.rsplit(":", 1)[0] for a in addresses}) == 1
    metrics_service = serve_job_metrics(
        runtime.metrics, settings, settings.metrics_port, process_id if same_host else None
    )
    # The edges hear whether the throttle holds the job, and why.
    central_state = start_central_state(
        settings, runtime.metrics, metrics_service, process_id, lambda: runtime.limiter.probe())
    started = time.monotonic()
    log.info("dataflow starting", extra={"workers": workers, "until_idle": until_idle, "run_id": runtime.run_id})
    behind = False
    collector = PeriodicCollector(settings.gc_interval_s)  # turned back on in `finally`
    collector.start()
    try:
        if rescaler is not None:
            rescaler.start()
        if not process_id:
            runtime.audit.catch_up()  # batches a crash left without audit files
            runtime.acks.warm()  # its connections before the first commit, not in the first batch's acks
            runtime.start_cluster_run()  # with shards: before the others can join (sinks/shard_tables.py)
        cli_main(
            flow,
            workers_per_process=workers,
            process_id=process_id,
            addresses=addresses,
            epoch_interval=timedelta(seconds=settings.snapshot_interval_s),
            recovery_config=recovery_config(settings),
        )
    except BaseException as exc:
        behind = _caused_by_database_behind(exc)
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        collector.close()
        if rescaler is not None:
            rescaler.close()
        runtime.close()
        if metrics_service is not None:
            metrics_service.close()
        if central_state is not None:
            for part in central_state:
                if part is not None:
                    part.close()
        if behind and settings.recovery_dir:
            # The snapshots hold read positions past what the database kept: the restart must
            # resume from the database's offsets and decide the lost batches again (exit 7).
            discard_snapshots(settings.recovery_dir)
        stop_deadline.cancel()  # last: closing (acks flush, audit) is part of the stop it bounds
    runtime.stats.elapsed = time.monotonic() - started
    log.info(
        "dataflow finished",
        extra={"messages": runtime.stats.messages, "batches": runtime.stats.batches,
               "by_status": dict(runtime.stats.by_status), "seconds": round(runtime.stats.elapsed, 3),
               "held_back_by_node": dict(runtime.stats.deferred), "misrouted": dict(runtime.stats.misrouted)},
    )
    return runtime.stats


def rescaler_for(settings: Settings, workers: int, processes: int) -> Rescaler | None:
    """With autoscaling on (MUTAGG_SCALE_TARGET), process 0's loop that follows the desired
    process count (mutagg/rescaler.py), not started; ConfigError for bounds the shards cannot use."""
    if not settings.scale_target:
        return None
    if not settings.recovery_dir:
        raise ConfigError("autoscaling needs MUTAGG_RECOVERY_DIR: a rescaled cluster resumes from it")
    bounds = ScaleBounds(settings.scale_min_processes, settings.scale_max_processes, workers, settings.shards,
                         len(list(Path(settings.recovery_dir).glob("part-*.sqlite3"))))
    check_bounds(bounds)
    return Rescaler(cluster_of(settings), processes, bounds, settings.scale_cooldown_s,
                    settings.scale_check_interval_s)


def _caused_by_database_behind(exc: BaseException | None) -> bool:
    """Bytewax wraps a step's error: look along the chain."""
    while exc is not None:
        if isinstance(exc, DatabaseBehind):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
