"""Per-process resources of a running job: the committer, the ack producer and
the run's counters. Built once, lazily, on the worker that needs them. The commit
path they serve reads in one place: sinks/commit_pipeline.py."""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

from dataflows.limiter import Limiter
from dataflows.shards import shard_name, shard_of
from mutagg.metrics import JobMetrics
from mutagg.settings import Settings
from operators.strategies import CUSTOM_STRATEGIES
from schemas.mutation import Rejection
from schemas.registry import Registry
from sinks.acks import AckProducer
from sinks.after_commit import AfterCommit, Committed
from sinks.audit import AuditExporter
from sinks.commit_pipeline import acknowledge, commit_thread
from sinks.faults import FaultInjector
from sinks.outcomes import Outcome
from sinks.postgres import PostgresCommitter
from sinks.prepare_ahead import prepare_ahead
from sinks.shard_tables import ShardTables, cluster_run
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


@dataclass(frozen=True)
class Place:
    """Where one apply step sequences and commits: the whole input on the job's committer
    (`name` None), or one shard of its partitions on the shard's own committer and thread."""

    name: str | None
    partitions: frozenset[PartitionKey]
    assignment: Mapping[str, frozenset[PartitionKey]]
    """Every shard's partitions (shards without any are left out); empty for the whole input."""
    committer: PostgresCommitter
    commits: ThreadPoolExecutor


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
        self.commits = commit_thread()
        self.metrics = JobMetrics(t.name for t in registry)
        self._batch_numbers = itertools.count(1)
        self._places: dict[str, Place] = {}
        self.cluster_run: int | None = None
        """With shards: this run's number in `shard_runs` (the first process sets it: `start_cluster_run`)."""
        # The apply steps (one per shard) that run on each worker thread: they end their input together.
        self.worker_steps: dict[int, list] = {}
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
                self._committer = self._build_committer(self.run_id)
            return self._committer

    def place(self, shard: int) -> Place:
        """Where the apply step of shard `shard` (dataflows/shards.py) commits; with one shard, the
        whole input on the job's committer."""
        shards = self.settings.shards
        if shards == 1:
            return Place(None, frozenset(self.input_partitions), {}, self.committer, self.commits)
        name = shard_name(shard, shards)
        with self._lock:
            found = self._places.get(name)
        if found is not None:
            return found
        assignment: dict[str, set[PartitionKey]] = {}
        for key in self.input_partitions:
            assignment.setdefault(shard_name(shard_of(key[1], shards), shards), set()).add(key)
        frozen = {n: frozenset(keys) for n, keys in assignment.items()}
        if self.cluster_run is None:  # another process of the cluster numbered it before the cluster formed
            self.cluster_run = cluster_run(self.settings.database_url, self.settings.service_deadline_s, start=False)
        with self._lock:
            if name not in self._places:
                self._places[name] = Place(
                    name, frozen.get(name, frozenset()), frozen, self._build_committer(f"{self.run_id}-{name}", name),
                    commit_thread(name),
                )
            return self._places[name]

    def start_cluster_run(self) -> None:
        """The first process of a cluster with shards numbers the run, before the cluster forms."""
        if self.settings.shards > 1:
            self.cluster_run = cluster_run(self.settings.database_url, self.settings.service_deadline_s, start=True)

    def _build_committer(self, run_id: str, shard: str | None = None) -> PostgresCommitter:
        settings = self.settings
        ahead = prepare_ahead(settings.prepare_ahead, settings.database_url, self.registry, CUSTOM_STRATEGIES,
                              self.metrics.count_prepared)
        return PostgresCommitter(
            settings.database_url, self.registry, CUSTOM_STRATEGIES, settings.service_deadline_s, self.faults,
            ahead, run_id=run_id, tables=None if shard is None else ShardTables(shard, run=self.cluster_run),
        )

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
                self._after_commit = AfterCommit(partial(acknowledge, self))  # the commit path's step 5
            return self._after_commit

    def recorded(self, committed: Committed) -> None:
        """Count a committed batch; on the after-commit thread (`acknowledge`)."""
        self.stats.record(committed.outcomes)
        # The audit connection belongs to this thread; the committer's to the dataflow's.
        self.metrics.record_batch(committed.outcomes, committed.seconds, self.audit.connection, committed.committed_at)

    def next_batch_id(self, shard: str | None = None) -> str:
        # A shard's name too: two processes of a cluster may share a run id (same second, same pid in their pods).
        prefix = self.run_id if shard is None else f"{self.run_id}-{shard}"
        return f"{prefix}-{next(self._batch_numbers):07d}"

    def close(self) -> None:
        self.commits.shutdown(wait=True)
        for place in self._places.values():
            place.commits.shutdown(wait=True)
            place.committer.close()
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
