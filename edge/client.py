"""The edge-node client: make local changes, keep them in the outbox, send them,
and learn what the central job decided.

    node = EdgeNode(EdgeConfig(node_id="shop-01", outbox_path="shop-01.sqlite3",
                               kafka_config={"bootstrap.servers": "kafka:9092"}))
    node.update("customer", "C000042", {"credit_limit": "900.00"})   # durable now
    node.sync(deadline_s=30)       # send what the network allows, then read acks

Every change carries the base version this node last saw of the entity (0 if
never), learnt from acks and from `observe` (snapshots synced down from the ERP).
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.acks import AckListener
from edge.backoff import Backoff
from edge.outbox import AckReport, Outbox
from edge.records import EdgeMutation, Operation, OutboxEntry
from edge.sender import Sender, SendReport
from edge.transitions import FINAL


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
    node_key: bytes | None = field(default=None, repr=False)
    """This node's key (edge/signing.py): every message is signed with it. None: unsigned, which a
    job with a master key dead-letters as UNAUTHENTICATED."""


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
    ):
        self.config = config
        self._now = clock
        self.outbox = Outbox(config.outbox_path, config.node_id)
        self.sender = Sender(
            self.outbox, config.kafka_config, config.topic_mutations, config.backoff,
            config.delivery_timeout_s, config.round_limit, rng=rng, node_key=config.node_key,
        )
        self.acks = AckListener(self.outbox, config.kafka_config, config.topic_status)

    @property
    def node_id(self) -> str:
        return self.config.node_id

    def close(self) -> None:
        self.sender.close()
        self.acks.close()
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
        """Deliver the outbox (see `Sender.send`)."""
        return self.sender.send(deadline_s, pause_s)

    def receive_acks(self, timeout_s: float = 1.0) -> AckReport:
        return self.acks.poll(timeout_s)

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
