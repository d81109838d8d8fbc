"""The throttle wired into the commit path: before a batch is handed to the commit thread,
`Limiter.admit` waits while the throttle holds the job (an operator's pause, replication lag,
busy backends, a slow commit) and returns the batch-size cap to cut it with.

The wait runs on the dataflow's worker, in short steps, each a *deliberate* named wait for the
liveness probe ("throttled: replication lag 12.0 s > 5 s"), so a long pause is never taken for
a hung worker; batches already in flight are still collected meanwhile (their acks go on).
Signals come from the sampler thread (sinks/throttle_signals.py), never a query per batch.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from mutagg.heartbeat import HEARTBEAT
from mutagg.metrics import JobMetrics
from mutagg.settings import Settings
from operators.throttle import MANUAL, REASONS, Change, Limits, Sample, Throttle, describe
from sinks.throttle_signals import Sampler

log = logging.getLogger(__name__)


def limits_of(settings: Settings) -> Limits:
    return Limits(
        batch_size=settings.batch_size, min_batch=settings.throttle_min_batch,
        replication_lag_max_s=settings.throttle_replication_lag_max_s,
        active_backends_max=settings.throttle_active_backends_max,
        commit_latency_s=settings.throttle_commit_latency_s, pause_s=settings.throttle_pause_s,
    )


class Limiter:
    """One per process: the throttle's state, its sampler, its gauges and its log lines."""

    def __init__(self, settings: Settings, metrics: JobMetrics, stopping: threading.Event,
                 clock: Callable[[], float] = time.monotonic):
        self.throttle = Throttle(limits_of(settings))
        self.metrics = metrics
        self.stopping = stopping
        self.clock = clock
        interval = settings.throttle_sample_ms / 1000
        self.step_s = min(max(interval, 0.05), 1.0) if interval else 0.1
        self._lock = threading.Lock()
        # Samples are taken in on the sampler's thread too: gauges and readiness follow an idle job.
        self.sampler = Sampler(settings.database_url, interval, self._take).start() if interval else None
        metrics.batch_size_limit.set(self.throttle.cap)

    def admit(self, collect: Callable[[], object]) -> int | None:
        """Wait until a batch may go; its size cap, or None if the job is stopping meanwhile.
        `collect` hands finished batches on while this waits."""
        while True:
            self._take_sample()
            gate = self.throttle.gate(self.clock())
            if gate.wait_s <= 0:
                return gate.cap
            if self.stopping.is_set():
                return None
            with HEARTBEAT.waiting_on(describe(gate.reasons), deliberate=True):
                collect()
                self.stopping.wait(min(gate.wait_s, self.step_s))

    def committed(self, seconds: float) -> None:
        """A batch's transaction took `seconds` (called when the batch is collected)."""
        with self._lock:
            self._report(self.throttle.on_commit(seconds, self.clock()))

    def probe(self) -> tuple[bool, list[str]]:
        """(throttled, why) for the edges (mutagg/central_state.py, README "Central state")."""
        with self._lock:
            reasons = list(self.throttle.reasons.values())
        return bool(reasons), reasons

    def close(self) -> None:
        if self.sampler is not None:
            self.sampler.close()

    def _take_sample(self) -> None:
        sample = self.sampler.latest if self.sampler is not None else None
        if sample is not None:
            self._take(sample)

    def _take(self, sample: Sample) -> None:
        with self._lock:
            self._report(self.throttle.on_sample(sample))

    def _report(self, change: Change) -> None:
        """One log line per reason that begins or ends, not per batch; gauges always."""
        reasons = self.throttle.reasons
        for reason, why in change.entered.items():
            log.warning("throttle on: %s", why, extra={"reason": reason, "batch_size_limit": self.throttle.cap})
        for reason in sorted(change.left):
            log.warning("throttle off: %s", reason, extra={"reason": reason, "batch_size_limit": self.throttle.cap})
        if change.entered or change.left:
            for reason in REASONS:
                self.metrics.throttled.labels(reason).set(1 if reason in reasons else 0)
            HEARTBEAT.paused(f"throttled: {reasons[MANUAL]}" if MANUAL in reasons else None)
        self.metrics.batch_size_limit.set(self.throttle.cap)
