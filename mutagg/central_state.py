"""The job's state for the edge nodes: how far behind it is and whether it is throttled,
published every `central_state_interval_s` seconds to the compacted central-state topic
(README "Central state"), so a depot sees that a change is queued, not lost.

One record per job process (key `{central_state_key}/{process}`), the latest kept by compaction:
a node that comes back reads the current state at once. The delay is read from the lag lookup
the metrics refresher already makes (`LagSnapshot`: the Kafka timestamp of the oldest
uncommitted message per input partition), so publishing costs one small record per interval
and nothing per mutation. The record only describes; it never changes what the job decides.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import orjson
from confluent_kafka import KafkaException, Producer

from mutagg.periodic import Periodic
from mutagg.refresher import LagSnapshot, StateRefresher
from mutagg.settings import Settings

if TYPE_CHECKING:
    from mutagg.metrics import JobMetrics, MetricsService

log = logging.getLogger(__name__)

FORMAT_VERSION = 1

ThrottleProbe = Callable[[], tuple[bool, list[str]]]
"""Whether the job holds back its writes now, and why (e.g. `["replication_lag"]`)."""


def not_throttled() -> tuple[bool, list[str]]:
    """The probe of a job without a throttle."""
    return False, []


def state_record(
    snapshot: LagSnapshot, now: float, throttle: tuple[bool, list[str]], process: int, interval_s: float
) -> dict:
    """The record's value (README "Central state"): `delay_s` is the largest partition delay
    (None while a lagging partition's oldest message could not be read)."""
    partitions = snapshot.delays(now)
    known = [d for d in partitions.values() if d is not None]
    delay = None if len(known) < len(partitions) else max(known, default=0.0)
    throttled, reasons = throttle
    return {
        "version": FORMAT_VERSION,
        "process": process,
        "published_at": round(now, 3),
        "measured_at": round(snapshot.measured_at, 3),
        "interval_s": interval_s,
        "delay_s": None if delay is None else round(delay, 3),
        "partitions": {str(p): None if d is None else round(d, 3) for p, d in partitions.items()},
        "throttled": bool(throttled),
        "reasons": [str(r) for r in reasons],
    }


class CentralStatePublisher(Periodic):
    """A daemon thread that publishes `state_record` every `interval_s` seconds."""

    def __init__(
        self,
        settings: Settings,
        lag: Callable[[], LagSnapshot | None],
        process: int = 0,
        throttle: ThrottleProbe = not_throttled,
        clock: Callable[[], float] = time.time,
    ):
        super().__init__("mutagg-central-state", settings.central_state_interval_s)
        self.settings = settings
        self.topic = settings.topic_central_state
        self.key = f"{settings.central_state_key}/{process}".encode()
        self.process = process
        self._lag = lag
        self._throttle = throttle
        self._clock = clock
        self._producer = Producer({**settings.kafka_client_config(), "linger.ms": 0, "acks": "all",
                                   "message.timeout.ms": int(max(1.0, self.interval_s) * 3000)})
        self.published = 0

    def close(self, timeout_s: float = 5.0) -> bool:
        """Stop, publishing the state once more (a short run is heard too; a stopped job's last
        record then says where it stopped)."""
        started = super().close(timeout_s)
        if started:
            self.publish_once()
        self._producer.flush(2)
        return started

    def tick(self) -> float | None:
        published = self.publish_once()  # until the first lag lookup, look again soon
        return None if published else min(1.0, self.interval_s)

    def publish_once(self) -> bool:
        """Publish the current state; False (logged) before the first lag lookup or on an error.
        Never raises: the edges' view must never stop the job."""
        snapshot = self._lag()
        if snapshot is None:
            return False
        try:
            record = state_record(snapshot, self._clock(), self._throttle(), self.process, self.interval_s)
            self._producer.produce(self.topic, key=self.key, value=orjson.dumps(record))
            self._producer.poll(0)
        except (KafkaException, BufferError, TypeError, ValueError) as exc:
            log.warning("central state not published", extra={"topic": self.topic, "error": str(exc)[:300]})
            return False
        self.published += 1
        return True


def start_central_state(
    settings: Settings,
    metrics: JobMetrics,
    metrics_service: MetricsService | None,
    process: int | None,
    throttle: ThrottleProbe = not_throttled,
) -> tuple[CentralStatePublisher, StateRefresher | None] | None:
    """Start publishing (None when `central_state_interval_s` is 0). The lag comes from the
    metrics endpoint's refresher; without an endpoint (metrics_port 0) a refresher of its own is
    started and returned, for the caller to close."""
    if not settings.central_state_interval_s:
        return None
    own = None
    refresher = metrics_service.refresher if metrics_service is not None else None
    if refresher is None:
        own = refresher = StateRefresher(metrics, settings, min(15.0, settings.central_state_interval_s)).start()
    publisher = CentralStatePublisher(settings, refresher.lag_snapshot, process or 0, throttle).start()
    return publisher, own
