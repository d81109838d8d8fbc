"""The simulated ERP changes are valid for the example registry: every one the
fleet generator makes decodes on the job side. And the ERP hears what the job
rejected, held as a conflict, or failed, with the reason (`Outcome`)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edge.client import EdgeConfig, EdgeNode
from edge.erp import Catalog, NodeWorkload, Outcome, explain, fleet_messages, outcome_of
from edge.outbox import Outbox
from edge.records import Ack, EdgeMutation, Operation, encode
from edge.simulator import node_ids
from mutagg.settings import DEFAULT_REGISTRY
from operators.strategies import CUSTOM_STRATEGIES
from schemas.mutation import Mutation, RawMessage, decode
from schemas.registry import load_registry

REGISTRY = load_registry(str(DEFAULT_REGISTRY), custom_strategies=CUSTOM_STRATEGIES)
NOW = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)


def _fleet_changes(seed: int, nodes: int, rounds: int):
    catalog = Catalog()
    workloads = [NodeWorkload(node_id, seed) for node_id in node_ids(nodes)]
    for _ in range(rounds):
        for workload in workloads:
            changes = workload.changes(catalog, 4, NOW)
            for change in changes:
                yield workload.node_id, change
            for change in changes:  # this fleet shares what it creates at once
                if change.operation is Operation.CREATE:
                    catalog.add(change.entity_type, change.entity_id)
                elif change.operation is Operation.DELETE:
                    catalog.deleted.add(change.entity_key)


@settings(max_examples=25)
@given(st.integers(0, 10_000), st.integers(1, 6))
def test_every_generated_change_is_a_valid_mutation_for_the_registry(seed, nodes):
    for node_id, change in _fleet_changes(seed, nodes, rounds=6):
        mutation = EdgeMutation(
            id=change.mutation_id, edge_node_id=node_id, entity_type=change.entity_type,
            entity_id=change.entity_id, operation=change.operation, attributes=change.attributes,
            base_version=0 if change.operation is Operation.CREATE else 1, timestamp=NOW,
            priority=change.priority, dependencies=change.dependencies,
        )
        decoded = decode(RawMessage("t", 0, 0, mutation.kafka_key, encode(mutation), 0), REGISTRY)
        assert isinstance(decoded, Mutation), (change, decoded)


def test_a_fleet_makes_every_kind_of_change_and_meets_on_hot_entities():
    changes = [change for _, change in _fleet_changes(seed=7, nodes=6, rounds=30)]
    kinds = Counter((c.entity_type, c.operation) for c in changes)
    for entity_type in ("customer", "article", "stock_level", "sales_order", "order_line"):
        assert kinds[(entity_type, Operation.CREATE)] > 0
        assert kinds[(entity_type, Operation.UPDATE)] > 0
    assert sum(n for (_, op), n in kinds.items() if op is Operation.DELETE) > 0
    assert any(c.dependencies for c in changes if c.entity_type == "order_line")
    ids = [c.mutation_id for c in changes]
    assert len(ids) == len(set(ids))
    updates = Counter(c.entity_key for c in changes if c.operation is Operation.UPDATE)
    assert updates.most_common(1)[0][1] >= 10  # a hot entity


def test_the_stream_is_deterministic_for_a_seed():
    assert list(_fleet_changes(3, 3, 5)) == list(_fleet_changes(3, 3, 5))


def test_fleet_messages_are_valid_deterministic_and_go_stale_without_a_broker():
    messages = fleet_messages(600, nodes=6, seed=5)
    assert messages == fleet_messages(600, nodes=6, seed=5)
    assert len(messages) == 600
    current: dict[bytes, int] = {}
    stale = 0
    for key, value in messages:
        decoded = decode(RawMessage("t", 0, 0, key, value, 0), REGISTRY)
        assert isinstance(decoded, Mutation), decoded
        if decoded.operation.value != "CREATE":
            assert decoded.base_version <= current.get(key, 0)  # never from the future
            stale += decoded.base_version < current.get(key, 0)
        current[key] = current.get(key, 0) + 1
    assert stale > 0  # concurrent edits happen


def _decided_node(tmp_path, on_outcome) -> EdgeNode:
    """A node (no broker needed) whose job has answered four changes."""
    node = EdgeNode(EdgeConfig("van-07", tmp_path / "van-07.sqlite3", {"bootstrap.servers": "127.0.0.1:1"}),
                    clock=lambda: NOW, on_outcome=on_outcome)
    ids = [node.create("customer", "C1", {"name": "Kiosk"}).id,
           node.update("customer", "C2", {"balance": "9.99"}).id,
           node.update("customer", "C3", {"notes": "VIP"}).id,
           node.delete("article", "SKU-1").id]
    seqs = [e.seq for e in node.outbox.entries()]
    node.outbox.mark_sent(seqs)
    node.outbox.mark_delivered((seq, 0, n) for n, seq in enumerate(seqs))
    node.outbox.apply_acks([
        Ack(ids[0], "APPLIED", "customer", "C1", 1, None),
        Ack(ids[1], "REJECTED", "customer", "C2", None, "ENTITY_NOT_FOUND"),
        Ack(ids[2], "CONFLICT", "customer", "C3", None, None, ("C3:notes:1",)),
        Ack(ids[3], "FAILED", "article", "SKU-1", None, "DATABASE_ERROR"),
    ], "status", {0: 4})
    return node


def test_the_erp_hears_each_rejection_conflict_and_failure_once_with_its_reason(tmp_path):
    heard: list[Outcome] = []
    with _decided_node(tmp_path, heard.append) as node:
        assert node.report_outcomes() == 3
        assert node.report_outcomes() == 0  # once each
        assert [(o.status, o.reason, o.entity_id, o.operation) for o in heard] == [
            ("REJECTED", "ENTITY_NOT_FOUND", "C2", "UPDATE"),
            ("CONFLICT", None, "C3", "UPDATE"),
            ("FAILED", "DATABASE_ERROR", "SKU-1", "DELETE"),
        ]
        rejected, conflict, failed = heard
        assert rejected.attributes == {"balance": "9.99"} and rejected.made_at == NOW.isoformat()
        assert conflict.conflict_ids == ("C3:notes:1",)
        assert node.outcomes() == heard  # the same, read as a table
        assert "was rejected" in explain(rejected) and "ENTITY_NOT_FOUND" in explain(rejected)
        assert "C3:notes:1" in explain(conflict) and "held" in explain(conflict)
        assert "failed" in explain(failed) and "DATABASE_ERROR" in explain(failed)
        assert node.outbox.dismiss([rejected.mutation_id]) == 1  # the person has seen it
        assert [o.mutation_id for o in node.outcomes()] == [conflict.mutation_id, failed.mutation_id]


def test_a_listener_that_fails_hears_that_decision_again_and_none_twice(tmp_path):
    heard: list[str] = []

    def flaky(outcome: Outcome) -> None:
        if outcome.status == "CONFLICT" and "CONFLICT" not in heard:
            heard.append("CONFLICT")
            raise RuntimeError("ERP unavailable")
        heard.append(outcome.mutation_id)

    with _decided_node(tmp_path, flaky) as node:
        with pytest.raises(RuntimeError):
            node.report_outcomes()
        assert node.report_outcomes() == 2
        rejected, conflict, failed = (e.mutation_id for e in node.outbox.needing_attention())
        assert heard == [rejected, "CONFLICT", conflict, failed]


def test_only_decisions_a_person_must_see_become_outcomes(tmp_path):
    with Outbox(tmp_path / "shop-01.sqlite3", "shop-01") as outbox:
        entry = outbox.record(EdgeMutation("shop-01-1", "shop-01", "customer", "C1", Operation.UPDATE,
                                           {"name": "x"}, 1, NOW))
        with pytest.raises(ValueError, match="not a decision a person must see"):
            outcome_of(entry)
