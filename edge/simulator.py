"""A fleet of edge nodes on the real client: N nodes make ERP changes in rounds,
go offline for a few rounds (they keep recording; nothing is sent or received),
come back and deliver everything, and edit the same hot entities concurrently.

    python -m edge.simulator --nodes 6 --rounds 20 --work-dir /tmp/fleet

Kafka and topic names come from the job's settings (`MUTAGG_*`, `--config`); with
`MUTAGG_EDGE_MASTER_KEY_FILE` set, every node signs with its derived key. Run
the job alongside (`mutagg run`) to see acks flow back; `Simulation` also takes
a `between_rounds` callback (the integration tests run the job there).
"""

from __future__ import annotations

import argparse
import logging
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from edge.backoff import Backoff
from edge.client import EdgeConfig, EdgeNode
from edge.criticality import load_criticality
from edge.erp import Catalog, Change, NodeWorkload
from edge.records import EdgeMutation, EntryState, Operation
from edge.signing import derive_node_key

log = logging.getLogger(__name__)

NODE_KINDS = ("shop", "warehouse", "van")


@dataclass(frozen=True, slots=True)
class FleetPlan:
    """The shape of a simulated fleet; deterministic for `seed` (apart from network timing)."""

    nodes: int = 6
    rounds: int = 10
    changes_per_round: tuple[int, int] = (1, 6)
    offline_probability: float = 0.15      # chance an online node drops off in a round
    offline_rounds: tuple[int, int] = (1, 3)
    seed: int = 7
    send_deadline_s: float = 30.0


@dataclass
class FleetReport:
    recorded: dict[str, list[str]] = field(default_factory=dict)   # node -> mutation ids in record order
    offline_rounds: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)

    @property
    def all_ids(self) -> list[str]:
        return [mutation_id for ids in self.recorded.values() for mutation_id in ids]


def node_ids(count: int) -> list[str]:
    return [f"{NODE_KINDS[i % len(NODE_KINDS)]}-{i:02d}" for i in range(count)]


class Simulation:
    """Drives `plan.nodes` EdgeNodes, each with its own outbox under `work_dir`."""

    def __init__(
        self,
        plan: FleetPlan,
        kafka_config: Mapping[str, Any],
        topic_mutations: str,
        topic_status: str,
        work_dir: str | Path,
        run_tag: str | None = None,
        delivery_timeout_s: float = 10.0,
        master_key: bytes | None = None,
        node_options: Mapping[str, Any] | None = None,
    ):
        """With the job's `master_key`, each node signs with its own derived key (as if provisioned).
        `node_options`: more `EdgeConfig` fields for every node (e.g. the central-state topic,
        the criticality map)."""
        self.plan = plan
        self.rng = random.Random(plan.seed)
        self.run_tag = run_tag or f"sim{plan.seed}"
        self.catalog = Catalog()
        self.clock = datetime.now(UTC)
        self.report = FleetReport()
        self.nodes: dict[str, EdgeNode] = {}
        self.workloads: dict[str, NodeWorkload] = {}
        self.offline_until: dict[str, int] = {}
        self._unpublished: dict[str, list[Change]] = {}
        for node_id in node_ids(plan.nodes):
            self.nodes[node_id] = EdgeNode(EdgeConfig(
                node_id=node_id, outbox_path=Path(work_dir) / f"{node_id}.sqlite3", kafka_config=kafka_config,
                topic_mutations=topic_mutations, topic_status=topic_status,
                delivery_timeout_s=delivery_timeout_s, backoff=Backoff(0.2, 2.0, 5.0),
                node_key=None if master_key is None else derive_node_key(master_key, node_id),
                **(node_options or {}),
            ), clock=lambda: self.clock, rng=random.Random(f"{plan.seed}:{node_id}:net"))
            self.workloads[node_id] = NodeWorkload(node_id, plan.seed, self.run_tag)
            self.report.recorded[node_id] = []
            self._unpublished[node_id] = []

    def close(self) -> None:
        for node in self.nodes.values():
            node.close()

    def online(self, node_id: str, round_no: int) -> bool:
        return self.offline_until.get(node_id, -1) < round_no

    def step(self, round_no: int) -> None:
        """One round: connectivity changes, every node records changes, online nodes
        send and read acks, new entities become known to the fleet, versions sync down."""
        low, high = self.plan.offline_rounds
        for node_id in self.nodes:
            if self.online(node_id, round_no) and self.rng.random() < self.plan.offline_probability:
                self.offline_until[node_id] = round_no + self.rng.randint(low, high) - 1
        for node_id, node in self.nodes.items():
            self.clock += timedelta(seconds=self.rng.randint(1, 30))
            count = self.rng.randint(*self.plan.changes_per_round)
            for change in self.workloads[node_id].changes(self.catalog, count, self.clock):
                self._record(node, change)
        for node_id, node in self.nodes.items():
            if not self.online(node_id, round_no):
                self.report.offline_rounds[node_id] += 1
                continue
            node.send(self.plan.send_deadline_s)
            self._count(node.receive_acks(0.2).by_status)
            self._publish(node_id)
        self._sync_down(round_no)

    def _record(self, node: EdgeNode, change: Change) -> None:
        base = 0 if change.operation is Operation.CREATE else node.outbox.known_version(*change.entity_key)
        node.record(EdgeMutation(
            id=change.mutation_id, edge_node_id=node.node_id, entity_type=change.entity_type,
            entity_id=change.entity_id, operation=change.operation, attributes=change.attributes,
            base_version=base, timestamp=self.clock, priority=change.priority, dependencies=change.dependencies,
        ))
        self.report.recorded[node.node_id].append(change.mutation_id)
        if change.operation is not Operation.UPDATE:
            self._unpublished[node.node_id].append(change)

    def _publish(self, node_id: str) -> None:
        """Creates and deletes become known to the fleet once they are in Kafka, so
        another node's later edit of them lands after them in the entity's partition."""
        outbox = self.nodes[node_id].outbox
        waiting = []
        for change in self._unpublished[node_id]:
            entry = outbox.entry(change.mutation_id)
            if entry is not None and entry.state in (EntryState.PENDING, EntryState.IN_FLIGHT):
                waiting.append(change)
            elif change.operation is Operation.CREATE:
                self.catalog.add(change.entity_type, change.entity_id)
            else:
                self.catalog.deleted.add(change.entity_key)
        self._unpublished[node_id] = waiting

    def _sync_down(self, round_no: int) -> None:
        """The central ERP's snapshot reaches online nodes: versions any node learnt from acks."""
        online = [n for i, n in self.nodes.items() if self.online(i, round_no)]
        merged: dict[tuple[str, str], int] = {}
        for node in online:
            for key, version in node.outbox.known_versions().items():
                merged[key] = max(version, merged.get(key, 0))
        for node in online:
            node.observe(merged)

    def _count(self, by_status: Mapping[str, int]) -> None:
        self.report.statuses.update(by_status)

    def finish(self, deadline_s: float) -> bool:
        """Bring every node online and deliver everything; True if all outboxes are in Kafka
        (changes a node defers while the job is overloaded go within its `defer_max_s`)."""
        give_up_at = time.monotonic() + deadline_s
        self.offline_until.clear()
        for node in self.nodes.values():
            while True:
                report = node.send(max(0.1, give_up_at - time.monotonic()))
                if not report.drained or (report.deferred and time.monotonic() >= give_up_at):
                    return False
                if not report.deferred:
                    break
                time.sleep(0.2)  # deferred: waiting for the job's state or the deferral bound
        return True

    def collect_acks(self, deadline_s: float) -> bool:
        """Read acks until every node has a decision for everything, or the deadline."""
        give_up_at = time.monotonic() + deadline_s
        while True:
            waiting = [node for node in self.nodes.values() if node.undecided()]
            if not waiting:
                return True
            if time.monotonic() >= give_up_at:
                return False
            for node in waiting:
                self._count(node.receive_acks(0.2).by_status)

    def run(self, between_rounds: Callable[[int], None] | None = None) -> FleetReport:
        for round_no in range(self.plan.rounds):
            self.step(round_no)
            if between_rounds is not None:
                between_rounds(round_no)
        return self.report


def main(argv: list[str] | None = None) -> int:
    from mutagg.settings import load_settings  # the one place that reads the environment

    parser = argparse.ArgumentParser(prog="python -m edge.simulator", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="the job's YAML settings file (Kafka, topics)")
    parser.add_argument("--nodes", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--offline-probability", type=float, default=0.15)
    parser.add_argument("--work-dir", default="edge-fleet", help="directory for the nodes' outbox files")
    parser.add_argument("--ack-wait", type=float, default=0.0, help="seconds to wait for decisions at the end")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    settings = load_settings(args.config)
    plan = FleetPlan(nodes=args.nodes, rounds=args.rounds, seed=args.seed,
                     offline_probability=args.offline_probability)
    simulation = Simulation(plan, settings.kafka_client_config(), settings.topic_mutations, settings.topic_status,
                            args.work_dir, run_tag=f"sim{args.seed}-{int(time.time())}",
                            master_key=settings.edge_master_key(),
                            node_options={"topic_central_state": settings.topic_central_state,
                                          "criticality": load_criticality(settings.registry),
                                          "topic_critical": settings.lane_topic,
                                          "priority_lane": settings.priority_lane})
    try:
        report = simulation.run()
        delivered = simulation.finish(settings.service_deadline_s)
        decided = simulation.collect_acks(args.ack_wait) if args.ack_wait else False
    finally:
        simulation.close()
    print(f"{len(report.all_ids)} mutations recorded by {args.nodes} nodes over {args.rounds} rounds; "
          f"offline node-rounds: {sum(report.offline_rounds.values())}; delivered: {delivered}; "
          f"decided: {decided}; acks by status: {dict(report.statuses)}")
    return 0 if delivered else 1


if __name__ == "__main__":
    sys.exit(main())
