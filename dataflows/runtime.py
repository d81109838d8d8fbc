"""Per-process resources of a running job: the committer, the ack producer and
the run's counters. Built once, lazily, on the worker that needs them."""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from dataflows.limiter import Limiter
from mutagg.metrics import JobMetrics
from mutagg.settings import Settings
from operators.strategies import CUSTOM_STRATEGIES
from schemas.mutation import Rejection
from schemas.registry import Registry
from sinks.acks import AckProducer
from sinks.after_commit import AfterCommit, Committed
from sinks.audit import AuditExporter
from sinks.faults import FaultInjector
from sinks.outcomes import Outcome
from sinks.postgres import PostgresCommitter
from sinks.speculation import Speculator
from sources.kafka import PartitionKey, input_partitions

log = logging.getLogger(__name__)


@dataclass
class RunStats:
    """What this process decided, for the summary and the logs."""

    started: float = field(default_factory=time.monotonic)
    by_status: Counter = field(default_factory=Counter)
    by_kind: Counter = field(default_factory=Counter)
    batches: int = 0
    messages: int = 0
    dead_lettered: int = 0
    deferred: Counter = field(default_factory=Counter)  # per edge node: held back by its fair share
    misrouted: Counter = field(default_factory=Counter)  # per entity type: read from the other input topic
    elapsed: float = 0.0

    def record(self, outcomes: list[Outcome]) -> None:
        self.batches += 1
        self.messages += len(outcomes)
        self.dead_lettered += sum(isinstance(outcome.source, Rejection) for outcome in outcomes)
        self.by_kind.update([outcome.kind for outcome in outcomes])  # counted in C
        self.by_status.update(["DUPLICATE" if o.kind == "duplicate" else o.status for o in outcomes])


class Runtime:
    """Holds what the dataflow's steps share inside one process."""

    def __init__(self, settings: Settings, registry: Registry):
        self.settings = settings
        self.registry = registry
        self.stats = RunStats()
        self.faults = FaultInjector(settings.fault_point)
        self.stopping = threading.Event()  # set by SIGTERM: stop reading, finish the batch, exit 0
        # Set by the apply step while it holds a batch of standard input and the priority lane is busy:
        # the standard topic's partitions are not polled then, the lane's are (README "Priority lane").
        self.standard_paused = threading.Event()
        self._lock = threading.Lock()
        self._committer: PostgresCommitter | None = None
        self._input_partitions: list[PartitionKey] | None = None
        # Which input topic each entity type belongs on (misrouted messages are counted).
        self.routing = settings.routing({t.name: t.criticality for t in registry})
        self._acks: AckProducer | None = None
        self._audit: AuditExporter | None = None
        self._after_commit: AfterCommit | None = None
        self._limiter: Limiter | None = None
        # One transaction at a time, on its own thread, so the dataflow reads and decodes on meanwhile.
        self.commits = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mutagg-commit")
        self.metrics = JobMetrics(t.name for t in registry)
        self._batch_numbers = itertools.count(1)
        self.run_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}"

    @property
    def input_partitions(self) -> list[PartitionKey]:
        """The input topics' partitions (the priority lane's, if its topic exists, then the
        standard one's), read once: each one holds event time back until it has shown its own
        (operators/sequencer.py)."""
        with self._lock:
            if self._input_partitions is None:
                settings = self.settings
                self._input_partitions = input_partitions(
                    settings.kafka_client_config(), settings.input_topics(), settings.topic_mutations,
                    settings.service_deadline_s,
                )
            return self._input_partitions

    @property
    def lane(self) -> str | None:
        """The priority lane's topic while the job reads it (it exists), else None."""
        lane = self.settings.lane_topic
        return lane if self.settings.lane_on and any(t == lane for t, _ in self.input_partitions) else None

    @property
    def committer(self) -> PostgresCommitter:
        with self._lock:
            if self._committer is None:
                settings = self.settings
                ahead = Speculator(settings.database_url, self.registry, CUSTOM_STRATEGIES) \
                    if settings.prepare_ahead else None
                if ahead is not None:
                    ahead.on_count = self.metrics.count_prepared
                self._committer = PostgresCommitter(
                    settings.database_url, self.registry, CUSTOM_STRATEGIES,
                    settings.service_deadline_s, self.faults, ahead, run_id=self.run_id,
                )
            return self._committer

    @property
    def limiter(self) -> Limiter:
        """The throttle (dataflows/limiter.py); its sampler starts with the first use."""
        with self._lock:
            if self._limiter is None:
                self._limiter = Limiter(self.settings, self.metrics, self.stopping)
            return self._limiter

    @property
    def acks(self) -> AckProducer:
        with self._lock:
            if self._acks is None:
                self._acks = AckProducer(
                    self.settings.kafka_client_config(), self.settings.topic_status,
                    self.settings.topic_dlq, self.settings.service_deadline_s,
                )
            return self._acks

    @property
    def audit(self) -> AuditExporter:
        with self._lock:
            if self._audit is None:
                self._audit = AuditExporter(
                    self.settings.database_url, self.settings.audit_uri, self.settings.service_deadline_s,
                    entity_types=(t.name for t in self.registry),
                )
            return self._audit

    @property
    def after_commit(self) -> AfterCommit:
        with self._lock:
            if self._after_commit is None:
                self._after_commit = AfterCommit(self._follow_commit)
            return self._after_commit

    def _follow_commit(self, committed: Committed) -> None:
        """Runs on the after-commit thread, one committed batch at a time."""
        outcomes = committed.outcomes
        self.audit.export_committed(outcomes, committed.written)  # before the acks: an ack never precedes its audit row
        self.acks.send(outcomes)
        self.faults.hit("after_acks")
        self.stats.record(outcomes)
        # The audit connection belongs to this thread; the committer's to the dataflow's.
        self.metrics.record_batch(outcomes, committed.seconds, self.audit.connection, committed.committed_at)

    def next_batch_id(self) -> str:
        return f"{self.run_id}-{next(self._batch_numbers):07d}"

    def close(self) -> None:
        self.commits.shutdown(wait=True)
        if self._limiter is not None:
            self._limiter.close()
        if self._after_commit is not None:
            self._after_commit.close()  # committed batches are still exported and acknowledged
        if self._committer is not None:
            self._committer.close()
        if self._acks is not None:
            self._acks.flush()
        if self._audit is not None:
            self._audit.close()
