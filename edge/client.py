"""The edge-node client: make local changes, keep them in the outbox, send them,
and learn what the central job decided.

    node = EdgeNode(EdgeConfig(node_id="shop-01", outbox_path="shop-01.sqlite3",
                               kafka_config={"bootstrap.servers": "kafka:9092"}))
    node.update("customer", "C000042", {"credit_limit": "900.00"})   # durable now
    node.sync(deadline_s=30)       # send what the network allows, then read acks
    node.central_view()            # normal / behind / overloaded / unknown, and central_delay_s

Every change carries the base version this node last saw of the entity (0 if
never), learnt from acks and from `observe` (snapshots synced down from the ERP).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.acks import AckListener
from edge.backoff import Backoff
from edge.central import CentralState, CentralView, Thresholds
from edge.central_listener import CentralListener
from edge.deferral import DEFAULT_SEND_FIRST, SendPolicy
from edge.erp import Outcome, OutcomeListener, outcome_of
from edge.outbox import AckReport, Outbox
from edge.records import EdgeMutation, Operation, OutboxEntry
from edge.sender import Sender, SendReport
from edge.transitions import FINAL
from schemas.routing import Routing


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    """Everything one edge node needs; built once by the caller (no environment reads here)."""

    node_id: str
    outbox_path: str | Path
    kafka_config: Mapping[str, Any]
    topic_mutations: str = "edge.mutations"
    topic_status: str = "edge.mutation-status"
    delivery_timeout_s: float = 30.0
    backoff: Backoff = field(default_factory=Backoff)
    max_message_bytes: int = 1 << 20
    round_limit: int = 5000
    tenant_id: str | None = None
    default_priority: int = 5
    # A DELIVERED entry unanswered this long, with the ack listener caught up, is sent again
    # (the job answers a copy from its ledger); the wait doubles per resend up to the maximum.
    requeue_after_s: float = 900.0
    requeue_max_s: float = 86_400.0
    node_key: bytes | None = field(default=None, repr=False)
    """This node's key (edge/signing.py): every message is signed with it. None: unsigned, which a
    job with a master key dead-letters as UNAUTHENTICATED."""
    # The job's state (edge/central.py, README "Edge nodes: when the centre is behind"). None: not read.
    topic_central_state: str | None = None
    behind_after_s: float = 60.0
    overloaded_after_s: float = 600.0
    central_silence_s: float = 60.0
    # entity type -> criticality (the registry's: `edge.criticality.load_criticality`); while the job is
    # overloaded, types in `send_first` go first and the rest wait up to `defer_max_s`. Empty: no deferral.
    criticality: Mapping[str, str] = field(default_factory=dict)
    send_first: frozenset[str] = DEFAULT_SEND_FIRST
    defer_max_s: float = 300.0
    # The priority lane (README "Priority lane"): types whose criticality is in `priority_lane` go to
    # `topic_critical` (None: `<topic_mutations>.critical`), the rest to `topic_mutations`.
    topic_critical: str | None = None
    priority_lane: str = ""  # opt-in, as in the job (README "Priority lane")

    @property
    def routing(self) -> Routing:
        lane = self.topic_critical or f"{self.topic_mutations}.critical"
        return Routing.of(self.topic_mutations, lane, self.criticality, self.priority_lane)


@dataclass(frozen=True, slots=True)
class SyncReport:
    sent: SendReport
    acks: AckReport


class EdgeNode:
    """One edge node: its outbox, its sender and its ack listener. Single-threaded."""

    def __init__(
        self,
        config: EdgeConfig,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
        on_outcome: OutcomeListener | None = None,
        defer_clock: Callable[[], float] | None = None,
    ):
        """`clock` stamps recorded changes; `defer_clock` (default: monotonic) bounds deferrals."""
        if not 0 < config.requeue_after_s <= config.requeue_max_s:
            raise ValueError("requeue_after_s must be > 0 and at most requeue_max_s")
        self.config = config
        self.on_outcome = on_outcome
        self._now = clock
        self.outbox = Outbox(config.outbox_path, config.node_id)
        self.sender = Sender(
            self.outbox, config.kafka_config, config.topic_mutations, config.backoff,
            config.delivery_timeout_s, config.round_limit, rng=rng, node_key=config.node_key,
            policy=SendPolicy(config.criticality, config.send_first, config.defer_max_s),
            routing=config.routing, defer_clock=defer_clock,
        )
        self.acks = AckListener(self.outbox, config.kafka_config, config.topic_status)
        self.central = None if not config.topic_central_state else CentralListener(
            config.kafka_config, config.topic_central_state, config.node_id,
            Thresholds(config.behind_after_s, config.overloaded_after_s, config.central_silence_s))

    @property
    def node_id(self) -> str:
        return self.config.node_id

    def close(self) -> None:
        self.sender.close()
        self.acks.close()
        if self.central is not None:
            self.central.close()
        self.outbox.close()

    def __enter__(self) -> EdgeNode:
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    # -- local changes -------------------------------------------------------------

    def new_mutation_id(self) -> str:
        return f"{self.node_id[:80]}-{uuid.uuid4().hex}"

    def change(
        self,
        operation: Operation,
        entity_type: str,
        entity_id: str,
        attributes: Mapping[str, Any] | None = None,
        *,
        priority: int | None = None,
        dependencies: Sequence[str] = (),
        mutation_id: str | None = None,
        timestamp: datetime | None = None,
    ) -> EdgeMutation:
        """Record one local change (durable when this returns) and return it."""
        base_version = 0 if operation is Operation.CREATE else self.outbox.known_version(entity_type, entity_id)
        mutation = EdgeMutation(
            id=mutation_id or self.new_mutation_id(),
            edge_node_id=self.node_id,
            entity_type=entity_type,
            entity_id=entity_id,
            operation=operation,
            attributes=dict(attributes or {}),
            base_version=base_version,
            timestamp=timestamp or self._now(),
            priority=self.config.default_priority if priority is None else priority,
            dependencies=tuple(dependencies),
            tenant_id=self.config.tenant_id,
        )
        self.record(mutation)
        return mutation

    def create(self, entity_type: str, entity_id: str, attributes: Mapping[str, Any], **options) -> EdgeMutation:
        return self.change(Operation.CREATE, entity_type, entity_id, attributes, **options)

    def update(self, entity_type: str, entity_id: str, attributes: Mapping[str, Any], **options) -> EdgeMutation:
        return self.change(Operation.UPDATE, entity_type, entity_id, attributes, **options)

    def delete(self, entity_type: str, entity_id: str, **options) -> EdgeMutation:
        return self.change(Operation.DELETE, entity_type, entity_id, {}, **options)

    def record(self, mutation: EdgeMutation) -> OutboxEntry:
        """Persist a mutation built elsewhere; nothing is sent before it is on disk."""
        return self.outbox.record(mutation, self.config.max_message_bytes)

    def observe(self, versions: Mapping[tuple[str, str], int]) -> None:
        """Learn entity versions from a snapshot synced down from the central ERP."""
        self.outbox.observe(versions)

    # -- network -------------------------------------------------------------------

    def send(self, deadline_s: float, pause_s: float = 0.0) -> SendReport:
        """Deliver the outbox (see `Sender.send`); while the job is overloaded, critical changes
        first and the rest deferred (edge/deferral.py)."""
        self.sender.defer = self.central_view().state is CentralState.OVERLOADED
        return self.sender.send(deadline_s, pause_s)

    def central_view(self, timeout_s: float = 0.1) -> CentralView:
        """The job's state as this node hears it now (reads what arrived within `timeout_s`)."""
        if self.central is None:
            return CentralView(CentralState.UNKNOWN)
        self.central.poll(timeout_s)
        return self.central.view()

    @property
    def central_delay_s(self) -> float | None:
        """How far behind the central job is, in seconds (None: unknown)."""
        return self.central_view().delay_s

    def deferred(self) -> int:
        """Entries the last send held back because the job is overloaded (still in the outbox)."""
        return self.sender.deferred

    def receive_acks(self, timeout_s: float = 1.0) -> AckReport:
        """Apply the acks that arrive within `timeout_s`; once caught up, put entries unanswered
        for too long back to be sent (`requeue_after_s`); pass new decisions to `on_outcome`."""
        report = self.acks.poll(timeout_s)
        if report.caught_up:
            overdue = self.outbox.requeue_overdue(self.config.requeue_after_s, self.config.requeue_max_s)
            if overdue:
                report = replace(report, requeued=report.requeued + overdue)
        self.report_outcomes()
        return report

    def report_outcomes(self) -> int:
        """Pass each decision a person must see, not passed before, to `on_outcome` (in record
        order); a listener that raises gets that one again next time. Returns how many it took."""
        if self.on_outcome is None:
            return 0
        reported: list[str] = []
        try:
            for entry in self.outbox.needing_attention(unreported_only=True):
                self.on_outcome(outcome_of(entry))
                reported.append(entry.mutation_id)
        finally:
            self.outbox.mark_reported(reported)
        return len(reported)

    def outcomes(self) -> list[Outcome]:
        """Every decision a person must see (REJECTED, CONFLICT, FAILED) still in the outbox,
        in record order; `outbox.dismiss` drops the ones the person has seen."""
        return [outcome_of(entry) for entry in self.outbox.needing_attention()]

    def sync(self, deadline_s: float, ack_timeout_s: float = 0.5) -> SyncReport:
        """Send what can be sent within `deadline_s`, then apply the acks that arrived."""
        return SyncReport(self.send(deadline_s), self.receive_acks(ack_timeout_s))

    def wait_until_decided(self, deadline_s: float, poll_s: float = 0.5) -> bool:
        """Read acks until no entry awaits a decision, or `deadline_s` passes."""
        give_up_at = time.monotonic() + deadline_s
        while True:
            if not self.undecided():
                return True
            if time.monotonic() >= give_up_at:
                return False
            self.receive_acks(min(poll_s, max(0.05, give_up_at - time.monotonic())))

    def undecided(self) -> int:
        """Entries still waiting for the job's decision (sent or not)."""
        return sum(n for state, n in self.outbox.counts().items() if state not in FINAL)
